#!/usr/bin/env bash
# One short, prepared device check (about 6-8 minutes on one GPU), run from the repository root
# (the package importable: installed, or PYTHONPATH=$PWD):
#   1. the CUDA-only tests (operators, batched layers, PNN step forms, imaging training and
#      reconstruction on CUDA against the CPU);
#   2. the layer-parallel sweep against the per-layer loop on the GPU (bench_parallel (a));
#   3. a two-epoch lifted digits-mlp run with --device cuda;
#   4. lifted Bregman vs Adam backprop at equal wall-clock on the GPU (bench_unrolled, short
#      budgets: PNN_BUDGET / CT_BUDGET seconds per method);
#   5. the nccl paths: one epoch of a small PNN under torchrun with --distributed (lifted BCD,
#      DDP backprop) and --layer-parallel, on 2 ranks when 2 GPUs are visible (nccl allows one
#      rank per GPU), else on 1 rank (the process group, collectives and DDP on CUDA; no
#      point-to-point traffic).
# Each step is time-limited and a failing step does not stop the next. Outputs go to $OUT (the
# device tool's folder) or /tmp/gpu_check.
set -uo pipefail
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
py="$(command -v python || command -v python3)"
export PYTHONUNBUFFERED=1
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
timeout 240 "$py" -m pytest -q -p no:odl_plugins -rs -k "cuda" tests/test_operators.py tests/test_batched_layers.py \
    tests/test_pnn.py tests/test_imaging_training.py tests/test_cli_reconstruct.py 2>&1 | tee "$out/pytest_cuda.txt"
timeout 150 "$py" benchmarks/bench_parallel.py --layers-only --device cuda 2>&1 | tee "$out/bench_parallel_cuda.txt"
timeout 60 "$py" -m lifted_inverse train --task digits-mlp --method bregman --solver bcd --epochs 2 \
    --device cuda --out /tmp/digits_cuda 2>&1 | tail -n 3 | tee "$out/train_cuda.txt"
cp /tmp/digits_cuda/metrics.json "$out/train_cuda_metrics.json" 2>/dev/null
timeout $((2 * ${PNN_BUDGET:-60} + 90)) "$py" benchmarks/bench_unrolled.py --task pnn-denoise --device cuda \
    --budget "${PNN_BUDGET:-60}" --runs backprop/adam,bregman/adam --json "$out/unrolled_pnn_cuda.json" 2>&1 \
    | tee "$out/unrolled_cuda.txt"
timeout $((2 * ${CT_BUDGET:-40} + 90)) "$py" benchmarks/bench_unrolled.py --task unrolled-ct --device cuda \
    --batch-size 8 --budget "${CT_BUDGET:-40}" --runs backprop/adam,bregman/adam --json "$out/unrolled_ct_cuda.json" 2>&1 \
    | tee -a "$out/unrolled_cuda.txt"
nproc=$("$py" -c "import torch; print(min(2, torch.cuda.device_count()))")
for mode in "--distributed --method bregman --solver bcd" "--distributed --method backprop" \
            "--layer-parallel --method bregman --solver bcd"; do
    name="nccl_$(echo "$mode" | tr -dc 'a-z' | cut -c1-24)"
    rm -rf "/tmp/$name"
    # shellcheck disable=SC2086  # $mode is a list of flags
    timeout 120 "$py" -m torch.distributed.run --nproc-per-node "$nproc" -m lifted_inverse train $mode \
        --task pnn-denoise --n-train 64 --features 8 --layers 6 --batch-size 16 --epochs 1 --device cuda \
        --out "/tmp/$name" 2>&1 | tail -n 2 | tee "$out/$name.txt"
done
