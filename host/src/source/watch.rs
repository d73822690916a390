//! Watching the Kubernetes API: one watch per resource, through one API server at a time, into
//! caches of our own rather than kube's reflector stores, so that the copy survives moving to
//! another API server. A re-list replaces a cache whole when it completes.

use super::Objects;
use super::kubernetes::{Connection, Slim};
use crate::status::Status;
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Consecutive watch errors on an API server that has answered before moving to the next.
const ERRORS_BEFORE_FAILOVER: u32 = 3;

/// What the watchers have seen: one map per resource, replaced whole when a re-list completes.
#[derive(Default)]
pub struct Caches {
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    endpoints: Cache<Endpoints>,
    namespaces: Cache<Namespace>,
    secrets: Cache<Secret>,
}

/// Objects read as `K`, kept as `K::Kept`.
struct Cache<K: Slim> {
    objects: Kept<K>,
    /// A re-list in progress.
    listing: Option<Kept<K>>,
    /// A first list completed.
    ready: bool,
}

/// Objects by namespace and name: their own, not a copy as a map's key would be (at 10,000
/// services the keys and the map's larger nodes were 3 MB).
type Kept<K> = BTreeSet<ByName<K>>;

/// An object kept, ordered by its namespace and name.
struct ByName<K: Slim>(Arc<K::Kept>);

impl<K: Slim> Ord for ByName<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        K::key(&self.0).cmp(&K::key(&other.0))
    }
}

impl<K: Slim> PartialOrd for ByName<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Slim> PartialEq for ByName<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl<K: Slim> Eq for ByName<K> {}

impl<K: Slim> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: BTreeSet::new(),
            listing: None,
            ready: false,
        }
    }
}

impl<K: Slim> Cache<K> {
    fn apply(&mut self, event: watcher::Event<K>) {
        let kept = |o: K| ByName(Arc::new(o.slim()));
        match event {
            watcher::Event::Apply(o) => {
                self.objects.replace(kept(o));
            }
            watcher::Event::Delete(o) => {
                self.objects.remove(&kept(o));
            }
            watcher::Event::Init => self.listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(o) => {
                self.listing.get_or_insert_default().replace(kept(o));
            }
            watcher::Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.ready = true;
            }
        }
    }
}

impl Caches {
    /// Whether every resource `connection` reads has been listed once.
    pub fn ready(&self, connection: &Connection) -> bool {
        self.services.ready
            && self.slices.ready
            && (!connection.legacy_endpoints || self.endpoints.ready)
            && (!connection.namespaces || self.namespaces.ready)
            && (!connection.tls_secrets || self.secrets.ready)
    }

    /// The objects, shared with the caches (no object is copied).
    pub fn objects(&self) -> Objects {
        fn all<K: Slim>(cache: &Cache<K>) -> Vec<Arc<K::Kept>> {
            cache.objects.iter().map(|o| o.0.clone()).collect()
        }
        Objects {
            services: all(&self.services),
            endpoint_slices: all(&self.slices),
            endpoints: all(&self.endpoints),
            namespaces: all(&self.namespaces),
            secrets: all(&self.secrets),
        }
    }
}

/// Watch every resource through one API server at a time, moving to the next after repeated
/// failures, and tell the render loop about each change. Each resource's watch retries on its
/// own, with its own backoff, so one failing watch never holds up the others; a watch told
/// that its resource version is gone (410, after a compaction or an API server restart) lists
/// again at once.
pub async fn watch_all(
    connection: Connection,
    servers: Vec<kube::Config>,
    caches: Arc<Mutex<Caches>>,
    changed: mpsc::SyncSender<()>,
    status: Arc<Status>,
) {
    let timeout = connection.timeout.as_secs().saturating_sub(1).clamp(1, 290) as u32;
    let mut watch_config = watcher::Config::default().timeout(timeout);
    if let Some(selector) = &connection.label_selector {
        watch_config = watch_config.labels(selector);
    }
    for (attempt, server) in servers.iter().cycle().enumerate() {
        let url = server.cluster_url.to_string();
        let client = match kube::Client::try_from(server.clone()) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(server = %url, %error, "cannot create a client");
                tokio::time::sleep(backoff(1)).await;
                continue;
            }
        };
        tracing::info!(server = %url, "watching");
        let streams = watches(&connection, &client, &watch_config, &caches);
        let one_server = servers.len() == 1;
        let failures = follow(&url, streams, one_server, &changed, &status).await;
        if attempt % servers.len() == servers.len() - 1 {
            tokio::time::sleep(backoff(failures)).await;
        }
        tracing::warn!(server = %url, "moving to the next API server");
    }
}

/// One watch per resource, through `client`.
fn watches(
    connection: &Connection,
    client: &kube::Client,
    config: &watcher::Config,
    caches: &Arc<Mutex<Caches>>,
) -> Vec<BoxStream<'static, Result<bool, Failure>>> {
    let mut streams = vec![
        watch(
            "services",
            connection.api(client),
            config,
            caches,
            |c, e| c.services.apply(e),
        ),
        watch(
            "endpointslices",
            connection.api(client),
            config,
            caches,
            |c, e| c.slices.apply(e),
        ),
    ];
    if connection.legacy_endpoints {
        streams.push(watch(
            "endpoints",
            connection.api(client),
            config,
            caches,
            |c, e| c.endpoints.apply(e),
        ));
    }
    if connection.namespaces {
        // Every namespace: the label selector is for the objects routed, not for these.
        let all = kube::Api::<Namespace>::all(client.clone());
        let config = watcher::Config {
            label_selector: None,
            ..config.clone()
        };
        streams.push(watch("namespaces", all, &config, caches, |c, e| {
            c.namespaces.apply(e)
        }));
    }
    if connection.tls_secrets {
        let params = connection.secret_params();
        let config = watcher::Config {
            label_selector: params.label_selector,
            field_selector: params.field_selector,
            ..config.clone()
        };
        streams.push(watch(
            "secrets",
            connection.api(client),
            &config,
            caches,
            |c, e| c.secrets.apply(e),
        ));
    }
    streams
}

