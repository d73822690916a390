#!/usr/bin/env bash
# Build the guest: ./build.sh [OUT] (default: build/{{name}}.wasm).
# Needs componentize-py {{componentize_py}} (`pip install componentize-py=={{componentize_py}}`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/build/{{name}}.wasm}")"
cd "$here"
mkdir -p "$(dirname "$out")"
componentize-py --wit-path wit --world guest componentize app -o "$out" >/dev/null
