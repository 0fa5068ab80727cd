"""The images that ship inside scikit-image (no download), whole or as random patches.

Only images stored in the scikit-image wheel are listed; those that ``skimage.data`` fetches with
``pooch`` (brain, eagle, kidney, ...) are left out because nothing may download at run time.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ._util import parse_size, to_chw_tensor

#: Built-in image name -> ``skimage.data`` loader name (all load offline).
BUILTIN_IMAGES: dict[str, str] = {
    name: name
    for name in (
        "astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock",
        "coffee", "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
        "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina", "rocket",
        "shepp_logan_phantom", "text",
    )
}

#: Photographs / natural textures, suitable for training denoisers (synthetic images excluded).
NATURAL_IMAGES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page",
    "retina", "rocket", "text",
)

#: Whole images held out for testing by default (never cut into training patches).
DEFAULT_TEST_IMAGES: tuple[str, ...] = ("camera", "coins", "moon")


def list_builtin_images() -> list[str]:
    """Sorted names accepted by :func:`builtin_image`."""
    return sorted(BUILTIN_IMAGES)


def builtin_image(name: str, size: int | Sequence[int] | None = None, gray: bool = True) -> torch.Tensor:
    """A scikit-image sample image as float32 (C, H, W) in [0, 1].

    ``C = 1`` if ``gray`` (luma of colour images) else 3; ``size`` (int or (H, W)) resizes with
    anti-aliasing. Unknown ``name`` raises ``ValueError`` listing the valid names.
    """
    import skimage.data

    key = str(name).lower().replace("-", "_")
    if key == "shepp_logan":
        key = "shepp_logan_phantom"
    if key not in BUILTIN_IMAGES:
        raise ValueError(
            f"image: unknown built-in image {name!r}; valid names: {', '.join(list_builtin_images())}"
        )
    array = getattr(skimage.data, BUILTIN_IMAGES[key])()
    return to_chw_tensor(array, parse_size(size), gray=gray)


def split_images(
    names: Sequence[str] = NATURAL_IMAGES, test_names: Sequence[str] = DEFAULT_TEST_IMAGES
) -> tuple[list[str], list[str]]:
    """Split image names into ``(train, test)`` by whole image: ``test`` is ``test_names`` (order
    kept), ``train`` every other name of ``names``. Each test name must be in ``names``."""
    names = list(dict.fromkeys(names))
    missing = [t for t in test_names if t not in names]
    if missing:
        raise ValueError(f"test_names: {missing} are not among names {names}")
    test = list(dict.fromkeys(test_names))
    train = [n for n in names if n not in test]
    if not train:
        raise ValueError("test_names: leaves no image for training")
    return train, test


class ImageList(Dataset):
    """A fixed list of (C, H, W) tensors (or built-in image names) as a ``Dataset``."""

    def __init__(self, images: Sequence[torch.Tensor | str], size: int | Sequence[int] | None = None,
                 gray: bool = True):
        self.images = _load_images(images, size, gray)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def _load_images(images, size, gray) -> list[torch.Tensor]:
    if isinstance(images, (str, torch.Tensor)):
        images = [images]
    out = []
    for i, im in enumerate(images):
        if isinstance(im, str):
            out.append(builtin_image(im, size, gray))
        elif isinstance(im, torch.Tensor):
            if im.ndim != 3:
                raise ValueError(f"images[{i}]: expected a (C, H, W) tensor, got shape {tuple(im.shape)}")
            out.append(im)
        else:
            raise TypeError(f"images[{i}]: expected a tensor or an image name, got {type(im).__name__}")
    if not out:
        raise ValueError("images: expected at least one image")
    channels = {im.shape[0] for im in out}
    if len(channels) != 1:
        raise ValueError(f"images: all images need the same number of channels, got {sorted(channels)}")
    return out


class PatchDataset(Dataset):
    """``n_patches`` random ``patch_size`` crops of ``images`` (tensors (C, H, W) or built-in names).

    The crop positions are drawn once from ``numpy.random.default_rng(seed)``: image uniformly at
    random, then a uniform top-left corner, so the dataset is reproducible. Split train/test by
    whole image first (:func:`split_images`), then build one ``PatchDataset`` per side.
    """

    def __init__(self, images: Sequence[torch.Tensor | str], patch_size: int | Sequence[int],
                 n_patches: int, seed: int = 0, image_size: int | Sequence[int] | None = None,
                 gray: bool = True):
        self.images = _load_images(images, image_size, gray)
        ph, pw = parse_size(patch_size, "patch_size")
        if n_patches < 1:
            raise ValueError(f"n_patches: expected >= 1, got {n_patches}")
        small = [i for i, im in enumerate(self.images) if im.shape[1] < ph or im.shape[2] < pw]
        if small:
            raise ValueError(
                f"patch_size: {(ph, pw)} is larger than images {small} "
                f"(shapes {[tuple(self.images[i].shape) for i in small]})"
            )
        self.patch_size = (ph, pw)
        rng = np.random.default_rng(int(seed))
        which = rng.integers(0, len(self.images), size=n_patches)
        tops = np.array([rng.integers(0, self.images[k].shape[1] - ph + 1) for k in which])
        lefts = np.array([rng.integers(0, self.images[k].shape[2] - pw + 1) for k in which])
        self.index = np.stack([which, tops, lefts], axis=1)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> torch.Tensor:
        k, top, left = (int(v) for v in self.index[index])
        ph, pw = self.patch_size
        return self.images[k][:, top:top + ph, left:left + pw].clone()
