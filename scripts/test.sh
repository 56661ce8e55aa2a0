#!/usr/bin/env bash
# The README's test command: every crate's tests on the CPU backends (Flex and NdArray, with
# Debian's Fashion-MNIST files for the moving Fashion-MNIST test, and context parallelism
# across processes under OpenMPI's mpirun), and the sparse-attention tests also on the CubeCL
# (wgpu) backend over Mesa's software Vulkan driver. One cargo invocation with one feature
# set, so Burn is compiled once; closed by one total over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --vulkan --fashion --mpi
# wgpu warns without a runtime dir; any private writable folder will do.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --features ndarray,mpi,wgpu "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
