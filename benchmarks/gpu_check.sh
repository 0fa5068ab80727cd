#!/usr/bin/env bash
# One short, prepared device check (about 3-6 minutes on one GPU; run from the repository root
# with the project installed): the CUDA-only tests, the layer-parallel sweep against the
# per-layer loop on the GPU, and a two-epoch lifted training run with --device cuda.
# Outputs go to $OUT (the device tool's folder) or /tmp/gpu_check.
set -euo pipefail
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python -m pytest -q -p no:odl_plugins -rs -k "cuda" tests 2>&1 | tee "$out/pytest_cuda.txt"
python benchmarks/bench_parallel.py --layers-only --device cuda 2>&1 | tee "$out/bench_parallel_cuda.txt"
python -m lifted_inverse train --task digits-mlp --method bregman --solver bcd --epochs 2 \
    --device cuda --out "$out/digits_cuda" 2>&1 | tail -n 3 | tee "$out/train_cuda.txt"
