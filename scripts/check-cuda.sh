#!/usr/bin/env bash
# Type-checks every crate, example and test with the `cuda` feature, offline. Burn 0.22's CUDA
# runtime pulls in cubecl-llvm, whose build scripts download LLVM unless DOCS_RS is set; a
# type-check needs no LLVM. A CUDA machine online builds the feature normally.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS_RS=1 cargo check --workspace --all-targets --features cuda "$@"
