// Path-based routing for team services, with a maintenance page (JavaScript).
//
// A service with proto `paths` and the annotation `paths.wasmconfd.io/team` is routed by host
// and path prefix: `wasmconfd.io/path` (default `/`; the host checks it, and lets services share
// a domain under different paths) on each of its domains. The longest matching prefix wins. Its
// backend tags responses with `X-Team`, and answers 503 with a maintenance page naming the team
// while no server is up. Requests no service claims get 404.
//
// Settings: `bind` (default `:8080`), `frontend` (default `paths`).
//
// The same guest is written in Rust and Python beside this one; all three render the same
// configuration.

import { log } from 'wasmconfd:haproxy/host@0.1.0';

const TEAM = 'paths.wasmconfd.io/team';
const PATH = 'wasmconfd.io/path';

const lookup = (pairs, key) => pairs.find(([k]) => k === key)?.[1];
const setting = (cluster, key, fallback) => lookup(cluster.context.settings, key) ?? fallback;

function section(kind, name, ...directives) {
  return {
    kind,
    name,
    directives: directives.map(([keyword, ...args]) => ({ keyword, args })),
  };
}

const hostPort = (address, port) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

export function render(cluster) {
  const name = setting(cluster, 'frontend', 'paths');
  const routesMap = `${cluster.context.mapsDir}/paths.map`;
  const frontend = section('frontend', name,
    ['mode', 'http'],
    ['bind', setting(cluster, 'bind', ':8080')],
    ['http-request', 'set-var(txn.route)', `base,map_beg(${routesMap})`],
    ['use_backend', '%[var(txn.route)]', 'if', '{', 'var(txn.route)', '-m', 'found', '}'],
    ['default_backend', `${name}_default`]);
  const notFound = section('backend', `${name}_default`,
    ['mode', 'http'],
    ['http-request', 'return', 'status', '404', 'content-type', 'text/plain',
      'string', 'no route for this path']);

  const routes = [];
  const sections = [frontend, notFound];
  for (const service of cluster.services) {
    if (service.proto !== 'paths') continue;
    const id = `${service.namespace}/${service.name}`;
    const team = lookup(service.annotations, TEAM);
    if (!team) {
      log('warn', `service ${id} has no ${TEAM} annotation: skipped`);
      continue;
    }
    const prefix = lookup(service.annotations, PATH) || '/';
    const backend = `paths_${service.namespace}_${service.name}`;
    for (const domain of service.domains) {
      if (domain.startsWith('*')) {
        log('warn', `service ${id}: wildcard domain ${domain} cannot be matched by path: skipped`);
        continue;
      }
      routes.push({ key: `${domain}${prefix}`, value: backend });
    }
    const page = '<html><body><h1>Down for maintenance</h1>'
      + `<p>Team ${team} is on it.</p></body></html>`;
    const backendSection = section('backend', backend,
      ['mode', 'http'],
      ['http-response', 'set-header', 'X-Team', team],
      ['http-request', 'return', 'status', '503', 'content-type', 'text/html',
        'string', page, 'if', '{', 'nbsrv', 'eq', '0', '}']);
    for (const endpoint of service.endpoints) {
      if (endpoint.ready && endpoint.port !== undefined) {
        const address = hostPort(endpoint.address, endpoint.port);
        backendSection.directives.push({ keyword: 'server', args: [address, address, 'check'] });
      }
    }
    sections.push(backendSection);
  }

  // `map_beg` takes the first prefix that matches: longest first.
  routes.sort((a, b) => b.key.length - a.key.length || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { sections, maps: [{ name: 'paths.map', entries: routes }] };
}
