#!/usr/bin/env bash
# The GPU checks, run on the NVIDIA machine from the repository root with .carry/ and .gl/
# from scripts/gpu/pack.sh: the kernel tests through Vulkan and CUDA (the tensor-core tiles'
# first check against the reference: every dtype, flash, awkward shapes), then the attention
# benchmark in bf16 and TF32 through CUDA and f16 through Vulkan, sparse against Burn's dense
# attention and our own dense path, and the training benchmark through CUDA. Logs and JSON go to
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
# 90% sparsity, the targets' setting; bf16, f16 and tf32 (f32 inputs) run the tensor-core tiles.
bench=(--repeats 5 --dense-mem-gib 60 --sparsity 0.9 --head-dims 64,128)
step tests 150 sparse_attn_test cuda:: vulkan:: --test-threads 4
step attention_cuda_bf16 120 bench_attention --device cuda --dtype bf16 --seq 4096,16384,32768 \
    "${bench[@]}" --out "$out/attention_cuda_bf16.json"
step attention_cuda_tf32 90 bench_attention --device cuda --dtype tf32 --seq 4096,16384 \
    "${bench[@]}" --out "$out/attention_cuda_tf32.json"
step attention_vulkan_f16 70 bench_attention --device vulkan --dtype f16 --seq 4096,16384 \
    "${bench[@]}" --out "$out/attention_vulkan_f16.json"
step training_cuda 60 bench_training --device cuda --frames 8,16,32 --size 64 --steps 6 \
    --out "$out/training_cuda.json"
