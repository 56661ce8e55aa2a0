#!/usr/bin/env bash
# Runs one binary packed by scripts/gpu/pack.sh on an NVIDIA machine, through Vulkan:
#   scripts/gpu/run.sh bench_attention --device vulkan ...
#   scripts/gpu/run.sh sparse_attn_test --test-threads 4
# It first reports what the driver exposes: the GPU, the Vulkan loader, the ICD files.
set -uo pipefail
cd "$(dirname "$0")/../.."
name=$1; shift
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# The loader and libglvnd (the NVIDIA ICD's libGLX_nvidia needs libGLdispatch) may be absent.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
ldconfig -p | grep -q libvulkan.so.1 || { echo "run.sh: no Vulkan loader" >&2; exit 1; }
icds=$(ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json 2>/dev/null)
echo "NVIDIA Vulkan ICDs: ${icds:-none}"
[[ -n "$icds" ]] && export VK_DRIVER_FILES=$(echo "$icds" | tail -1)
export XDG_RUNTIME_DIR=/tmp/xdg && mkdir -p "$XDG_RUNTIME_DIR"
xz -dc ".carry/$name.xz" > "/tmp/$name" && chmod +x "/tmp/$name"
"/tmp/$name" "$@"
