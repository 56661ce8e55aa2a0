#!/usr/bin/env bash
# Prepares a CUDA run on a machine without a Rust toolchain or LLVM: release builds of the
# attention bench and the kernel tests with Burn's `cuda` backend, compiled offline.
#   - DOCS_RS=1 makes Burn's CUDA runtime skip its LLVM download (cubecl-llvm, llvm-sys with
#     no-llvm-linking), so only the final link of each binary lacks the LLVM C API;
#   - the final crate is relinked with unresolved symbols allowed (seconds), and a stub
#     library defining those symbols (each returns 0) is built for LD_PRELOAD;
#   - the `cuda-nvrtc` feature makes CubeCL compile kernels through its C++ backend and
#     NVRTC (shipped with the CUDA toolkit), so the stubs are never called for kernels.
# Output in .carry/: <name>.xz for bench_attention and sparse_attn_test, libllvm_stub.so.
# Run there with scripts/gpu/run-cuda.sh NAME ARGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry
export DOCS_RS=1
features=cuda-nvrtc
unresolved=(-C link-arg=-Wl,--unresolved-symbols=ignore-all)
# Everything but the final links (those fail without LLVM, hence `|| true`; relinked below).
cargo build --release --features "$features" --example bench_attention 2>/dev/null || true
cargo test --release --features "$features" -p burn-sparse-attn --test sparse_attn --no-run 2>/dev/null || true
cargo rustc --release --features "$features" --example bench_attention -- "${unresolved[@]}"
test_bin=$(cargo rustc --release --features "$features" -p burn-sparse-attn --test sparse_attn \
    --message-format=json -- "${unresolved[@]}" \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
strip -o /tmp/bench_attention target/release/examples/bench_attention
strip -o /tmp/sparse_attn_test "$test_bin"

# The stub: every LLVM / cubecl shim symbol either binary leaves undefined.
stub=$(mktemp -d)
for bin in /tmp/bench_attention /tmp/sparse_attn_test; do
    nm -D --undefined-only "$bin" | awk '{print $NF}' | grep -E '^(LLVM|cubecl_)' || true
done | sort -u | sed 's/.*/long &(void) { return 0; }/' > "$stub/stub.c"
echo "pack-cuda.sh: $(wc -l < "$stub/stub.c") stub symbols"
cc -shared -fPIC -O1 -o .carry/libllvm_stub.so "$stub/stub.c"
rm -rf "$stub"
for name in bench_attention sparse_attn_test; do
    xz -T0 -6 -c "/tmp/$name" > ".carry/cuda_$name.xz"
done
ls -la .carry
