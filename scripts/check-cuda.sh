#!/usr/bin/env bash
# Type-checks every crate, example and test with the `cuda` feature, offline. Burn 0.22's CUDA
# runtime pulls in cubecl-llvm, whose build scripts download LLVM unless DOCS_RS is set; a
# type-check needs no LLVM. A CUDA machine online builds the feature normally.
set -euo pipefail
cd "$(dirname "$0")/.."
# CUDARC_CUDA_VERSION: the bindings cudarc picks without a toolkit (see .ci/run).
DOCS_RS=1 CUDARC_CUDA_VERSION=13040 cargo check --workspace --all-targets --features cuda "$@"
