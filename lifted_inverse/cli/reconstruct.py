"""``lifted-inverse reconstruct``: reconstruct images from measurements, either simulated from an
image (``--image``) or read from a file the user has (``--measurement``)
(:mod:`lifted_inverse.jobs.reconstruct`). Writes OUT/metrics.json (with ``config``: every option
after defaults and its source), OUT/reconstruction.png and OUT/result.h5. An option that does
not apply to the chosen operator, method or source is an error naming it."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..datasets._util import NORMALIZATIONS
from ..jobs._common import NOISE_TYPES
from ..jobs.reconstruct import (
    DEFAULT_ATTENUATION,
    DEFAULTS,
    GEOMETRIES,
    ITERATION_DEFAULTS,
    LAYOUTS,
    METHODS,
    OPERATORS,
    SCANNER_NAMES,
    WEIGHTINGS,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help="reconstruct images from measurements (simulated or a file)",
                              description=__doc__)
    p.add_argument("--operator", choices=OPERATORS, default=None, help=f"default {DEFAULTS['operator']}")
    p.add_argument("--method", choices=sorted(METHODS), default=None, help=f"default {DEFAULTS['method']}")
    p.add_argument("--image", default=None,
                   help="shepp_logan (default), ellipses, a scikit-image name (camera, ...) or an image file")
    p.add_argument("--measurement", type=Path, default=None,
                   help="reconstruct the measurements of this file: an HDF5 file of lifted-inverse data "
                        "(operator and noise from the file), deepinv-style (y_test, ...) or LoDoPaB-style "
                        "(data) HDF5, .npy, .npz or TIFF (one measurement or a stack)")
    p.add_argument("--key", default=None,
                   help="--measurement: the HDF5 dataset or .npz array (default: y, y_test, y_train, data)")
    p.add_argument("--index", type=int, default=None,
                   help="--measurement: reconstruct only sample I (default: every sample)")
    p.add_argument("--layout", default=None,
                   help=f"--measurement, ct: sinogram axes, one of {', '.join(LAYOUTS)} (default angles-detectors: this project, ASTRA; "
                        "skimage.transform.radon writes detectors-angles)")
    p.add_argument("--angles-file", type=Path, default=None,
                   help="--measurement, ct: the projection angles (text or .npy), with --angle-unit")
    p.add_argument("--angle-unit", default=None, help="the unit of --angles-file: deg or rad")
    p.add_argument("--detectors", type=int, default=None,
                   help="--measurement, ct: detector count (checked against the file)")
    p.add_argument("--ground-truth", type=Path, default=None,
                   help="--measurement: reference images (an image, array or HDF5 file) for PSNR / SSIM")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"--measurement: samples reconstructed together (default {DEFAULTS['batch_size']})")
    p.add_argument("--noise", type=float, default=None,
                   help="Gaussian noise level: relative to rms(Ax) for ct (default 0.01), "
                        "absolute for images in [0, 1] otherwise (default 0.1); with --measurement the "
                        "level the data has (default: from a lifted-inverse data file, else unknown)")
    p.add_argument("--noise-type", choices=NOISE_TYPES, default=None,
                   help="auto (default): relative for ct, absolute otherwise")
    p.add_argument("--out", type=Path, default=None, help="output directory (required)")
    p.add_argument("--size", type=int, default=None,
                   help="resize the image to SIZE x SIZE (default: no resizing; phantoms are 128 wide)")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default=None,
                   help="values of an image file: none (default: as stored, e.g. Hounsfield units), dtype "
                        "(an 8/16-bit range onto [0, 1]), minmax (the image's range onto [0, 1]); tv keeps "
                        "x >= 0 only for images without negative values")
    p.add_argument("--alpha", type=float, default=None,
                   help="tikhonov, tv: regularisation weight (default: the noise-level rule of "
                        "lifted_inverse.reconstruction.default_alpha)")
    p.add_argument("--iterations", type=int, default=None,
                   help="tikhonov, tv: iteration cap (default "
                        f"{ITERATION_DEFAULTS['tikhonov']['iterations']}, {ITERATION_DEFAULTS['tv']['iterations']})")
    p.add_argument("--tol", type=float, default=None,
                   help="tikhonov: relative residual (default "
                        f"{ITERATION_DEFAULTS['tikhonov']['tol']}); tv: relative primal-dual gap (default "
                        f"{ITERATION_DEFAULTS['tv']['tol']})")
    p.add_argument("--seed", type=int, default=None, help="noise (and ellipses phantom) seed, default 0")
    p.add_argument("--angles", type=int, default=None,
                   help=f"ct: number of angles (default {DEFAULTS['angles']}, or the --scanner's count; with "
                        "--measurement the sinograms' count, checked)")
    p.add_argument("--geometry", choices=GEOMETRIES, default=None,
                   help="ct: parallel (default: angles over [0, pi)) or fan beam (a flat detector, "
                        "angles over [0, 2 pi), source and detector at twice the image width); with "
                        "--measurement the sinograms' geometry (fan: --size required)")
    p.add_argument("--scanner", choices=SCANNER_NAMES, default=None,
                   help="ct: a scanner preset instead of --geometry (lidc: LION's LIDC-IDRI fan beam, "
                        "360 angles, 900 bins; --angles overrides its count; the field of view is kept "
                        "at any --size; with --measurement the sinograms' scanner, --size required)")
    p.add_argument("--photons", type=float, default=None,
                   help="ct: transmission Poisson noise with I0 incident photons per detector bin, "
                        "instead of --noise (pre-log counts and post-log data in result.h5; tv then "
                        "weights its data term, see --weighting)")
    p.add_argument("--dose", default=None,
                   help="ct: a dose level of --scanner instead of --photons (lidc: full 1e4, low 3500, "
                        "extremely_low 1000 photons)")
    p.add_argument("--attenuation", type=float, default=None,
                   help=f"--photons/--dose: attenuation per length unit of an image value of 1 (default "
                        f"{DEFAULT_ATTENUATION}: values relative to water, lengths in mm or pixels)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default=None,
                   help="tv on transmission data: pwls (default: weights n_i / mean(n) from the counts) "
                        "or none (unweighted least squares)")
    p.add_argument("--filter", default=None, help="fbp: filter ramp (default), shepp-logan, hann")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="unrolled: network checkpoint written by lifted-inverse train")
    p.add_argument("--device", default=None, help="run the reconstruction on this device (e.g. cuda)")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None,
                   help="no progress bar (tikhonov, tv; over the samples with --measurement)")
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
    what = m["measurement"]["path"] if "measurement" in m else m["image"]
    quality = f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, " if "psnr" in m else ""
    if "psnr" not in m and "psnr_gt_range" in m:  # a reference outside [0, 1]: its own range
        quality = f"PSNR {m['psnr_gt_range']:.2f} dB, SSIM {m['ssim_gt_range']:.4f} (range max - min), "
    print(f"{m['method']} on {m['operator']}/{what} ({m['n_samples']} sample(s)): {quality}"
          f"{m['seconds']:.2f} s -> {args.out}")
    return 0
