#!/usr/bin/env bash
# Build the bundled guests for wasm32-wasip2 and copy them to host/guests/, where the host
# binary embeds them. The builds are committed; `scripts/build-guests.sh --check` rebuilds and
# fails if a committed build differs from its sources (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."

guests=(base http https redis)
cargo build --profile guest --target wasm32-wasip2 --target-dir target/guests \
    $(printf -- '-p wasmconfd-guest-%s ' "${guests[@]}")

status=0
for g in "${guests[@]}"; do
    built="target/guests/wasm32-wasip2/guest/wasmconfd_guest_${g}.wasm"
    committed="host/guests/${g}.wasm"
    if [[ "${1:-}" == --check ]]; then
        if ! cmp -s "$built" "$committed"; then
            echo "host/guests/${g}.wasm is out of date: run scripts/build-guests.sh and commit" >&2
            status=1
        fi
    else
        mkdir -p host/guests
        cp "$built" "$committed"
    fi
done
exit $status
