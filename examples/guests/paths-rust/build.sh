#!/usr/bin/env bash
# Build the Rust example guest: ./build.sh [OUT] (default: paths.wasm beside this script).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/paths.wasm}")"
target="${TARGET_DIR:-$here/../../../target/examples}"
cd "$here"
cargo build --quiet --profile guest --target wasm32-wasip2 --target-dir "$target" \
    -p wasmconfd-example-paths
mkdir -p "$(dirname "$out")"
cp "$target/wasm32-wasip2/guest/wasmconfd_example_paths.wasm" "$out"
