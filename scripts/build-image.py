#!/usr/bin/env python3
"""Build the wasmconfd container image without pulling a base image, as an OCI image layout,
and push it to a registry.

`deploy/image/Containerfile` is the image users build with docker, podman or buildah: Debian's
HAProxy (for `haproxy -c`) and wasmconfd built with the pinned toolchain. Where base images
cannot be pulled (CI, this machine), this script makes the equivalent from this host: one
layer holding the wasmconfd binary, Debian's haproxy, the shared libraries both load (as `ldd`
lists them), CA certificates, an unprivileged user (uid 99, as in deploy/kubernetes) and the
cache directory, declared a volume. The layer is reproducible: sorted, owned by root but for
the cache directory, every time 0.

Tags: `VERSION` and `VERSION-COMMIT` (wasmconfd --version); `--tag` adds more.

    scripts/build-image.py --binary target/dist/wasmconfd --layout out/
    scripts/build-image.py --binary target/dist/wasmconfd \\
        --push 127.0.0.1:5000/wasmconfd --ca ca.pem --user U --password P
"""

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import urllib.request

UID = 99
CACHE = "var/cache/wasmconfd"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def shared_libraries(binary):
    """The absolute paths `ldd` lists for `binary`, the dynamic loader included."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    return sorted(set(re.findall(r"(/\S+) \(0x", out)))


def layer(binary, haproxy):
    """The image's one layer, as an uncompressed tar (bytes)."""
    files = {"usr/bin/wasmconfd": binary, "usr/sbin/haproxy": haproxy}
    for path in shared_libraries(binary) + shared_libraries(haproxy):
        files[path.lstrip("/")] = path
    for certs in ["/etc/ssl/certs/ca-certificates.crt"]:
        if os.path.exists(certs):
            files[certs.lstrip("/")] = certs
    texts = {
        "etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\n"
        f"wasmconfd:x:{UID}:{UID}:wasmconfd:/{CACHE}:/sbin/nologin\n",
        "etc/group": f"root:x:0:\nwasmconfd:x:{UID}:\n",
    }
    # The cache and, beside it, the key that seals compiled guests (`/var/cache/wasmconfd.key`).
    dirs = {"dev": (0o755, 0), "proc": (0o755, 0), "tmp": (0o1777, 0),
            "var/cache": (0o755, UID), CACHE: (0o755, UID),
            "run/wasmconfd": (0o755, UID), "etc/wasmconfd": (0o755, 0)}
    for path in list(files) + list(texts) + list(dirs):
        parts = path.split("/")
        for i in range(1, len(parts)):
            dirs.setdefault("/".join(parts[:i]), (0o755, 0))

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind, mode, owner=0, data=b""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, owner, owner, 0
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        for name in sorted(set(dirs) | set(files) | set(texts)):
            if name in dirs:
                mode, owner = dirs[name]
                add(name, tarfile.DIRTYPE, mode, owner)
            elif name in texts:
                add(name, tarfile.REGTYPE, 0o644, data=texts[name].encode())
            else:
                with open(files[name], "rb") as f:  # follows symbolic links
                    data = f.read()
                add(name, tarfile.REGTYPE, os.stat(files[name]).st_mode & 0o755, data=data)
    return buffer.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(binary, haproxy):
    """(manifest, {digest: blob}, version, commit) of the image."""
    version_line = subprocess.run([binary, "--version"], check=True, capture_output=True,
                                  text=True).stdout.split()
    version = version_line[1]
    commit = version_line[2].strip("()") if len(version_line) > 2 else "unknown"
    tar = layer(binary, haproxy)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as f:
        f.write(tar)
    compressed = gz.getvalue()
    labels = {
        "org.opencontainers.image.title": "wasmconfd",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{UID}:{UID}",
            "Entrypoint": ["/usr/bin/wasmconfd"],
            "Cmd": ["--help"],
            "Env": ["PATH=/usr/bin:/usr/sbin", f"WASMCONFD_CACHE_DIR=/{CACHE}"],
            "Volumes": {"/var/cache": {}},
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(compressed), "size": len(compressed)}],
        "annotations": labels,
    }, sort_keys=True).encode()
    blobs = {sha256(config): config, sha256(compressed): compressed}
    return manifest, blobs, version, commit


def write_layout(directory, manifest, blobs, tags):
    os.makedirs(os.path.join(directory, "blobs", "sha256"), exist_ok=True)
    for digest, data in list(blobs.items()) + [(sha256(manifest), manifest)]:
        with open(os.path.join(directory, "blobs", "sha256", digest[7:]), "wb") as f:
            f.write(data)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": MANIFEST_TYPE, "digest": sha256(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}} for tag in tags]}
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(index, f)


def push(target, manifest, blobs, tags, args):
    registry, repository = target.split("/", 1)
    scheme = "http" if args.plain_http else "https"
    context = ssl.create_default_context(cafile=args.ca) if scheme == "https" else None
    headers = {}
    if args.user:
        token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"

    def request(method, url, data=None, extra=None):
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={**headers, **(extra or {})})
        return urllib.request.urlopen(req, context=context)

    base = f"{scheme}://{registry}/v2/{repository}"
    for digest, data in blobs.items():
        location = request("POST", f"{base}/blobs/uploads/").headers["Location"]
        if location.startswith("/"):
            location = f"{scheme}://{registry}{location}"
        separator = "&" if "?" in location else "?"
        request("PUT", f"{location}{separator}digest={digest}", data,
                {"Content-Type": "application/octet-stream"})
    for tag in tags:
        request("PUT", f"{base}/manifests/{tag}", manifest, {"Content-Type": MANIFEST_TYPE})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/dist/wasmconfd")
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("--layout", help="write an OCI image layout into this directory")
    parser.add_argument("--push", metavar="REGISTRY/REPOSITORY")
    parser.add_argument("--tag", action="append", default=[], help="another tag")
    parser.add_argument("--ca", help="CA certificates (PEM) of the registry")
    parser.add_argument("--plain-http", action="store_true")
    parser.add_argument("--user")
    parser.add_argument("--password", default=os.environ.get("REGISTRY_PASSWORD"))
    args = parser.parse_args()
    manifest, blobs, version, commit = image(args.binary, args.haproxy)
    tags = [version, f"{version}-{commit}"] + args.tag
    if args.layout:
        write_layout(args.layout, manifest, blobs, tags)
    if args.push:
        push(args.push, manifest, blobs, tags, args)
    print(json.dumps({"digest": sha256(manifest), "tags": tags}))


if __name__ == "__main__":
    sys.exit(main())
