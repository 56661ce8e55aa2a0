#!/usr/bin/env bash
# Compiles the CUDA C++ that CubeCL generates for every forward, dQ and tiled dK/dV kernel
# variant (f16, bf16, TF32 and f32; several head dims, groups and key blocks) with NVRTC, as
# CubeCL's CUDA runtime does on a GPU, for sm_80 and sm_90, then has ptxas report each kernel's
# registers and spills: a kernel the GPU would refuse fails here first. Runs on a machine
# without a GPU with Debian's non-free nvidia-cuda-toolkit (installed here when missing). Not
# part of CI.
#   scripts/gpu/compile-cuda.sh [DIR]     (sources, PTX and a summary in DIR, default out/cuda-sources)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-out/cuda-sources}
if ! command -v nvcc >/dev/null 2>&1; then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    if ! grep -rqs "non-free" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        . /etc/os-release
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: non-free contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$VERSION_CODENAME" "$VERSION_CODENAME" | $SUDO tee /etc/apt/sources.list.d/non-free.sources >/dev/null
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit >/dev/null
fi
rm -rf "$out"
# The test command's features, so the build reuses its compiled Burn.
scripts/setup.sh --vulkan --mpi
cargo run --example cuda_sources --features ndarray,mpi,wgpu,cuda-source -- "$out"
check=$(mktemp)
trap 'rm -f "$check"' EXIT
cc -O1 -o "$check" scripts/gpu/nvrtc_check.c -lnvrtc
include=$(dirname "$(find /usr/include /usr/local/cuda/include -maxdepth 1 -name mma.h 2>/dev/null | head -1)")
status=0
for arch in 80 90; do
    "$check" "$arch" "$include" "$out"/*.cu || status=1
done
{
    printf '%-36s %5s %10s %10s\n' kernel arch registers spills
    for ptx in "$out"/*.ptx; do
        arch=${ptx##*.sm_}
        arch=${arch%.ptx}
        info=$(ptxas -arch="sm_$arch" -v "$ptx" -o /dev/null 2>&1)
        regs=$(grep -o 'Used [0-9]* registers' <<< "$info" | awk '{print $2}')
        spills=$(grep -o '[0-9]* bytes spill stores' <<< "$info" | awk '{print $1}')
        name=$(basename "${ptx%.cu.sm_*}")
        printf '%-36s %5s %10s %10s\n' "$name" "sm_$arch" "${regs:-?}" "${spills:-?}"
    done
} | tee "$out/summary.txt"
kernels=$(ls "$out"/*.cu | wc -l)
compiled=$(ls "$out"/*.ptx 2>/dev/null | wc -l)
echo "compile-cuda: ${compiled} of $((2 * kernels)) compiled (${kernels} kernels for sm_80 and sm_90)"
exit "$status"
