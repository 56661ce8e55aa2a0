#!/usr/bin/env bash
# The GPU checks, run on the NVIDIA machine from the repository root with .carry/ and .gl/
# from scripts/gpu/pack.sh: the kernel tests through Vulkan and CUDA, then the attention
# benchmark through each and the training benchmark through CUDA. Logs and JSON go to
# DIR (default out/gpu); each step has its own time limit, so one stuck step costs only its own.
#   scripts/gpu/check.sh [DIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-out/gpu}
mkdir -p "$out"
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name ($limit s): $*"
    local start=$SECONDS
    timeout "$limit" scripts/gpu/run.sh "$@" > "$out/$name.log" 2>&1
    echo "rc=$? after $((SECONDS - start)) s" | tee -a "$out/$name.log"
    tail -n 45 "$out/$name.log"
}
bench=(--repeats 5 --dense-mem-gib 60 --seq 1024,4096,16384 --head-dims 64,128)
step tests 130 sparse_attn_test cuda:: vulkan:: --test-threads 4
step attention_cuda 120 bench_attention --device cuda "${bench[@]}" --out "$out/attention_cuda.json"
step attention_vulkan 110 bench_attention --device vulkan "${bench[@]}" --out "$out/attention_vulkan.json"
step training_cuda 60 bench_training --device cuda --frames 8,16,32 --size 64 --steps 6 \
    --out "$out/training_cuda.json"
