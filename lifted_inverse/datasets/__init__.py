"""Datasets (nothing downloaded at run time): phantoms, scikit-image images and patches, image
folders, MNIST-format IDX files and HDF5 measurement files (this project's ``data`` layout and
deepinv's; read lazily, checksummed). Images are float32 (C, H, W) in [0, 1].
"""
from .folder import ImageFolder, load_image
from .hdf5 import (
    MeasurementDataset,
    describe,
    describe_noise,
    file_layout,
    make_measurements,
    write_arrays,
)
from .images import (
    BUILTIN_IMAGES,
    DEFAULT_TEST_IMAGES,
    NATURAL_IMAGES,
    ImageList,
    PatchDataset,
    builtin_image,
    list_builtin_images,
    split_images,
)
from .mnist import MnistIdx, read_idx, write_idx
from .phantoms import EllipseDataset, ellipse_phantom, random_ellipses, shepp_logan

__all__ = [
    "BUILTIN_IMAGES",
    "DEFAULT_TEST_IMAGES",
    "NATURAL_IMAGES",
    "EllipseDataset",
    "ImageFolder",
    "ImageList",
    "MeasurementDataset",
    "MnistIdx",
    "PatchDataset",
    "builtin_image",
    "describe",
    "describe_noise",
    "ellipse_phantom",
    "file_layout",
    "list_builtin_images",
    "load_image",
    "make_measurements",
    "random_ellipses",
    "read_idx",
    "shepp_logan",
    "split_images",
    "write_arrays",
    "write_idx",
]
