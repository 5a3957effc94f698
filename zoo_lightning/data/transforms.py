"""Batched image transforms that run on the device, after the uint8 batch arrives there.

Every module works on a whole (N, C, H, W) batch at once (random offsets and flips are drawn per
image, applied with indexing, never with a Python loop over images) and runs under no_grad.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_lightning.options import NonNegativeInt, PaddingMode

__all__ = [
    "Normalize",
    "RandomCrop",
    "CenterCrop",
    "RandomResizedCrop",
    "RandomHorizontalFlip",
    "Resize",
    "AlternatingFlip",
    "Cutout",
]


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
    """Pads every side by ``padding`` and crops a ``size`` x ``size`` window (None: the input size) at a random
    offset per image.

    ``padding_mode`` "zeros" fills the border with black; "reflect" mirrors the image into it, so a
    shifted image has no black edge (airbench's translate). Images stored larger than ``size`` (a margin
    around the view) are translated within their own pixels, with no padding at all.
    """

    def __init__(self, padding: NonNegativeInt, padding_mode: PaddingMode = "zeros", size: int | None = None) -> None:
        super().__init__()
        self.padding, self.padding_mode, self.size = padding, padding_mode, size

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        n, c, h, w = images.shape
        out_h, out_w = (h, w) if self.size is None else (self.size, self.size)
        if self.padding == 0 and (out_h, out_w) == (h, w):
            return images
        p, device = self.padding, images.device
        mode = {"zeros": "constant", "reflect": "reflect"}[self.padding_mode]  # PaddingMode's words in F.pad's
        padded = F.pad(images, (p, p, p, p), mode=mode) if p else images  # N x C x (H + 2p) x (W + 2p)
        dy = torch.randint(0, h + 2 * p - out_h + 1, (n, 1, 1), device=device)
        dx = torch.randint(0, w + 2 * p - out_w + 1, (n, 1, 1), device=device)
        # One gather over each padded image's flattened pixels: output (i, j) reads (dy + i, dx + j).
        # (Several times faster on CPU than advanced indexing with four broadcast index tensors.)
        rows = dy + torch.arange(out_h, device=device).view(1, out_h, 1)
        cols = dx + torch.arange(out_w, device=device).view(1, 1, out_w)
        index = (rows * (w + 2 * p) + cols).view(n, 1, out_h * out_w).expand(n, c, out_h * out_w)
        return padded.flatten(2).gather(2, index).view(n, c, out_h, out_w)


class CenterCrop(nn.Module):
    """The central ``size`` x ``size`` window of every image (what evaluation sees of an image stored with a margin)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return images[..., top : top + self.size, left : left + self.size]


class RandomResizedCrop(nn.Module):
    """torchvision's ``RandomResizedCrop`` for a whole batch: per image a box of a random share ``scale`` of the area
    and a random aspect ratio ``ratio`` (drawn log-uniformly), resized to ``size`` x ``size``.

    The boxes are drawn as torchvision draws them (ten tries per image, then the whole image cut to the nearest
    allowed ratio), all images at once; the resize is one :func:`torchvision.ops.roi_align` over the batch, which
    averages the pixels a box shrinks (antialiased) and interpolates bilinearly where it enlarges.
    """

    TRIES = 10

    def __init__(
        self, size: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
    ) -> None:
        super().__init__()
        self.size, self.scale, self.ratio = size, (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))

    def boxes(self, n: int, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """(n, 4) int64 boxes ``(top, left, box_height, box_width)`` drawn from the current RNG."""
        area = height * width
        tries = (n, self.TRIES)
        low, high = self.scale
        target = area * (low + (high - low) * torch.rand(tries, device=device, dtype=torch.float64))
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(tries, device=device, dtype=torch.float64))
        box_w = torch.sqrt(target * aspect).round().long()
        box_h = torch.sqrt(target / aspect).round().long()
        fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
        first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits (0 where none does)
        box_h, box_w = box_h.gather(1, first).squeeze(1), box_w.gather(1, first).squeeze(1)
        # No try fits: the whole image, cut to the nearest allowed aspect ratio, in its centre (torchvision's fallback).
        image_ratio = width / height
        if image_ratio < self.ratio[0]:
            whole_w, whole_h = width, int(round(width / self.ratio[0]))
        elif image_ratio > self.ratio[1]:
            whole_w, whole_h = int(round(height * self.ratio[1])), height
        else:
            whole_w, whole_h = width, height
        none_fits = ~fits.any(dim=1)
        box_h = torch.where(none_fits, whole_h, box_h)
        box_w = torch.where(none_fits, whole_w, box_w)
        top = (torch.rand(n, device=device, dtype=torch.float64) * (height - box_h + 1)).long()
        left = (torch.rand(n, device=device, dtype=torch.float64) * (width - box_w + 1)).long()
        top = torch.where(none_fits, (height - box_h) // 2, top)
        left = torch.where(none_fits, (width - box_w) // 2, left)
        return torch.stack([top, left, box_h, box_w], dim=1)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        from torchvision.ops import roi_align

        n, _, height, width = images.shape
        top, left, box_h, box_w = self.boxes(n, height, width, images.device).unbind(1)
        # roi_align's boxes are (image index, x1, y1, x2, y2) in pixel edges; aligned=True puts pixel i's centre at
        # i + 0.5, so a box over the whole image at its own size is the image itself.
        rois = torch.stack([torch.arange(n, device=images.device), left, top, left + box_w, top + box_h], dim=1)
        dtype = torch.float32 if images.dtype == torch.uint8 else images.dtype
        out = roi_align(images.to(dtype), rois.to(dtype), self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return out.round_().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else out

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}"


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
