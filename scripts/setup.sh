#!/usr/bin/env bash
# Idempotent machine setup for the README commands; fast when everything is already there.
#   scripts/setup.sh            checks the Rust toolchain
#   --vulkan                    also installs Mesa's software Vulkan driver (lavapipe), which
#                               runs the CubeCL backends on CPU through the `wgpu` feature
#   --fashion                   also installs Debian's Fashion-MNIST files (moving
#                               Fashion-MNIST clips: `video_dit train --data fashion`)
#   --mpi                       also installs OpenMPI (`mpirun`, headers) and libclang, which
#                               the `mpi` feature (multi-process context parallelism) needs
# Packages need root or sudo the first time.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

packages=()
for arg in "$@"; do
    case "$arg" in
        --vulkan) ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || packages+=(mesa-vulkan-drivers) ;;
        --fashion) [[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] || packages+=(dataset-fashion-mnist) ;;
        --mpi)
            command -v mpirun >/dev/null 2>&1 || packages+=(openmpi-bin)
            command -v mpicc >/dev/null 2>&1 || packages+=(libopenmpi-dev)
            # libclang itself: an image may carry libclang-cpp alone.
            compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
                || compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null \
                || packages+=(libclang-dev) ;;
        *) echo "setup: unknown option $arg (expected --vulkan, --fashion, --mpi)" >&2; exit 2 ;;
    esac
done

if (( ${#packages[@]} )); then
    echo "setup: installing ${packages[*]}"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi
