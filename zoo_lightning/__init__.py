"""zoo_lightning: train and compare classic image-classification CNNs with PyTorch Lightning."""

__version__ = "0.1.0"
