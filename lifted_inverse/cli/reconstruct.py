"""``lifted-inverse reconstruct``: simulate a measurement of one image and reconstruct it
(:mod:`lifted_inverse.jobs.reconstruct`). Writes OUT/metrics.json (with ``config``: every option
after defaults and its source), OUT/reconstruction.png and OUT/result.h5. An option that does
not apply to the chosen operator and method is an error naming it."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..jobs._common import NOISE_TYPES
from ..jobs.reconstruct import DEFAULTS, METHODS, OPERATORS


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help="simulate a measurement of an image and reconstruct it",
                              description=__doc__)
    p.add_argument("--operator", choices=OPERATORS, default=None, help=f"default {DEFAULTS['operator']}")
    p.add_argument("--method", choices=sorted(METHODS), default=None, help=f"default {DEFAULTS['method']}")
    p.add_argument("--image", default=None,
                   help="shepp_logan (default), ellipses, a scikit-image name (camera, ...) or an image file")
    p.add_argument("--noise", type=float, default=None,
                   help="Gaussian noise level: relative to rms(Ax) for ct (default 0.01), "
                        "absolute for images in [0, 1] otherwise (default 0.1)")
    p.add_argument("--noise-type", choices=NOISE_TYPES, default=None,
                   help="auto (default): relative for ct, absolute otherwise")
    p.add_argument("--out", type=Path, default=None, help="output directory (required)")
    p.add_argument("--size", type=int, default=None, help=f"image side length (default {DEFAULTS['size']})")
    p.add_argument("--alpha", type=float, default=None,
                   help="tikhonov, tv: regularisation weight (default: the noise-level rule of "
                        "lifted_inverse.reconstruction.default_alpha)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"tikhonov, tv: maximum iterations (default {DEFAULTS['iterations']})")
    p.add_argument("--tol", type=float, default=None,
                   help=f"tikhonov, tv: stopping tolerance (default {DEFAULTS['tol']})")
    p.add_argument("--seed", type=int, default=None, help="noise (and ellipses phantom) seed, default 0")
    p.add_argument("--angles", type=int, default=None,
                   help=f"ct: number of angles in [0, pi) (default {DEFAULTS['angles']})")
    p.add_argument("--filter", default=None, help="fbp: filter ramp (default), shepp-logan, hann")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="unrolled: network checkpoint written by lifted-inverse train")
    p.add_argument("--device", default=None, help="run the reconstruction on this device (e.g. cuda)")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None,
                   help="tikhonov, tv: no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="check the options, print the resolved config as JSON and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.reconstruct import ReconstructOptions, plan_reconstruction, run_reconstruction

    options = ReconstructOptions(**{f.name: getattr(args, f.name) for f in fields(ReconstructOptions)})
    if args.dry_run:
        print(json.dumps(plan_reconstruction(options), indent=2))
        return 0
    if args.out is None:
        raise ValueError("out: an output folder is required")
    m = run_reconstruction(options, args.out)
    print(f"{m['method']} on {m['operator']}/{m['image']}: PSNR {m['psnr']:.2f} dB, "
          f"SSIM {m['ssim']:.4f}, {m['seconds']:.2f} s -> {args.out}")
    return 0
