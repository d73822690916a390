#!/usr/bin/env bash
# Build the guest: ./build.sh [OUT] (default: build/{{name}}.wasm).
# Installs the componentize-js pinned in package.json on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/build/{{name}}.wasm}")"
cd "$here"
[[ -d node_modules ]] || npm install --no-audit --no-fund --loglevel=error
mkdir -p "$(dirname "$out")"
# wasi:http is left out: guests have no network, and wasmconfd does not provide it.
node_modules/.bin/componentize-js app.js --wit wit --world-name guest \
    --disable http fetch-event -o "$out" >/dev/null
