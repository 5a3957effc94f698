"""PatchWhitening: the first convolution set to whiten the image patches it sees, then frozen.

Airbench's initialization ("94% on CIFAR-10 in 3.29 Seconds on a Single GPU", Jordan 2024): the
first layer's filters are the eigenvectors of the covariance of k x k patches of training images,
each scaled by 1/sqrt(eigenvalue + eps), together with their negatives; its output is a whitened
view of every patch. The weights stay frozen; the bias trains for the first epochs, then freezes.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from zoo_lightning.data.base import image_datamodule
from zoo_lightning.options import NonNegativeInt, PositiveFloat, PositiveInt

__all__ = ["PatchWhitening", "whitening_weights", "patch_covariance", "patches"]


def patches(images: Tensor, kernel_size: int) -> Tensor:
    """Every k x k patch of ``images`` as a row of C*k*k values, in the order of a conv filter's weights."""
    c = images.shape[1]
    unfolded = images.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # N, C, H', W', k, k
    return unfolded.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel_size * kernel_size)


def patch_covariance(images: Tensor, kernel_size: int, chunk: int = 500) -> Tensor:
    """The float64 covariance of the k x k patches of ``images``, a chunk of images at a time."""
    size = images.shape[1] * kernel_size * kernel_size
    total = images.new_zeros(size, dtype=torch.float64)
    outer = images.new_zeros((size, size), dtype=torch.float64)
    count = 0
    for start in range(0, len(images), chunk):
        rows = patches(images[start : start + chunk], kernel_size).double()
        total, outer, count = total + rows.sum(0), outer + rows.T @ rows, count + len(rows)
    mean = total / count
    return (outer - count * torch.outer(mean, mean)) / (count - 1)


def whitening_weights(images: Tensor, kernel_size: int, eps: float = 5e-4) -> Tensor:
    """(2 x C*k*k, C, k, k) filters that whiten the k x k patches of ``images``, their negatives after them."""
    c = images.shape[1]
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_covariance(images, kernel_size))
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps).unsqueeze(1)).flip(0)  # the largest first
    filters = filters.reshape(-1, c, kernel_size, kernel_size)
    return torch.cat([filters, -filters]).float()


class PatchWhitening(L.Callback):
    """Sets the backbone's first conv to whiten patches of the training data before training starts.

    The images come from the DataModule's public ``training_images(count, seed)``: the callback
    needs no knowledge of the dataset, and works for any backbone whose first ``nn.Conv2d`` has
    ``2 x in_channels x k x k`` filters (airbench's 2x2 conv to 24 channels, for one).

    Args:
        images: training images the covariance is taken over.
        eps: added to every eigenvalue before its inverse square root.
        freeze_bias_after: epochs the conv's bias trains before it freezes too.
        seed: which images are drawn.
    """

    def __init__(
        self,
        images: PositiveInt = 5000,
        eps: PositiveFloat = 5e-4,
        freeze_bias_after: NonNegativeInt = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.images, self.eps, self.freeze_bias_after, self.seed = images, eps, freeze_bias_after, seed

    @staticmethod
    def first_conv(pl_module: L.LightningModule) -> nn.Conv2d:
        conv = next((m for m in pl_module.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise ValueError("PatchWhitening needs a backbone with a Conv2d; this one has none.")
        k = conv.kernel_size
        wanted = 2 * conv.in_channels * k[0] * k[1]
        if k[0] != k[1] or conv.groups != 1 or conv.out_channels != wanted:
            raise ValueError(
                f"PatchWhitening fills the first conv with {wanted} filters (2 x {conv.in_channels} x "
                f"{k[0]} x {k[1]}), but it has {conv.out_channels} (kernel {k}); use a backbone whose "
                "first layer is a square patch conv of that width, such as airbench94."
            )
        return conv

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before configure_optimizers (and before a resume restores the trained weights over these).
        if stage != "fit":
            return
        conv = self.first_conv(pl_module)
        images = image_datamodule(trainer, "PatchWhitening").training_images(self.images, self.seed)
        with torch.no_grad():
            conv.weight.copy_(whitening_weights(images, conv.kernel_size[0], self.eps))
        conv.weight.requires_grad_(False)
        rank_zero_info(
            f"Patch whitening: the first conv's {conv.out_channels} filters set from the "
            f"{conv.kernel_size[0]}x{conv.kernel_size[1]} patches of {len(images)} training images."
        )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        conv = self.first_conv(pl_module)
        if trainer.current_epoch >= self.freeze_bias_after and conv.bias is not None:
            conv.bias.requires_grad_(False)
