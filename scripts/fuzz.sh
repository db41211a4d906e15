#!/usr/bin/env bash
# Fuzzes the beacon decoders with libFuzzer (cargo-fuzz) for SECONDS (default 60).
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
mkdir -p fuzz/corpus/decode
# Seed the corpus with one frame of each format.
for frame in 0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010002c5 \
             1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c500 \
             0303aafe1516aafe00e700010203040506070809aabbccddeeff \
             aafe10eb03676f6f676c6507 aafe20000bb81700000000 aafe200100010203040506070809 \
             aafe30f65fc145abb9b102a7; do
    printf '%s' "$frame" | xxd -r -p > "fuzz/corpus/decode/$frame"
done
RUSTC_BOOTSTRAP=1 cargo fuzz run decode fuzz/corpus/decode -- -max_total_time="$seconds"
