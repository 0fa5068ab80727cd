"""``lifted-inverse invert``: recover a network's input from its output
(:mod:`lifted_inverse.jobs.invert`): lifted Bregman inversion against proximal gradient descent
and Adam with the same wall-clock budget. The model: a built-in one, a checkpoint of this
project, a torch.export archive (.pt2) or package.module:factory with --weights. The output to
invert: simulated from a ground-truth --image with relative --noise, or the user's own --target
file (no ground truth). Writes OUT/result.h5 (the recovered inputs as data), OUT/metrics.json
(with ``config``: every option after defaults and its source) and OUT/inversion.png. An option
that does not apply to the chosen model is an error naming it.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields

from ..jobs.invert import DEFAULTS, REGULARIZERS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "invert", help="invert a pretrained network from noisy outputs (lifted Bregman vs gradient)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="perceptron | encoder | resnet | PATH of a checkpoint (written by lifted-inverse "
                        "train or lifted_inverse.networks.save_checkpoint) | PATH of a torch.export "
                        "archive (torch.export.save; read without unpickling) | package.module:factory "
                        "(with --weights)")
    p.add_argument("--weights", default=None,
                   help="package.module:factory models: their weights, a .safetensors file (needs the "
                        "safetensors package) or a torch state dict (read with weights_only=True)")
    p.add_argument("--target", default=None,
                   help="the network output to invert, f^δ: .npy, .pt (a tensor, weights_only) or HDF5 "
                        "(dataset 'target' or the only one); one output or a batch; no ground truth "
                        "(--noise then estimates δ = noise·‖f^δ‖/√2)")
    p.add_argument("--noise", type=float, default=None,
                   help=f"relative noise level ε: B_Ψ(f^δ, z†) = δ², δ = ε‖N(u†)‖/√2 (default {DEFAULTS['noise']})")
    p.add_argument("--alpha", default=None,
                   help="regularisation parameter, or 'discrepancy' (Morozov, τ=1.5); default: α = c·δ")
    p.add_argument("--regularizer", choices=REGULARIZERS, default=None, help="default tv")
    p.add_argument("--image", default=None,
                   help="ground truth: a built-in image name, shepp_logan, or digit[:K] (held-out digit K); "
                        "default per model")
    p.add_argument("--size", type=int, default=None,
                   help="image side (perceptron: input is size×size); default per model")
    p.add_argument("--outputs", type=int, default=None, help="perceptron: output dimension (default 512)")
    p.add_argument("--iterations", type=int, default=None,
                   help="lifted iterations (deep: sweeps; default per model); the baselines get the "
                        "same wall-clock time")
    p.add_argument("--seed", type=int, default=None, help="seed of the model weights and of the noise (default 0)")
    p.add_argument("--device", default=None, help="default cpu")
    p.add_argument("--cache-dir", default=None, help="encoder, resnet: keep the trained weights here")
    p.add_argument("--progress", action="store_const", const=True, default=None,
                   help="show tqdm progress bars")
    p.add_argument("--out", default=None, help="output directory (required)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the options, print the resolved config as JSON and exit (the built-in "
                        "encoder and resnet are not trained)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..jobs.invert import InvertOptions, plan_inversion, run_inversion

    options = InvertOptions(**{f.name: getattr(args, f.name) for f in fields(InvertOptions)})
    if args.dry_run:
        print(json.dumps(plan_inversion(options), indent=2))
        return 0
    if args.out is None:
        raise ValueError("out: an output folder is required")
    m = run_inversion(options, args.out)
    if "psnr" in m:
        print(f"lifted PSNR {m['psnr']:.2f} dB ({m['seconds']:.2f}s) | gradient descent {m['baseline_psnr']:.2f} "
              f"dB ({m['baseline_seconds']:.2f}s) | Adam {m['adam_psnr']:.2f} dB ({m['adam_seconds']:.2f}s) "
              f"-> {args.out}")
    else:
        print(f"relative residual |N(u) - f|/|f|: lifted {m['residual']:.4f} ({m['seconds']:.2f}s) | gradient "
              f"descent {m['baseline_residual']:.4f} | Adam {m['adam_residual']:.4f} -> {args.out}/result.h5")
    return 0
