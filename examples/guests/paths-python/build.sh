#!/usr/bin/env bash
# Build the Python example guest: ./build.sh [OUT] (default: paths.wasm beside this script).
# Needs componentize-py 0.25.1 (`pip install componentize-py==0.25.1`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/paths.wasm}")"
cd "$here"
mkdir -p "$(dirname "$out")"
componentize-py --wit-path ../../../wit/0.1.0 --world guest componentize app -o "$out" >/dev/null
