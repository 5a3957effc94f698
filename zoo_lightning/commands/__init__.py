"""The commands beside LightningCLI's: each a module with ``main(argv)``, listed by ``python -m zoo_lightning``."""
