#!/usr/bin/env bash
# Build the guest: ./build.sh [OUT] (default: build/{{name}}.wasm).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/build/{{name}}.wasm}")"
cd "$here"
cargo build --quiet --release --target wasm32-wasip2
mkdir -p "$(dirname "$out")"
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" "$out"
