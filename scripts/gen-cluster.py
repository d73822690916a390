#!/usr/bin/env python3
"""Write a synthetic cluster for benchmarks, as `kubectl get services,endpointslices -A -o json`
prints it: N annotated http services (in 100 namespaces, with the labels and annotations a
Helm-deployed service carries), each with one EndpointSlice of 3 ready endpoints on 10.x
addresses (for rendering and `haproxy -c` only: never for a running HAProxy).

    scripts/gen-cluster.py N [--endpoint-port PORT] > cluster.json
"""

import argparse
import json
import sys


def service(i: int) -> dict:
    namespace = f"ns-{i % 100}"
    name = f"svc-{i}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"00000000-0000-0000-0000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/instance": name,
                "app.kubernetes.io/managed-by": "Helm",
                "helm.sh/chart": "web-1.2.3",
            },
            "annotations": {
                "wasmconfd.io/domain": f"{name}.{namespace}.example.com",
                "wasmconfd.io/proto": "http",
                "meta.helm.sh/release-name": name,
                "meta.helm.sh/release-namespace": namespace,
            },
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": f"172.16.{i // 250 % 250}.{i % 250 + 1}",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app.kubernetes.io/name": name},
        },
    }


def slice_(i: int, port: int) -> dict:
    namespace = f"ns-{i % 100}"
    name = f"svc-{i}"
    endpoints = []
    for e in range(3):
        n = i * 3 + e
        endpoints.append(
            {
                "addresses": [f"10.{n // 62500 % 250}.{n // 250 % 250}.{n % 250 + 1}"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{n % 20}",
                "zone": f"zone-{n % 3}",
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": f"{name}-{e}"},
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": {
            "name": f"{name}-abcde",
            "namespace": namespace,
            "resourceVersion": str(100000 + i),
            "labels": {"kubernetes.io/service-name": name},
        },
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", type=int)
    parser.add_argument("--endpoint-port", type=int, default=8080)
    args = parser.parse_args()
    items = [service(i) for i in range(args.services)]
    items += [slice_(i, args.endpoint_port) for i in range(args.services)]
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)


if __name__ == "__main__":
    main()
