#!/bin/sh
# keepalived's check (/etc/keepalived/check_haproxy.sh): does HAProxy serve on this node? Any
# HTTP answer from the local http frontend counts, a 404 for an unknown host too. Not wasmconfd's
# /readyz: an API outage turns that red on both nodes at once, while HAProxy serves on.
# HAPROXY_CHECK_URL overrides where to ask (default http://127.0.0.1:80/).
code=$(curl --silent --output /dev/null --max-time 2 --write-out '%{http_code}' \
    "${HAPROXY_CHECK_URL:-http://127.0.0.1:80/}")
[ "$code" != 000 ]
