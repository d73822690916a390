#!/usr/bin/env bash
# Full renders at scale: `wasmconfd render --output` (release build, bundled guests, warm compile
# cache) of synthetic clusters of N services x 3 endpoints (scripts/gen-cluster.py), for N in
# $SIZES (default 1000 10000 50000). Prints, per size, the wall time (hyperfine, mean ± sd), the
# CPU time and the peak RSS (GNU time), and the time `haproxy -c` takes on the result.
# Needs hyperfine (apt install hyperfine) and HAProxy.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "needs hyperfine: apt install hyperfine" >&2; exit 1; }
cargo build --release --quiet
bin="$PWD/target/release/wasmconfd"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
read -r -a sizes <<< "${SIZES:-1000 10000 50000}"
runs="${RUNS:-10}"
cache="$work/cache"

echo "| Services x 3 endpoints | Snapshot (JSON) | Render wall | CPU (user+sys) | Peak RSS | haproxy -c |"
echo "| --- | --- | --- | --- | --- | --- |"
for n in "${sizes[@]}"; do
    cluster="$work/cluster-$n.json"
    scripts/gen-cluster.py "$n" > "$cluster"
    render=("$bin" render --cluster "$cluster" --cache-dir "$cache" --output "$work/out-$n/haproxy.cfg")
    "${render[@]}" 2>/dev/null  # warms the compile cache
    hyperfine --style none --warmup 1 --runs "$runs" --export-json "$work/h-$n.json" \
        "${render[*]} 2>/dev/null" >/dev/null
    wall=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; \
print(f\"{r['mean']*1000:.0f} ms ± {r['stddev']*1000:.0f}\")" "$work/h-$n.json")
    read -r cpu rss < <(/usr/bin/time -f "%U %S %M" "${render[@]}" 2>&1 >/dev/null | tail -1 |
        awk '{printf "%.0f %.0f\n", ($1+$2)*1000, $3/1024}')
    check=$( { /usr/bin/time -f "%e" haproxy -c -q -f "$work/out-$n/haproxy.cfg" >/dev/null; } 2>&1 | tail -1)
    size=$(du -h "$cluster" | cut -f1)
    echo "| $n | $size | $wall | $cpu ms | $rss MB | $(python3 -c "print(f'{float(\"$check\")*1000:.0f} ms')") |"
done
