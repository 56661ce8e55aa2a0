#!/usr/bin/env bash
# Prepares a GPU run on an NVIDIA machine without a Rust toolchain or LLVM: one release build
# of the attention bench, the training bench and the kernel tests with both GPU backends,
# Burn's `vulkan` (CubeCL's SPIR-V compiler on wgpu) and `cuda` (kernels compiled by NVRTC),
# stripped and xz-compressed into .carry/, plus Debian's Vulkan loader and libglvnd in .gl/
# for machines whose NVIDIA driver ships neither. Then run scripts/gpu/run.sh there.
#   - DOCS_RS=1 makes Burn's CUDA runtime skip its LLVM download (cubecl-llvm, llvm-sys with
#     no-llvm-linking), so only the final links lack the LLVM C API;
#   - link-unresolved.sh links them with those symbols left undefined, and a stub library
#     defining each of them (returning 0) is built for LD_PRELOAD;
#   - the `cuda-nvrtc` feature makes CubeCL compile kernels through its C++ backend and
#     NVRTC (shipped with the CUDA toolkit), so no stub is called for a kernel.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry .gl
export DOCS_RS=1
# The CUDA bindings cudarc picks without a toolkit, also where compile-cuda.sh installed one.
export CUDARC_CUDA_VERSION=13040
args=(--release --workspace --features vulkan,cuda-nvrtc
    --config "target.x86_64-unknown-linux-gnu.linker=\"$PWD/scripts/gpu/link-unresolved.sh\"")
cargo build "${args[@]}" --example bench_attention --example bench_training
test_bin=$(cargo test "${args[@]}" --test sparse_attn --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
names=(bench_attention bench_training sparse_attn_test)
for name in bench_attention bench_training; do strip -o "/tmp/$name" "target/release/examples/$name"; done
strip -o /tmp/sparse_attn_test "$test_bin"

# The stub: every LLVM C API / cubecl shim symbol a binary leaves undefined.
stub=$(mktemp -d)
for name in "${names[@]}"; do
    nm -D --undefined-only "/tmp/$name" | awk '{print $NF}' | grep -E '^(LLVM|cubecl_)' || true
done | sort -u | sed 's/.*/long &(void) { return 0; }/' > "$stub/stub.c"
echo "pack.sh: $(wc -l < "$stub/stub.c") stub symbols"
cc -shared -fPIC -O1 -o .carry/libllvm_stub.so "$stub/stub.c"
rm -rf "$stub"
for name in "${names[@]}"; do
    xz -T0 -6 -c "/tmp/$name" > ".carry/$name.xz"
done
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    lists=$(mktemp -d)
    opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
    mkdir -p "$lists/partial"
    apt-get "${opts[@]}" update -qq
    (cd .gl && apt-get "${opts[@]}" download libvulkan1 libglvnd0 libglx0 libegl1 libgl1)
fi
ls -la .carry .gl
