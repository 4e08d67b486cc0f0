#!/usr/bin/env bash
# The paper's Fashion-MNIST column (configs/paper_scratch.yaml: the paper's head on InceptionV3 and
# ResNet50, from scratch) trained by train_small.py on Keras's JAX backend on one GPU, several runs
# sharing the GPU as separate processes, each killed after SECONDS and resumed (inside the run, from
# its last finished epoch) when the same command is given again. Records accumulate in OUT/runs.jsonl.
#
#   bash benchmarks/gpu_paper_fmnist.sh SECONDS POLICY MODEL:LOSS [MODEL:LOSS ...]
#   bash benchmarks/gpu_paper_fmnist.sh 500 mixed_bfloat16 resnet50:ce resnet50:ngl
#
# Environment: RESULTS (default benchmarks/results/paper-fmnist), RUNS (runs per slice, default 1),
# NGL_FASHION_MNIST_DIR (the IDX files), PYTHON (default python3). JAX may not preallocate: processes share the GPU's memory.
set -u
seconds=$1 policy=$2
shift 2
out=${RESULTS:-benchmarks/results/paper-fmnist}
mkdir -p "$out/logs"
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
for slice in "$@"; do
    model=${slice%%:*} loss=${slice##*:}
    timeout -s KILL "$seconds" "${PYTHON:-python3}" train_small.py --config configs/paper_scratch.yaml \
        --datasets fashion_mnist --models "$model" --losses "$loss" --runs "${RUNS:-1}" \
        --mixed-precision "$policy" --out "$out" >> "$out/logs/$model-$loss-$policy.log" 2>&1 &
done
wait
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
