#!/usr/bin/env bash
# Build the JavaScript example guest: ./build.sh [OUT] (default: paths.wasm beside this script).
# Installs the pinned componentize-js from package-lock.json on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/paths.wasm}")"
cd "$here"
[[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error
mkdir -p "$(dirname "$out")"
# wasi:http is left out: guests have no network, and the host does not provide it.
node_modules/.bin/componentize-js app.js --wit ../../../wit/0.1.0 --world-name guest \
    --disable http fetch-event -o "$out" >/dev/null
