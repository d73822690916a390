#!/usr/bin/env bash
# Build the Debian package of wasmconfd for HAProxy hosts outside the cluster (docs/deploy.md):
#   scripts/build-deb.sh [BINARY] [OUTPUT_DIR]
# (default: target/dist/wasmconfd, built with the `dist` profile if missing, into target/deb/). It holds the binary,
# the systemd unit and HAProxy's drop-in from deploy/systemd, /etc/default/wasmconfd (a
# configuration file dpkg keeps on upgrade), the manual pages and the shell completions. The
# maintainer scripts make the `wasmconfd` system user (in the haproxy group) and the directory
# it writes; the service is not started until configured: edit /etc/default/wasmconfd, then
# `systemctl enable --now wasmconfd`. Prints the path of the package.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-target/dist/wasmconfd}"
out="${2:-target/deb}"
[[ -x "$binary" ]] || cargo build --profile dist --quiet -p wasmconfd
version=$("$binary" --version | awk '{print $2}')
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

install -D -m 0755 "$binary" "$root/usr/bin/wasmconfd"
install -D -m 0644 deploy/systemd/wasmconfd.service "$root/lib/systemd/system/wasmconfd.service"
install -D -m 0644 deploy/systemd/haproxy.service.d/wasmconfd.conf \
    "$root/lib/systemd/system/haproxy.service.d/wasmconfd.conf"
install -D -m 0640 deploy/systemd/wasmconfd.env "$root/etc/default/wasmconfd"
mkdir -p "$root/usr/share/man/man1"
"$binary" man --dir "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1
for shell in bash zsh fish; do
    case $shell in
        bash) file=usr/share/bash-completion/completions/wasmconfd ;;
        zsh) file=usr/share/zsh/vendor-completions/_wasmconfd ;;
        fish) file=usr/share/fish/vendor_completions.d/wasmconfd.fish ;;
    esac
    mkdir -p "$(dirname "$root/$file")"
    "$binary" completions "$shell" > "$root/$file"
done
install -D -m 0644 LICENSE "$root/usr/share/doc/wasmconfd/copyright"
install -D -m 0644 docs/deploy.md "$root/usr/share/doc/wasmconfd/deploy.md"

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: wasmconfd
Version: $version
Architecture: $(dpkg --print-architecture)
Maintainer: wasmconfd developers <wasmconfd@users.noreply.github.com>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1, haproxy (>= 2.6), adduser
Section: net
Priority: optional
Homepage: https://github.com/wasmconfd/wasmconfd
Description: HAProxy configuration from Kubernetes, by sandboxed WebAssembly guests
 wasmconfd watches Kubernetes Services and their endpoints, hands them to sandboxed
 WebAssembly guests that return HAProxy configuration, checks it with HAProxy and applies
 it through the Runtime API or by a reload. This package runs it on a HAProxy host outside
 the cluster: edit /etc/default/wasmconfd, then systemctl enable --now wasmconfd.
EOF
echo /etc/default/wasmconfd > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    getent passwd wasmconfd >/dev/null ||
        adduser --system --ingroup haproxy --no-create-home --home /nonexistent wasmconfd
    install -d -o wasmconfd -g haproxy -m 2750 /etc/haproxy/wasmconfd
    chgrp haproxy /etc/default/wasmconfd
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
EOF
cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
mkdir -p "$out"
package="$out/wasmconfd_${version}_$(dpkg --print-architecture).deb"
fakeroot dpkg-deb -Zgzip --build "$root" "$package" >/dev/null
echo "$package"
