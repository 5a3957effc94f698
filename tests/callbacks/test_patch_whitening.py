"""PatchWhitening: whitened patch features on the images it was fitted on; frozen weights; a bias that stops."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from tests.helpers import set_up
from zoo_lightning.callbacks import PatchWhitening
from zoo_lightning.callbacks.patch_whitening import patches, whitening_weights
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.data import CIFAR10DataModule

SMALL = {"widths": (8, 16, 16)}


def test_the_filters_whiten_the_patches_they_were_fitted_on():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(200, 3, 12, 12, generator=g)
    images[:, 1] += 0.8 * images[:, 0]  # correlated channels
    images[:, :, :, 1:] += 0.5 * images[:, :, :, :-1].clone()  # and neighbouring pixels
    weights = whitening_weights(images, 2, eps=1e-9)
    assert weights.shape == (24, 3, 2, 2)
    torch.testing.assert_close(weights[12:], -weights[:12])
    features = patches(images, 2).double() @ weights[:12].flatten(1).double().T
    covariance = torch.cov(features.T)
    torch.testing.assert_close(covariance, torch.eye(12, dtype=torch.float64), atol=1e-5, rtol=0)


def test_weights_stay_frozen_and_the_bias_stops_after_its_epochs(cifar_python, tmp_path):
    root, _ = cifar_python
    data = CIFAR10DataModule(data_dir=str(root), val_size=20, batch_size=16, download=False)
    model = ImageClassifier("airbench94", num_classes=10, backbone_kwargs=SMALL)
    biases, weights = [], []

    class Watch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            biases.append(pl_module.backbone.whiten.bias.detach().clone())
            weights.append(pl_module.backbone.whiten.weight.detach().clone())

    trainer = L.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PatchWhitening(images=50, freeze_bias_after=2), Watch()],
    )
    trainer.fit(model, datamodule=data)
    fitted = whitening_weights(set_up(CIFAR10DataModule, root, val_size=20, download=False).training_images(50), 2)
    assert all(torch.equal(w, weights[0]) for w in weights)  # never trained
    torch.testing.assert_close(weights[0], fitted)  # and set from the training images
    assert not torch.equal(biases[0], biases[1])  # epochs 0 and 1 train the bias ...
    assert torch.equal(biases[1], biases[2]) and torch.equal(biases[2], biases[3])  # ... from epoch 2 it is frozen
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(model.backbone.whiten.weight) not in optimized


def test_a_first_layer_of_the_wrong_width_is_a_clear_error():
    with pytest.raises(ValueError, match="fills the first conv with 54 filters .2 x 3 x 3 x 3., but it has 32"):
        PatchWhitening.first_conv(ImageClassifier("cnn", num_classes=10))
