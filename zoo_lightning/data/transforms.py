"""Batched image transforms that run on the device, after the uint8 batch arrives there.

Every module works on a whole (N, C, H, W) batch at once (random offsets and flips are drawn per
image, applied with indexing, never with a Python loop over images) and runs under no_grad.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_lightning.options import NonNegativeInt, PaddingMode

__all__ = ["Normalize", "RandomCrop", "RandomHorizontalFlip", "Resize", "AlternatingFlip", "Cutout"]


class Normalize(nn.Module):
    """uint8 images -> float32 ``(x / 255 - mean) / std``; ``inverse`` undoes it (for image grids)."""

    # Buffers, registered in __init__ (declared here: nn.Module's attribute lookup is typed Tensor | Module).
    mean: Tensor
    std: Tensor
    scale: Tensor
    shift: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        # (x / 255 - mean) / std == x * scale - shift: two in-place passes over the float batch.
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", self.mean / std_t, persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        # A fresh float32 copy even for float input, so the in-place ops never touch the caller's tensor.
        return images.to(torch.float32, copy=True).mul_(self.scale).sub_(self.shift)

    @torch.no_grad()
    def inverse(self, images: Tensor) -> Tensor:
        """Normalized float images back to [0, 1]."""
        return (images * self.std + self.mean).clamp(0.0, 1.0)


class RandomCrop(nn.Module):
    """Pads every side by ``padding`` and crops back to the input size at a random offset per image.

    ``padding_mode`` "zeros" fills the border with black; "reflect" mirrors the image into it, so a
    shifted image has no black edge (airbench's translate).
    """

    def __init__(self, padding: NonNegativeInt, padding_mode: PaddingMode = "zeros") -> None:
        super().__init__()
        self.padding, self.padding_mode = padding, padding_mode

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self.padding == 0:
            return images
        n, c, h, w = images.shape
        p, device = self.padding, images.device
        mode = {"zeros": "constant", "reflect": "reflect"}[self.padding_mode]  # PaddingMode's words in F.pad's
        padded = F.pad(images, (p, p, p, p), mode=mode)  # N x C x (H + 2p) x (W + 2p)
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=device)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=device)
        # One gather over each padded image's flattened pixels: output (i, j) reads (dy + i, dx + j).
        # (Several times faster on CPU than advanced indexing with four broadcast index tensors.)
        rows = dy + torch.arange(h, device=device).view(1, h, 1)
        cols = dx + torch.arange(w, device=device).view(1, 1, w)
        index = (rows * (w + 2 * p) + cols).view(n, 1, h * w).expand(n, c, h * w)
        return padded.flatten(2).gather(2, index).view(n, c, h, w)


class RandomHorizontalFlip(nn.Module):
    """Mirrors each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        n, c, h, w = images.shape
        flip = torch.rand(n, 1, device=images.device) < self.p
        columns = torch.arange(w, device=images.device)
        # Each image reads its columns forwards or backwards: one gather, no flipped copy of the batch.
        index = torch.where(flip, columns.flip(0), columns).view(n, 1, 1, w).expand(n, c, h, w)
        return images.gather(3, index)


class Resize(nn.Module):
    """Bilinear (antialiased when shrinking) resize of float images to ``size`` x ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] == (self.size, self.size):
            return images
        shrink = images.shape[-1] > self.size
        return F.interpolate(
            images, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=shrink
        )


class AlternatingFlip(nn.Module):
    """Each image mirrored or not at random in even epochs, and the other way in odd ones.

    The choice is a hash of the image's own pixels and ``seed``, so it needs no index and is the same
    every epoch: over two epochs every image is seen once each way (airbench's alternating flip),
    where independent flips would show some images the same way twice.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def chosen(self, images: Tensor) -> Tensor:
        """(N,) bool: whether each image is mirrored in even epochs."""
        flat = images.flatten(1).to(torch.int64)
        weights = torch.arange(1, flat.shape[1] + 1, device=images.device) % 251 + 1
        key = (flat * weights).sum(1) * 2654435761 + self.seed * 40503
        return (key >> 11) % 2 == 1

    @torch.no_grad()
    def forward(self, images: Tensor, epoch: int) -> Tensor:
        flip = self.chosen(images) ^ (epoch % 2 == 1)
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


class Cutout(nn.Module):
    """Fills one ``size`` x ``size`` square per image, at a random centre, with ``fill`` (per channel).

    The fill is the dataset's mean colour, which normalization turns into zeros (DeVries & Taylor, 2017).
    """

    fill: Tensor  # a buffer, registered in __init__

    def __init__(self, size: NonNegativeInt, fill: Sequence[int] = (0, 0, 0)) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("fill", torch.tensor(list(fill), dtype=torch.uint8).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        n, c, h, w = images.shape
        device = images.device
        cy = torch.randint(0, h, (n, 1, 1), device=device)
        cx = torch.randint(0, w, (n, 1, 1), device=device)
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        half = self.size // 2
        inside = ((rows - cy).abs() <= half - (1 - self.size % 2) * (rows >= cy)) & (
            (cols - cx).abs() <= half - (1 - self.size % 2) * (cols >= cx)
        )
        return torch.where(inside.unsqueeze(1), self.fill.to(device), images)
