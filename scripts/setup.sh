#!/usr/bin/env bash
# Install what building and testing wasmconfd needs on a fresh Debian machine: HAProxy (the
# tests check every configuration with it) and the wasm32-wasip2 target (guests build for it).
set -euo pipefail
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
if ! command -v haproxy >/dev/null; then
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends haproxy
fi
rustup target add wasm32-wasip2 >/dev/null
haproxy -v | sed -n 1p  # sed reads it all: `head` could end the pipe early (SIGPIPE)
