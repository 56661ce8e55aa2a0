#!/usr/bin/env bash
# Runs one binary packed by scripts/gpu/pack.sh on an NVIDIA machine, through Vulkan or CUDA:
#   scripts/gpu/run.sh sparse_attn_test vulkan:: cuda:: --test-threads 1
#   scripts/gpu/run.sh bench_attention --device vulkan ...   (or --device cuda)
# It first reports what the driver exposes: the GPU, the Vulkan loader and ICD files, and
# libcuda/libnvrtc (CUDA kernels compile through NVRTC: the CUDA toolkit, or CUDA_PATH).
set -uo pipefail
cd "$(dirname "$0")/../.."
name=$1; shift
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# The loader and libglvnd (the NVIDIA ICD's libGLX_nvidia needs libGLdispatch) may be absent.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
ldconfig -p | grep -q libvulkan.so.1 || echo "run.sh: no Vulkan loader" >&2
icds=$(ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json 2>/dev/null)
echo "NVIDIA Vulkan ICDs: ${icds:-none}"
[[ -n "$icds" ]] && export VK_DRIVER_FILES=$(echo "$icds" | tail -1)
ldconfig -p | grep -E 'libcuda\.so|libnvrtc' || echo "run.sh: libcuda/libnvrtc not in the linker cache"
export XDG_RUNTIME_DIR=/tmp/xdg && mkdir -p "$XDG_RUNTIME_DIR"
xz -dc ".carry/$name.xz" > "/tmp/$name" && chmod +x "/tmp/$name"
LD_PRELOAD="$PWD/.carry/libllvm_stub.so${LD_PRELOAD:+:$LD_PRELOAD}" "/tmp/$name" "$@"
