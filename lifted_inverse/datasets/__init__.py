"""Datasets (nothing downloaded at run time): phantoms, scikit-image images and patches, image
folders, MNIST-format IDX files and HDF5 measurement files. Images are float32 (C, H, W) in [0, 1].
"""
from .folder import ImageFolder, load_image
from .hdf5 import MeasurementDataset, describe, describe_noise, make_measurements, write_arrays
from .images import (
    BUILTIN_IMAGES, DEFAULT_TEST_IMAGES, NATURAL_IMAGES, ImageList, PatchDataset, builtin_image,
    list_builtin_images, split_images,
)
from .mnist import MnistIdx, read_idx, write_idx
from .phantoms import EllipseDataset, ellipse_phantom, random_ellipses, shepp_logan

__all__ = [
    "shepp_logan", "random_ellipses", "ellipse_phantom", "EllipseDataset",
    "builtin_image", "list_builtin_images", "split_images", "PatchDataset", "ImageList",
    "BUILTIN_IMAGES", "NATURAL_IMAGES", "DEFAULT_TEST_IMAGES",
    "ImageFolder", "load_image", "read_idx", "write_idx", "MnistIdx",
    "make_measurements", "MeasurementDataset", "describe", "describe_noise", "write_arrays",
]
