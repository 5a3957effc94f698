"""The names under which runs log their scalars: written by the module and callbacks, read by ``report``."""

from __future__ import annotations

__all__ = [
    "TRAIN",
    "VAL",
    "TEST",
    "TOP1",
    "LOSS",
    "IMAGES",
    "TTA_SHARE",
    "IMAGES_PER_SEC",
    "BEST_VAL_TOP1",
    "TEACHER_TOP1",
    "EPOCH",
    "tag",
    "class_prefix",
    "class_tag",
]

TRAIN, VAL, TEST = "train", "val", "test"
TOP1, LOSS = "top1", "loss"
IMAGES = "images"  # test/images: how many images a test scored (a part of the set under limit_test_batches)
TTA_SHARE = "tta_share"  # test/tta_share: the share of images that took the test-time views (--model.tta_confidence)
EPOCH = "epoch"  # Lightning logs the 0-based epoch beside every epoch-level scalar


def tag(stage: str, name: str) -> str:
    """``tag("val", "top1") == "val/top1"``."""
    return f"{stage}/{name}"


def class_prefix(stage: str) -> str:
    """Per-class accuracy scalars are ``<stage>_class/<class name>``."""
    return f"{stage}_class/"


def class_tag(stage: str, class_name: str) -> str:
    return class_prefix(stage) + class_name


IMAGES_PER_SEC = tag(TRAIN, "images_per_sec")
BEST_VAL_TOP1 = "hp/best_val_top1"
TEACHER_TOP1 = "teacher_top1"  # logged per evaluation stage by the distillation objective
