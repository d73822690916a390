"""Path-based routing for team services, with a maintenance page (Python).

A service with proto `paths` and the annotation `paths.wasmconfd.io/team` is routed by host and
path prefix: `wasmconfd.io/path` (default `/`; the host checks it, and lets services share a
domain under different paths) on each of its domains. The longest matching prefix wins. Its
backend tags responses with `X-Team`, and answers 503 with a maintenance page naming the team
while no server is up. Requests no service claims get 404.

Settings: `bind` (default `:8080`), `frontend` (default `paths`).

The same guest is written in Rust and JavaScript beside this one; all three render the same
configuration.
"""

import wit_world
from wit_world.imports import host
from wit_world.imports.types import (
    Cluster,
    Directive,
    Fragment,
    MapEntry,
    MapFile,
    Section,
    SectionKind,
)

TEAM = "paths.wasmconfd.io/team"
PATH = "wasmconfd.io/path"


def setting(cluster: Cluster, key: str, default: str) -> str:
    return next((v for k, v in cluster.context.settings if k == key), default)


def annotation(service, key: str):
    return next((v for k, v in service.annotations if k == key), None)


def section(kind: SectionKind, name: str, *directives: list[str]) -> Section:
    return Section(kind, name, [Directive(d[0], list(d[1:]), None) for d in directives])


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def render(cluster: Cluster) -> Fragment:
    name = setting(cluster, "frontend", "paths")
    routes_map = f"{cluster.context.maps_dir}/paths.map"
    frontend = section(
        SectionKind.FRONTEND,
        name,
        ["mode", "http"],
        ["bind", setting(cluster, "bind", ":8080")],
        ["http-request", "set-var(txn.route)", f"base,map_beg({routes_map})"],
        ["use_backend", "%[var(txn.route)]", "if", "{", "var(txn.route)", "-m", "found", "}"],
        ["default_backend", f"{name}_default"],
    )
    not_found = section(
        SectionKind.BACKEND,
        f"{name}_default",
        ["mode", "http"],
        ["http-request", "return", "status", "404", "content-type", "text/plain",
         "string", "no route for this path"],
    )

    routes: list[MapEntry] = []
    sections = [frontend, not_found]
    for service in cluster.services:
        if service.proto != "paths":
            continue
        service_id = f"{service.namespace}/{service.name}"
        team = annotation(service, TEAM)
        if not team:
            host.log(host.Level.WARN, f"service {service_id} has no {TEAM} annotation: skipped")
            continue
        prefix = annotation(service, PATH) or "/"
        backend = f"paths_{service.namespace}_{service.name}"
        for domain in service.domains:
            if domain.startswith("*"):
                host.log(
                    host.Level.WARN,
                    f"service {service_id}: wildcard domain {domain} cannot be matched by path: skipped",
                )
                continue
            routes.append(MapEntry(f"{domain}{prefix}", backend))
        page = (
            "<html><body><h1>Down for maintenance</h1>"
            f"<p>Team {team} is on it.</p></body></html>"
        )
        backend_section = section(
            SectionKind.BACKEND,
            backend,
            ["mode", "http"],
            ["http-response", "set-header", "X-Team", team],
            ["http-request", "return", "status", "503", "content-type", "text/html",
             "string", page, "if", "{", "nbsrv", "eq", "0", "}"],
        )
        for endpoint in service.endpoints:
            if endpoint.ready and endpoint.port is not None:
                address = host_port(endpoint.address, endpoint.port)
                backend_section.directives.append(
                    Directive("server", [address, address, "check"], None)
                )
        sections.append(backend_section)

    # `map_beg` takes the first prefix that matches: longest first.
    routes.sort(key=lambda entry: (-len(entry.key), entry.key))
    return Fragment(sections, [MapFile("paths.map", routes)])


class WitWorld(wit_world.WitWorld):
    def render(self, cluster: Cluster) -> Fragment:
        return render(cluster)
