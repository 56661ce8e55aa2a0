#!/usr/bin/env bash
# Prepares a CUDA run on a machine without a Rust toolchain or LLVM: release builds of the
# attention bench and the kernel tests with Burn's `cuda` backend, compiled offline.
#   - DOCS_RS=1 makes Burn's CUDA runtime skip its LLVM download (cubecl-llvm, llvm-sys with
#     no-llvm-linking), so only the final links lack the LLVM C API;
#   - link-unresolved.sh links them with those symbols left undefined, and a stub library
#     defining each of them (returning 0) is built for LD_PRELOAD;
#   - the `cuda-nvrtc` feature makes CubeCL compile kernels through its C++ backend and
#     NVRTC (shipped with the CUDA toolkit), so no stub is called for a kernel.
# Output in .carry/: cuda_bench_attention.xz, cuda_sparse_attn_test.xz, libllvm_stub.so.
# Run there with scripts/gpu/run-cuda.sh NAME ARGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry
export DOCS_RS=1
args=(--release --workspace --features cuda-nvrtc
    --config "target.x86_64-unknown-linux-gnu.linker=\"$PWD/scripts/gpu/link-unresolved.sh\"")
cargo build "${args[@]}" --example bench_attention
test_bin=$(cargo test "${args[@]}" --test sparse_attn --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
strip -o /tmp/cuda_bench_attention target/release/examples/bench_attention
strip -o /tmp/cuda_sparse_attn_test "$test_bin"

# The stub: every LLVM C API / cubecl shim symbol either binary leaves undefined.
stub=$(mktemp -d)
for name in bench_attention sparse_attn_test; do
    nm -D --undefined-only "/tmp/cuda_$name" | awk '{print $NF}' | grep -E '^(LLVM|cubecl_)' || true
done | sort -u | sed 's/.*/long &(void) { return 0; }/' > "$stub/stub.c"
echo "pack-cuda.sh: $(wc -l < "$stub/stub.c") stub symbols"
cc -shared -fPIC -O1 -o .carry/libllvm_stub.so "$stub/stub.c"
rm -rf "$stub"
for name in bench_attention sparse_attn_test; do
    xz -T0 -6 -c "/tmp/cuda_$name" > ".carry/cuda_$name.xz"
done
ls -la .carry
