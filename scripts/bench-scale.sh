#!/usr/bin/env bash
# wasmconfd at scale: N services x 3 endpoints, for N in $SIZES (default 1000 10000 50000).
#
# Per size:
#   - a full render: `wasmconfd render --output` of a synthetic cluster (scripts/gen-cluster.py,
#     as `kubectl get -o json` prints it), wall time (hyperfine, mean ± sd over $RUNS runs after a
#     warm-up, warm compile cache), CPU (user+sys) and peak RSS (GNU time), and `haproxy -c` on
#     the result;
#   - one endpoint change, ten times, through the fake API server to `wasmconfd run` with a check
#     and a reload that do nothing (`bench_change ... without_haproxy`): the median time from the
#     API write until the files are written, the mean CPU per change, the daemon's peak RSS;
#   - the bundled http guest's full render (`render`, then `servers`) through Wasm and natively,
#     alternated in one process (`bench_render`), and the median ratio of neighbouring pairs.
# And for N in $HAPROXY_SIZES (default 1000 2000: a running HAProxy with more than about 6,000
# servers cannot start under this machine's open-files limit of 20,000), one endpoint change into
# a real HAProxy on loopback (`bench_change ... one_endpoint_change`): until HAProxy's admin
# socket shows the new server, until the files are checked and written, CPU per change.
#
# Prints Markdown tables, and writes the figures to $OUT (default docs/bench): scale.tsv,
# haproxy.tsv and a chart, scale.png. Needs hyperfine, gnuplot and HAProxy
# (apt install hyperfine gnuplot-nox haproxy). Takes about ten minutes at the default sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine gnuplot haproxy; do
    command -v "$tool" >/dev/null || { echo "needs $tool (see the head of $0)" >&2; exit 1; }
done
read -r -a sizes <<< "${SIZES:-1000 10000 50000}"
read -r -a haproxy_sizes <<< "${HAPROXY_SIZES:-1000 2000}"
runs="${RUNS:-5}"
out="${OUT:-docs/bench}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
bin="$PWD/target/release/wasmconfd"
bench() {  # bench SERVICES TEST CARGO-ARGS...: the `bench:` line's key=value pairs
    local n="$1" test="$2"
    shift 2
    BENCH_SERVICES="$n" cargo test --release --quiet "$@" "$test" -- --exact --ignored --nocapture \
        2>/dev/null | sed -n 's/^bench: //p'
}
value() {  # value KEY PAIRS: KEY's value among key=value pairs
    tr ' ' '\n' <<< "$2" | sed -n "s/^$1=//p"
}

printf 'services\trender_ms\trender_sd_ms\trender_cpu_ms\trender_rss_mb\tcheck_ms\twritten_ms\tchange_cpu_ms\tdaemon_rss_mib\twasm_ms\tnative_ms\tratio\n' \
    > "$out/scale.tsv"
for n in "${sizes[@]}"; do
    echo "$n services..." >&2
    cluster="$work/cluster-$n.json"
    scripts/gen-cluster.py "$n" > "$cluster"
    render=("$bin" render --cluster "$cluster" --cache-dir "$work/cache" --output "$work/out-$n/haproxy.cfg")
    "${render[@]}" 2>/dev/null  # warms the compile cache
    hyperfine --style none --warmup 1 --runs "$runs" --export-json "$work/h.json" \
        "${render[*]} 2>/dev/null" >/dev/null
    read -r wall sd < <(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; \
print(f\"{r['mean']*1000:.0f} {r['stddev']*1000:.0f}\")" "$work/h.json")
    read -r cpu rss < <(/usr/bin/time -f "%U %S %M" "${render[@]}" 2>&1 >/dev/null | tail -1 |
        awk '{printf "%.0f %.0f\n", ($1+$2)*1000, $3/1024}')
    check=$( { /usr/bin/time -f "%e" haproxy -c -q -f "$work/out-$n/haproxy.cfg" >/dev/null; } 2>&1 |
        tail -1 | awk '{printf "%.0f", $1*1000}')
    change=$(bench "$n" one_endpoint_change_without_haproxy -p wasmconfd --test bench_change)
    guest=$(bench "$n" wasm_and_native_render -p wasmconfd --test bench_render)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$wall" "$sd" "$cpu" "$rss" \
        "$check" "$(value written_ms "$change")" "$(value cpu_ms "$change")" \
        "$(value rss_mib "$change")" "$(value wasm_ms "$guest")" "$(value native_ms "$guest")" \
        "$(value ratio "$guest")" >> "$out/scale.tsv"
done

printf 'services\tin_haproxy_ms\twritten_ms\tchange_cpu_ms\n' > "$out/haproxy.tsv"
for n in "${haproxy_sizes[@]}"; do
    echo "$n services, with HAProxy..." >&2
    change=$(bench "$n" one_endpoint_change -p wasmconfd --test bench_change)
    printf '%s\t%s\t%s\t%s\n' "$n" "$(value in_haproxy_ms "$change")" \
        "$(value written_ms "$change")" "$(value cpu_ms "$change")" >> "$out/haproxy.tsv"
done

echo "| Services x 3 endpoints | Full render | CPU | Peak RSS | haproxy -c | Change written after | CPU per change | Daemon peak RSS | http guest: Wasm | native | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
tail -n +2 "$out/scale.tsv" | while IFS=$'\t' read -r n wall sd cpu rss check written change daemon wasm native ratio; do
    echo "| $n | $wall ms ± $sd | $cpu ms | $rss MB | $check ms | $written ms | $change ms | $daemon MiB | $wasm ms | $native ms | $ratio |"
done
echo
echo "| Services x 3 endpoints, with HAProxy | In HAProxy after | Files checked and written after | CPU per change |"
echo "| --- | --- | --- | --- |"
tail -n +2 "$out/haproxy.tsv" | while IFS=$'\t' read -r n in_haproxy written change; do
    echo "| $n | $in_haproxy ms | $written ms | $change ms |"
done

gnuplot <<EOF
set terminal pngcairo size 1200,480 font ",10"
set output "$out/scale.png"
set datafile separator tab
set key below
set logscale xy
set xlabel "services (x 3 endpoints)"
set grid
set multiplot layout 1,2 title "wasmconfd at scale ($(date +%F))"
set ylabel "milliseconds"
set title "time"
plot "$out/scale.tsv" using 1:2 with linespoints title "full render (wall)", \
     "" using 1:8 with linespoints title "CPU per endpoint change", \
     "" using 1:7 with linespoints title "endpoint change written after (debounce 20 ms)", \
     "" using 1:10 with linespoints title "http guest render, Wasm", \
     "" using 1:11 with linespoints title "http guest render, native"
set ylabel "MB"
set title "peak memory (RSS)"
plot "$out/scale.tsv" using 1:5 with linespoints title "wasmconfd render", \
     "" using 1:9 with linespoints title "wasmconfd run (daemon, MiB)"
unset multiplot
EOF
echo "wrote $out/scale.tsv, $out/haproxy.tsv and $out/scale.png" >&2
