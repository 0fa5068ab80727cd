"""``lifted-inverse data``: write an HDF5 file of (ground truth, noisy measurement) pairs
(:mod:`lifted_inverse.jobs.data`). The file's ``config`` attribute holds every option after
defaults and its source; an option that does not apply to the chosen dataset or operator is an
error naming it."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..jobs._common import NOISE_TYPES
from ..jobs.data import DATASETS, DEFAULTS, LAYOUTS, OPERATORS
from ..jobs.reconstruct import DEFAULT_ATTENUATION, GEOMETRIES, SCANNER_NAMES


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="make an HDF5 file of (ground truth, measurement) pairs",
                              description=__doc__)
    p.add_argument("--dataset", choices=DATASETS, default=None, help=f"default {DEFAULTS['dataset']}")
    p.add_argument("--operator", choices=OPERATORS, default=None, help=f"default {DEFAULTS['operator']}")
    p.add_argument("--noise", type=float, default=None,
                   help="Gaussian noise level: relative to rms(Ax) for ct (default 0.01), "
                        "absolute otherwise (default 0.1)")
    p.add_argument("--noise-type", choices=NOISE_TYPES, default=None,
                   help="auto (default): relative for ct, absolute otherwise")
    p.add_argument("--n", type=int, default=None, help="number of samples (default 16; builtin: the "
                   "first n images, folder: the first n files, default all)")
    p.add_argument("--size", type=int, default=None,
                   help=f"image (or patch) side length (default {DEFAULTS['size']})")
    p.add_argument("--image-size", type=int, default=None, help="patches: resize images to this first")
    p.add_argument("--images", default=None, help="builtin, patches: comma-separated built-in image names")
    p.add_argument("--folder", type=Path, default=None, help="folder: the image folder")
    p.add_argument("--angles", type=int, default=None, help=f"ct: number of angles (default {DEFAULTS['angles']})")
    p.add_argument("--geometry", choices=GEOMETRIES, default=None,
                   help="ct: parallel (default) or fan beam (flat detector, angles over [0, 2 pi))")
    p.add_argument("--scanner", choices=SCANNER_NAMES, default=None,
                   help="ct: a scanner preset instead of --geometry (lidc: LION's LIDC-IDRI fan beam, 360 "
                        "angles, 900 bins; --angles overrides its count)")
    p.add_argument("--photons", type=float, default=None,
                   help="ct: transmission Poisson noise with I0 photons per detector bin instead of --noise: "
                        "y holds the post-log line integrals, counts the pre-log counts")
    p.add_argument("--dose", default=None, help="ct: a dose level of --scanner instead of --photons "
                                                "(lidc: full, low, extremely_low)")
    p.add_argument("--attenuation", type=float, default=None,
                   help=f"--photons/--dose: attenuation per length unit of an image value of 1 (default "
                        f"{DEFAULT_ATTENUATION})")
    p.add_argument("--seed", type=int, default=None, help="phantom / patch / noise seed (default 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per operator call (default {DEFAULTS['batch_size']})")
    p.add_argument("--device", default=None, help="apply the operator on this device (default cpu)")
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="datasets of the file: data (default): x, y; deepinv: x_train, y_train, "
                   "x_test, y_test (the last --test-fraction of the pairs)")
    p.add_argument("--test-fraction", type=float, default=None,
                   help=f"deepinv: fraction of the pairs in the test split (default "
                   f"{DEFAULTS['test_fraction']}; 0: none)")
    p.add_argument("--out", type=Path, default=None, help="output .h5 file (required)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the options, print the resolved config as JSON and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.data import DataOptions, make_data, plan_data
    from ..runtime import show_progress

    options = DataOptions(**{f.name: getattr(args, f.name) for f in fields(DataOptions)})
    if args.dry_run:
        print(json.dumps(plan_data(options), indent=2))
        return 0
    if args.out is None:
        raise ValueError("out: an output file is required")
    made = make_data(options, args.out, progress=show_progress(args.progress))
    split = f", {made['n'] - made['n_test']} train / {made['n_test']} test" if made["layout"] == "deepinv" else ""
    noise = (f"{made['photons']:g} photons" if made.get("photons") is not None else
             f"noise {made['noise']}{' relative' if made['noise_relative'] else ''}")
    print(f"wrote {made['n']} pairs ({made['dataset']}, {made['operator']}, {noise}{split}) -> {made['path']}")
    return 0
