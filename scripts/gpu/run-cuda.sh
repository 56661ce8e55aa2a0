#!/usr/bin/env bash
# Runs one binary packed by scripts/gpu/pack-cuda.sh on an NVIDIA machine through CUDA:
#   scripts/gpu/run-cuda.sh bench_attention --device cuda ...
#   scripts/gpu/run-cuda.sh sparse_attn_test cuda:: --test-threads 1
# Kernels compile through NVRTC: libnvrtc must be found (CUDA toolkit, or CUDA_PATH).
set -uo pipefail
cd "$(dirname "$0")/../.."
name=$1; shift
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ldconfig -p | grep -E 'libcuda\.so|libnvrtc' || echo "run-cuda.sh: libcuda/libnvrtc not in the linker cache"
xz -dc ".carry/cuda_$name.xz" > "/tmp/cuda_$name" && chmod +x "/tmp/cuda_$name"
LD_PRELOAD="$PWD/.carry/libllvm_stub.so${LD_PRELOAD:+:$LD_PRELOAD}" "/tmp/cuda_$name" "$@"
