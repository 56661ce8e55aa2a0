#!/usr/bin/env bash
# Idempotent machine setup for the README commands; fast when everything is already there.
#   scripts/setup.sh            checks the Rust toolchain
#   scripts/setup.sh --vulkan   also installs Mesa's software Vulkan driver (lavapipe), which
#                               runs the CubeCL backends on CPU through the `wgpu` feature
#                               (needs root or sudo the first time)
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

if [[ "${1:-}" == "--vulkan" ]]; then
    if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
        echo "setup: installing mesa-vulkan-drivers (software Vulkan for CubeCL on CPU)"
        SUDO=""
        [[ $(id -u) -ne 0 ]] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
    fi
fi