/// Follow the watches of the API server at `url`, telling the render loop about each change,
/// until it is time to move to the next server (never, when there is only one): the failures
/// in a row when it ended.
async fn follow(
    url: &str,
    streams: Vec<BoxStream<'static, Result<bool, Failure>>>,
    one_server: bool,
    changed: &mpsc::SyncSender<()>,
    status: &Status,
) -> u32 {
    let mut events = futures::stream::select_all(streams);
    let (mut answered_once, mut failures) = (false, 0);
    while let Some(event) = events.next().await {
        match event {
            Ok(answered) => {
                if answered {
                    answered_once = true;
                    status.api_failing.store(false, Ordering::Relaxed);
                    let _ = changed.try_send(());
                }
            }
            Err(Failure::Gone { resource }) => {
                tracing::info!(server = %url, resource, "resource version gone (compaction or API server restart): listing again");
            }
            Err(Failure::Error {
                resource,
                error,
                failures: in_a_row,
                retry,
            }) => {
                failures = in_a_row;
                status.watch_errors.fetch_add(1, Ordering::Relaxed);
                status.api_failing.store(true, Ordering::Relaxed);
                // Retries come fast: say so at the 1st, 2nd, 4th, 8th... failure in a row.
                if failures.is_power_of_two() {
                    let retry = humantime::format_duration(retry).to_string();
                    tracing::warn!(server = %url, resource, %error, failures, %retry, "watch failed; the running configuration stays");
                }
                // A server that never answered is left at once; one that did gets a few tries.
                if (!answered_once || failures >= ERRORS_BEFORE_FAILOVER) && !one_server {
                    break;
                }
            }
        }
    }
    failures
}

/// Why a watch yielded no event.
enum Failure {
    /// The resource version it resumed from is gone: it lists again at once.
    Gone { resource: &'static str },
    /// The request failed: it is tried again after `retry`.
    Error {
        resource: &'static str,
        error: watcher::Error,
        /// Failures in a row of this watch.
        failures: u32,
        retry: Duration,
    },
}

/// Time before a failing watch is tried again, after `failures` in a row: 100 ms, doubling, at
/// most 500 ms. A refused request costs an API server little, and a watch is back within half a
/// second of its server (a restarted one refuses requests for a second or two while its
/// authorizer warms up).
fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(50 * 2u64.pow(failures.min(4))).min(Duration::from_millis(500))
}

/// One watcher of `resource`, its events applied to the caches with `apply`. Yields whether
/// the server answered (`Init` starts every list attempt, even against a server that is down),
/// or why not. After an error it waits before asking again; other watches go on meanwhile.
fn watch<K>(
    resource: &'static str,
    api: kube::Api<K>,
    config: &watcher::Config,
    caches: &Arc<Mutex<Caches>>,
    apply: fn(&mut Caches, watcher::Event<K>),
) -> BoxStream<'static, Result<bool, Failure>>
where
    K: Slim + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let caches = caches.clone();
    let events = watcher(api, config.clone()).boxed();
    futures::stream::unfold(
        (events, 0, Duration::ZERO),
        move |(mut events, mut failures, wait)| {
            let caches = caches.clone();
            async move {
                // Only after an error: even a zero sleep waits for the timer's next tick (a
                // millisecond), which would hold every event of a list and of a burst that long.
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let item = match events.next().await? {
                    Ok(event) => {
                        let answered = !matches!(event, watcher::Event::Init);
                        if answered {
                            failures = 0;
                        }
                        apply(&mut caches.lock().unwrap(), event);
                        Ok(answered)
                    }
                    Err(error) => Err(failure(resource, error, &mut failures)),
                };
                let wait = match &item {
                    Err(Failure::Error { retry, .. }) => *retry,
                    _ => Duration::ZERO,
                };
                Some((item, (events, failures, wait)))
            }
        },
    )
    .boxed()
}

/// What a watch error means for `resource`: a 410 lists again at once; anything else is one
/// more failure in a row.
fn failure(resource: &'static str, error: watcher::Error, failures: &mut u32) -> Failure {
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => Failure::Gone { resource },
        error => {
            *failures += 1;
            Failure::Error {
                resource,
                error,
                failures: *failures,
                retry: retry_delay(*failures),
            }
        }
    }
}

/// Time before trying again after `failures` in a row: 1 s, doubling, at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(failures.min(6))).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(cache: &Cache<Service>) -> Vec<&str> {
        cache.objects.iter().map(|o| Service::key(&o.0).1).collect()
    }

    #[test]
    fn a_relist_replaces_the_cache_only_when_it_completes() {
        let mut cache = Cache::<Service>::default();
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(service("a")));
        assert!(
            !cache.ready && names(&cache).is_empty(),
            "a list in progress is not seen"
        );
        cache.apply(watcher::Event::InitDone);
        assert!(cache.ready);
        assert_eq!(names(&cache), ["a"]);

        cache.apply(watcher::Event::Apply(service("b")));
        cache.apply(watcher::Event::Delete(service("a")));
        assert_eq!(names(&cache), ["b"]);

        // After a 410, a re-list: the old copy serves until the new one is whole, and objects
        // deleted meanwhile are gone after it.
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(service("c")));
        assert_eq!(names(&cache), ["b"]);
        cache.apply(watcher::Event::InitDone);
        assert_eq!(names(&cache), ["c"]);
    }
}
