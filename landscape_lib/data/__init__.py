"""Data sets (`DATASETS`, `load_dataset`) and the device-resident batch loader (`DeviceData`)."""
from . import builtin, folder, torchvision_sets  # noqa: F401  (each registers its sources)
from .base import DATASETS, DataSplits, channel_stats, dataset_options, load_dataset
from .device import DeviceData, augment_batch, crop_flip, crop_pad

__all__ = ["DATASETS", "DataSplits", "DeviceData", "augment_batch", "channel_stats",
           "crop_flip", "crop_pad", "dataset_options", "load_dataset"]
