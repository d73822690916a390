#!/usr/bin/env bash
# Start times of `wasmconfd render` with three signed guests from a local docker-registry (TLS,
# basic auth), against the same three guests as local files: cold OCI cache (pulled and
# verified), warm OCI cache (signature checked online, component from the cache). The compile
# cache is warm in all three, so the difference is the registry's. Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p wasmconfd
bin=target/release/wasmconfd
work="$(mktemp -d)"
trap 'kill "$registry" 2>/dev/null; [[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT

# A registry on a free port with a throwaway CA and a password.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 1 -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=127.0.0.1 -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 1 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null
htpasswd -Bbn bench bench-password > "$work/htpasswd"
cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: "127.0.0.1:$port", tls: {certificate: $work/server.pem, key: $work/server.key}}
auth: {htpasswd: {realm: bench, path: $work/htpasswd}}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done

export WASMCONFD_REGISTRY_USER=bench WASMCONFD_REGISTRY_PASSWORD=bench-password
export WASMCONFD_REGISTRY_CA="$work/ca.pem" WASMCONFD_CACHE_DIR="$work/cache"
openssl ecparam -name prime256v1 -genkey -noout -out "$work/team.key"
openssl ec -in "$work/team.key" -pubout -out "$work/team.pub" 2>/dev/null
mkdir -p "$work/files"
guests=()
for slot in 20-http 30-https 40-redis; do
    name=${slot#*-}
    cp "host/guests/$name.wasm" "$work/files/$slot.wasm"
    ref="oci://127.0.0.1:$port/bench/$name:v1"
    $bin guest push "host/guests/$name.wasm" "$ref" >/dev/null
    $bin guest sign --key "$work/team.key" "$ref" >/dev/null
    guests+=(--guest "$slot=$ref")
done

render="$bin render --cluster examples/cluster.yaml --log-level warn"
$render --guests "$work/files" >/dev/null    # warm the compile cache
hyperfine -N --warmup 3 --runs 20 --command-name "three local files" "$render --guests $work/files"
hyperfine -N --warmup 1 --runs 20 --prepare "rm -rf $work/cache/oci" --command-name "three signed guests, cold OCI cache" \
    "$render ${guests[*]} --trusted-key $work/team.pub"
hyperfine -N --warmup 3 --runs 20 --command-name "three signed guests, warm OCI cache" \
    "$render ${guests[*]} --trusted-key $work/team.pub"
