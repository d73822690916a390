#!/usr/bin/env bash
# Install what building and testing wasmconfd needs on a fresh Debian machine: HAProxy (the
# tests check every configuration with it), Debian's docker-registry (the tests run their own
# instance as an OCI registry), curl and openssl, headless chromium, the wasm32-wasip2 target (guests build for
# it), and the Python and JavaScript guest toolchains the example guests build with (pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v pip3 >/dev/null || missing+=(python3-pip)
# The checks of the files in deploy/ (tests/deploy.rs).
command -v keepalived >/dev/null || missing+=(keepalived)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v promtool >/dev/null || missing+=(prometheus)
command -v man >/dev/null || missing+=(man-db)
command -v fakeroot >/dev/null || missing+=(fakeroot)
# The status page is tested in a headless browser (tests/daemon.rs).
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rustup target add wasm32-wasip2 >/dev/null

componentize_py=0.25.1
if [[ "$(componentize-py --version 2>/dev/null)" != "componentize-py $componentize_py" ]]; then
    pip3 install --quiet "componentize-py==$componentize_py" \
        || pip3 install --quiet --break-system-packages "componentize-py==$componentize_py"
fi
# componentize-js, pinned in the example's package.json, exactly as package-lock.json records
# it: `npm ci` installs from the lock file and never rewrites it.
(cd examples/guests/paths-js && npm ci --no-audit --no-fund --loglevel=error)

haproxy -v | sed -n 1p  # sed reads it all: `head` could end the pipe early (SIGPIPE)
componentize-py --version
