"""The {{name}} guest: routes services with proto `{{name}}` by Host header, through a map from
domain to backend, to their ready endpoints.

Settings (`--set {{name}}.KEY=VALUE`): `bind` (default `:8080`).
"""

import wit_world
from wit_world.imports import host
from wit_world.imports.types import (
    Cluster,
    Context,
    Description,
    Directive,
    Fragment,
    MapEntry,
    MapFile,
    Placement,
    Section,
    SectionKind,
    Service,
    SettingInfo,
)

PROTO = "{{name}}"


def setting(cluster: Cluster, key: str, default: str) -> str:
    return next((v for k, v in cluster.context.settings if k == key), default)


def directive(keyword: str, *args: str) -> Directive:
    return Directive(keyword, list(args), None)


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class WitWorld(wit_world.WitWorld):
    def describe(self) -> Description:
        # `False`: `render` writes the `server` lines itself (see docs/guests.md for writing
        # them apart, in `servers`, which makes endpoint changes cheap at scale).
        # Then the annotations and labels it reads (keys, or prefixes ending in `*`): its
        # services carry no others. Add the keys of your own annotations there.
        # Then `True`: each endpoint comes with its ports, node, zone and pod (`False` leaves
        # them out, which makes every call cheaper when it has thousands of services).
        # Last, `True`: each service comes with its ports and routed port name (`False` leaves
        # them out; each endpoint's port still comes).
        return Description(
            [PROTO], [SettingInfo("bind", "the frontend's bind address (default :8080)")], False,
            ["wasmconfd.io/*"], [], True, True,
        )

    def servers(self, context: Context, services: list[Service]) -> list[list[Placement]]:
        # Not called: this guest does not write servers apart.
        return [[] for _ in services]

    def render(self, cluster: Cluster) -> Fragment:
        hosts_map = f"{cluster.context.maps_dir}/{PROTO}.map"
        frontend = Section(SectionKind.FRONTEND, PROTO, [
            directive("mode", "http"),
            directive("bind", setting(cluster, "bind", ":8080")),
            directive("http-request", "set-var(txn.backend)",
                      f"req.hdr(host),field(1,:),lower,map_str({hosts_map})"),
            directive("use_backend", "%[var(txn.backend)]",
                      "if", "{", "var(txn.backend)", "-m", "found", "}"),
        ])

        hosts: list[MapEntry] = []
        sections = [frontend]
        for service in cluster.services:
            if service.proto != PROTO:
                continue
            backend = f"{PROTO}_{service.namespace}_{service.name}"
            for domain in service.domains:
                if domain.startswith("*"):
                    host.log(
                        host.Level.WARN,
                        f"service {service.namespace}/{service.name}: "
                        f"wildcard domain {domain} is not supported: skipped",
                    )
                    continue
                hosts.append(MapEntry(domain, backend))
            section = Section(SectionKind.BACKEND, backend, [directive("mode", "http")])
            for endpoint in service.endpoints:
                if endpoint.ready and endpoint.port is not None:
                    address = host_port(endpoint.address, endpoint.port)
                    section.directives.append(directive("server", address, address, "check"))
            sections.append(section)

        hosts.sort(key=lambda entry: entry.key)
        return Fragment(sections, [MapFile(f"{PROTO}.map", hosts)])
