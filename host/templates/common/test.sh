#!/usr/bin/env bash
# Build the guest, render test/cluster.yaml with it alone, and compare the result with
# test/expected.cfg and test/expected.map. `./test.sh --update` accepts the output as expected.
# WASMCONFD names the wasmconfd binary (default: wasmconfd on PATH).
set -euo pipefail
cd "$(dirname "$0")"
./build.sh build/guests/50-{{name}}.wasm
# Only this guest: the bundled ones are turned off with empty files in their slots.
for slot in 00-base 20-http 30-https 40-redis; do : > "build/guests/$slot.conf"; done
rm -rf build/out
"${WASMCONFD:-wasmconfd}" render --cluster test/cluster.yaml --guests build/guests \
    --output build/out/haproxy.cfg
if [[ "${1:-}" == --update ]]; then
    cp build/out/haproxy.cfg test/expected.cfg
    cp build/out/maps/{{name}}.map test/expected.map
fi
diff -u test/expected.cfg build/out/haproxy.cfg
diff -u test/expected.map build/out/maps/{{name}}.map
echo "ok: the output matches test/expected.cfg and test/expected.map"
