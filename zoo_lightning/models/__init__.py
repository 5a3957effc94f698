"""The model zoo. Importing this package registers every family."""

# Each import registers a family's builders.
from zoo_lightning.models import (  # noqa: F401,E402
    airbench,
    alexnet,
    cnn,
    densenet,
    efficientnet,
    googlenet,
    mobilenet,
    preact_resnet,
    resnet,
    vgg,
)
from zoo_lightning.models.registry import (
    ModelEntry,
    UnknownModelError,
    create_model,
    list_models,
    model_entry,
    register_model,
)

__all__ = ["ModelEntry", "UnknownModelError", "create_model", "list_models", "model_entry", "register_model"]
