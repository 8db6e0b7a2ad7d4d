"""Data sets (`DATASETS`, `load_dataset`) and the device-resident batch loader (`DeviceData`)."""
from .device import DeviceData, augment_batch, crop_flip, crop_pad
from .sources import (DATA_ENV, DATASETS, DataSplits, channel_stats, data_root, dataset_options,
                      load_dataset)

__all__ = ["DATASETS", "DATA_ENV", "DataSplits", "DeviceData", "augment_batch", "channel_stats",
           "crop_flip", "crop_pad", "data_root", "dataset_options", "load_dataset"]
