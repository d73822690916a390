#!/usr/bin/env bash
# Build the guest, render test/cluster.yaml with it and the bundled base guest (global and
# defaults sections), check the whole configuration with `haproxy -c`, and compare this guest's
# part of it with test/expected.cfg, and its map with test/expected.map.
# `./test.sh --update` accepts the output as expected.
# WASMCONFD names the wasmconfd binary (default: wasmconfd on PATH); --check needs haproxy.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh build/guests/50-{{name}}.wasm
# The other bundled guests are turned off with empty files in their slots; base stays, so the
# check sees a configuration HAProxy would run.
for slot in 20-http 30-https 40-redis; do : > "build/guests/$slot.conf"; done
rm -f build/guests/00-base.conf
rm -rf build/out
"${WASMCONFD:-wasmconfd}" render --cluster test/cluster.yaml --guests build/guests \
    --output build/out/haproxy.cfg --check
# This guest's part: from its heading to the end.
sed -n '/^# --- guest 50-{{name}} /,$p' build/out/haproxy.cfg > build/out/{{name}}.cfg
if [[ "${1:-}" == --update ]]; then
    cp build/out/{{name}}.cfg test/expected.cfg
    cp build/out/maps/{{name}}.map test/expected.map
fi
diff -u test/expected.cfg build/out/{{name}}.cfg
diff -u test/expected.map build/out/maps/{{name}}.map
echo "ok: the configuration passes haproxy -c, and the output matches test/expected.cfg and test/expected.map"
