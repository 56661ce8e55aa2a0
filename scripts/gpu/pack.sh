#!/usr/bin/env bash
# Prepares a GPU run on a machine without a Rust toolchain: release builds of the attention
# bench and the kernel tests with Burn's `vulkan` feature, stripped and xz-compressed into
# .carry/ (each binary is ~80 MB stripped, ~12 MB compressed), plus Debian's Vulkan loader
# and libglvnd in .gl/ for machines whose NVIDIA driver ships neither. Then run
# scripts/gpu/run.sh there with .carry/ and .gl/ beside the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry .gl
cargo build --release --features vulkan --example bench_attention --example bench_training --example video_dit
test_bin=$(cargo test --release --features vulkan -p burn-sparse-attn --test sparse_attn --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
for name in bench_attention bench_training video_dit; do strip -o "/tmp/$name" "target/release/examples/$name"; done
strip -o /tmp/sparse_attn_test "$test_bin"
for name in bench_attention bench_training video_dit sparse_attn_test; do
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
