#!/usr/bin/env bash
# Start times of `wasmconfd render` with the example guest in each language: cold (compiling,
# --no-cache) and warm (from the compile cache). Needs hyperfine and scripts/setup.sh's tools.
# Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p wasmconfd
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for language in rust python js; do
    guests="$work/$language"
    mkdir -p "$guests"
    # Only base and the example: the bundled http, https and redis guests are turned off.
    for slot in 20-http 30-https 40-redis; do : > "$guests/$slot.conf"; done
    "examples/guests/paths-$language/build.sh" "$guests/50-paths.wasm"
    render="target/release/wasmconfd render --cluster examples/cluster.yaml --guests $guests --log-level warn"
    echo "== $language: $(du -h "$guests/50-paths.wasm" | cut -f1)"
    hyperfine -N --runs 3 --command-name "$language cold" "$render --no-cache"
    $render --cache-dir "$work/cache-$language" >/dev/null
    hyperfine -N --warmup 2 --runs 10 --command-name "$language warm" \
        "$render --cache-dir $work/cache-$language"
done
