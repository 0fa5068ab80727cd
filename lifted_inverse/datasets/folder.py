"""A folder of image files (PNG / JPEG / TIFF / BMP), e.g. a local BSDS copy."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ._util import parse_size, to_chw_tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_image(path: str | os.PathLike, size: int | Sequence[int] | None = None,
               gray: bool = True, normalize: str = "dtype") -> torch.Tensor:
    """Read one image file as float32 (C, H, W) (``C`` = 1 if ``gray`` else 3), its values by
    ``normalize`` (:func:`~._util.normalize_values`: ``"dtype"`` puts 8/16-bit images in [0, 1],
    ``"none"`` keeps the stored values, ``"minmax"`` maps the image's range onto [0, 1]; nothing
    is clipped). ``size`` (int or (H, W)) resizes; without it the image keeps its shape."""
    from skimage.io import imread

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image: no such file {str(path)!r}")
    try:
        array = imread(path)
    except Exception as err:  # imageio/PIL raise many types for unreadable files
        raise ValueError(f"image: cannot read {str(path)!r} as an image ({err})") from err
    return to_chw_tensor(array, parse_size(size), gray=gray, normalize=normalize,
                         name=f"image: {str(path)!r}")


class ImageFolder(Dataset):
    """All image files directly inside ``path`` (sorted by name), each as (C, H, W) in [0, 1].

    ``size`` resizes every image (needed to batch images of different shapes); ``recursive``
    also walks sub-folders. Missing folder -> ``FileNotFoundError``; no images -> ``ValueError``.
    """

    def __init__(self, path: str | os.PathLike, size: int | Sequence[int] | None = None,
                 gray: bool = True, recursive: bool = False):
        self.root = Path(path)
        if not self.root.is_dir():
            raise FileNotFoundError(f"folder: no such directory {str(self.root)!r}")
        pattern = "**/*" if recursive else "*"
        self.files = sorted(p for p in self.root.glob(pattern)
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"folder: no {'/'.join(IMAGE_SUFFIXES)} files in {str(self.root)!r}")
        self.size, self.gray = parse_size(size), bool(gray)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.files[index], self.size, self.gray)
