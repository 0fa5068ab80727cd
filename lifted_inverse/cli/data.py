"""``lifted-inverse data``: write an HDF5 file of (ground truth, noisy measurement) pairs."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from torch.utils.data import Dataset

DATASETS = ("ellipses", "shepp-logan", "builtin", "folder", "patches")
OPERATORS = ("denoise", "blur", "ct", "inpaint", "mri")


def build_dataset(args: argparse.Namespace) -> Dataset:
    """The dataset named by ``--dataset`` with ``--n`` items of ``--size`` pixels."""
    from ..datasets import (
        NATURAL_IMAGES,
        EllipseDataset,
        ImageFolder,
        ImageList,
        PatchDataset,
        shepp_logan,
    )

    if args.n < 1:
        raise ValueError(f"--n: expected >= 1, got {args.n}")
    if args.size < 8:
        raise ValueError(f"--size: expected >= 8, got {args.size}")
    names = [s for s in args.images.split(",") if s] if args.images else list(NATURAL_IMAGES)
    if args.dataset == "ellipses":
        return EllipseDataset(args.n, args.size, args.seed)
    if args.dataset == "shepp-logan":
        return ImageList([shepp_logan(args.size)] * args.n)
    if args.dataset == "builtin":
        return ImageList(names[:args.n], size=args.size)
    if args.dataset == "folder":
        if args.folder is None:
            raise ValueError("--folder: required with --dataset folder")
        return ImageFolder(args.folder, size=args.size)
    # patches: --size is the patch size, cut from images resized to --image-size (if given)
    return PatchDataset(names, args.size, args.n, seed=args.seed, image_size=args.image_size)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="make an HDF5 file of (ground truth, measurement) pairs",
        description="Apply an operator and Gaussian noise to a dataset and store x, y and "
        "provenance attributes (operator, noise, seed, time, version) in an HDF5 file.")
    p.add_argument("--dataset", choices=DATASETS, default="ellipses")
    p.add_argument("--operator", choices=OPERATORS, default="ct")
    p.add_argument("--noise", type=float, default=None,
                   help="Gaussian noise level: relative to rms(Ax) for ct (default 0.01), "
                        "absolute otherwise (default 0.1)")
    p.add_argument("--noise-type", choices=("auto", "absolute", "relative"), default="auto")
    p.add_argument("--n", type=int, default=16, help="number of samples (ellipses, shepp-logan, "
                   "patches; the first n images for builtin)")
    p.add_argument("--size", type=int, default=128, help="image (or patch) side length")
    p.add_argument("--image-size", type=int, default=None, help="patches: resize images first")
    p.add_argument("--images", default=None, help="comma-separated built-in image names")
    p.add_argument("--folder", type=Path, default=None, help="image folder for --dataset folder")
    p.add_argument("--angles", type=int, default=60, help="CT: number of angles")
    p.add_argument("--seed", type=int, default=0, help="phantom / patch / noise seed")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", required=True, type=Path, help="output .h5 file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..datasets import make_measurements
    from ..operators.noise import GaussianNoise
    from ..operators.registry import make_operator

    relative = args.noise_type == "relative" or (args.noise_type == "auto" and args.operator == "ct")
    level = args.noise if args.noise is not None else (0.01 if relative else 0.1)
    if not (math.isfinite(level) and level >= 0):
        raise ValueError(f"--noise: expected a finite level >= 0, got {level}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {args.batch_size}")
    dataset = build_dataset(args)
    first = dataset[0]
    shape = tuple(first.shape)
    options = {"n_angles": args.angles} if args.operator == "ct" else {}
    operator = make_operator(args.operator, shape, **options)
    noise = GaussianNoise(level, relative=relative, seed=args.seed)
    path = make_measurements(dataset, operator, noise, args.out, batch_size=args.batch_size,
                             seed=args.seed, attrs={"dataset_args": {
                                 "dataset": args.dataset, "n": len(dataset), "size": args.size,
                                 "images": args.images, "folder": str(args.folder) if args.folder else None}})
    print(f"wrote {len(dataset)} pairs ({args.dataset}, {args.operator}, noise {level}"
          f"{' relative' if relative else ''}) -> {path}")
    return 0
