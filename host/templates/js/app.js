// The {{name}} guest: routes services with proto `{{name}}` by Host header, through a map from
// domain to backend, to their ready endpoints.
//
// Settings (`--set {{name}}.KEY=VALUE`): `bind` (default `:8080`).

import { log } from 'wasmconfd:haproxy/host@0.5.0';

const PROTO = '{{name}}';

const setting = (cluster, key, fallback) =>
  cluster.context.settings.find(([k]) => k === key)?.[1] ?? fallback;
const directive = (keyword, ...args) => ({ keyword, args });
const hostPort = (address, port) =>
  (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

export function describe() {
  return {
    protos: [PROTO],
    settings: [{ key: 'bind', help: "the frontend's bind address (default :8080)" }],
    // false: `render` writes the `server` lines itself (see docs/guests.md for writing them
    // apart, in `servers`, which makes endpoint changes cheap at scale).
    serversApart: false,
    // The annotations and labels it reads (keys, or prefixes ending in `*`): its services carry
    // no others. Add the keys of your own annotations here.
    annotations: ['wasmconfd.io/*'],
    labels: [],
    // true: each endpoint comes with its ports, node, zone and pod (false leaves them out,
    // which makes every call cheaper when it has thousands of services).
    endpointDetails: true,
    // true: each service comes with its ports and routed port name (false leaves them out;
    // each endpoint's port still comes).
    ports: true,
  };
}

// Not called: this guest does not write servers apart.
export function servers(context, services) {
  return services.map(() => []);
}

export function render(cluster) {
  const hostsMap = `${cluster.context.mapsDir}/${PROTO}.map`;
  const frontend = {
    kind: 'frontend',
    name: PROTO,
    directives: [
      directive('mode', 'http'),
      directive('bind', setting(cluster, 'bind', ':8080')),
      directive('http-request', 'set-var(txn.backend)',
        `req.hdr(host),field(1,:),lower,map_str(${hostsMap})`),
      directive('use_backend', '%[var(txn.backend)]',
        'if', '{', 'var(txn.backend)', '-m', 'found', '}'),
    ],
  };

  const hosts = [];
  const sections = [frontend];
  for (const service of cluster.services) {
    if (service.proto !== PROTO) continue;
    const backend = `${PROTO}_${service.namespace}_${service.name}`;
    for (const domain of service.domains) {
      if (domain.startsWith('*')) {
        log('warn', `service ${service.namespace}/${service.name}: wildcard domain ${domain} is not supported: skipped`);
        continue;
      }
      hosts.push({ key: domain, value: backend });
    }
    const section = { kind: 'backend', name: backend, directives: [directive('mode', 'http')] };
    for (const endpoint of service.endpoints) {
      if (endpoint.ready && endpoint.port !== undefined) {
        const address = hostPort(endpoint.address, endpoint.port);
        section.directives.push(directive('server', address, address, 'check'));
      }
    }
    sections.push(section);
  }

  hosts.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { sections, maps: [{ name: `${PROTO}.map`, entries: hosts }] };
}
