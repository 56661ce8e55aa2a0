#!/usr/bin/env bash
# The README's test command: every crate's tests on the CPU backends (Flex and NdArray).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --features ndarray "$@"
