"""DataModules: CIFAR-10, STL-10 and your own image folders as uint8 arrays in memory, normalized and
augmented on the device."""

from zoo_lightning.data.base import ImageDataModule
from zoo_lightning.data.cifar10 import CIFAR10DataModule
from zoo_lightning.data.image_folder import FolderDataModule
from zoo_lightning.data.pipeline import DevicePipeline
from zoo_lightning.data.randaugment import RandAugmentPipeline
from zoo_lightning.data.stl10 import STL10DataModule

__all__ = [
    "ImageDataModule",
    "CIFAR10DataModule",
    "STL10DataModule",
    "FolderDataModule",
    "DevicePipeline",
    "RandAugmentPipeline",
]
