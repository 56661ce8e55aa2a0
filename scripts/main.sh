#!/usr/bin/env bash
# The README's main job: train the tiny video DiT with DSV sparse attention on CPU (Flex),
# then write sample GIFs, a contact sheet, a loss plot and a report under out/tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The main job starts over each time (its folder is the job's, not the user's), unless resumed.
fresh=(--overwrite)
for arg in "$@"; do [[ $arg == --resume ]] && fresh=(); done
cargo run --release --example video_dit -- train --out out/tiny "${fresh[@]}" "$@"
