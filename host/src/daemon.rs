//! `wasmconfd run`: keep HAProxy in step with the cluster.
//!
//! Watchers keep a copy of the services, endpointslices (and legacy endpoints) in memory, in
//! caches of our own rather than kube's reflector stores, so that the copy survives moving to
//! another API server; a burst of changes is coalesced (debounce, with a maximum delay); then the
//! pipeline renders, and the applier checks, installs and reloads. Nothing is written when the
//! output is unchanged. When the API is unreachable the last configuration keeps serving while
//! the watchers reconnect, moving to the next API server after repeated failures.

use crate::apply::{Applied, Applier};
use crate::bindings::Fragment;
use crate::model;
use crate::render::{GuestConfig, Pipeline};
use crate::source::Objects;
use crate::source::kubernetes::{Connection, strip};
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

/// Everything `run` needs.
pub struct DaemonConfig {
    pub connection: Connection,
    pub guests: GuestConfig,
    pub applier: Applier,
    /// Quiet time after a change before rendering.
    pub debounce: Duration,
    /// Longest wait after the first change of a burst.
    pub max_delay: Duration,
}

/// Consecutive watch errors on an API server that has answered before moving to the next.
const ERRORS_BEFORE_FAILOVER: u32 = 3;

/// What the watchers have seen: one map per resource, replaced whole when a re-list completes.
#[derive(Default)]
struct Caches {
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    endpoints: Cache<Endpoints>,
}

struct Cache<K> {
    objects: BTreeMap<(String, String), K>,
    /// A re-list in progress.
    listing: Option<BTreeMap<(String, String), K>>,
    /// A first list completed.
    ready: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: BTreeMap::new(),
            listing: None,
            ready: false,
        }
    }
}

impl<K: kube::Resource> Cache<K> {
    fn apply(&mut self, event: watcher::Event<K>) {
        let key = |o: &K| {
            (
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Apply(o) => {
                self.objects.insert(key(&o), o);
            }
            watcher::Event::Delete(o) => {
                self.objects.remove(&key(&o));
            }
            watcher::Event::Init => self.listing = Some(BTreeMap::new()),
            watcher::Event::InitApply(o) => {
                self.listing.get_or_insert_default().insert(key(&o), o);
            }
            watcher::Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.ready = true;
            }
        }
    }
}

impl Caches {
    fn ready(&self, legacy_endpoints: bool) -> bool {
        self.services.ready && self.slices.ready && (!legacy_endpoints || self.endpoints.ready)
    }

    fn objects(&self) -> Objects {
        Objects {
            services: self.services.objects.values().cloned().collect(),
            endpoint_slices: self.slices.objects.values().cloned().collect(),
            endpoints: self.endpoints.objects.values().cloned().collect(),
        }
    }
}

/// Run until the process is stopped. Watching is async; rendering runs on a thread of its own,
/// outside the async runtime, because WASI calls of a guest (writing to stderr, say) block on a
/// runtime of their own.
pub async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let pipeline = Pipeline::new(&config.guests)?;
    let servers = config.connection.configs().await?;
    let caches = Arc::new(Mutex::new(Caches::default()));
    let (changed_tx, changed) = mpsc::sync_channel::<()>(1);
    tokio::spawn(watch_all(
        config.connection.clone(),
        servers,
        caches.clone(),
        changed_tx,
    ));
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("render".into())
        .spawn(move || {
            let _ = done_tx.send(render_loop(&config, &pipeline, &caches, &changed));
        })?;
    done.await?
}

/// Render after the first complete list, then after every burst of changes; retry a failed
/// reload with backoff until it succeeds.
fn render_loop(
    config: &DaemonConfig,
    pipeline: &Pipeline,
    caches: &Mutex<Caches>,
    changed: &mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let stopped = || anyhow::anyhow!("the watchers stopped");
    while !caches
        .lock()
        .unwrap()
        .ready(config.connection.legacy_endpoints)
    {
        changed.recv().map_err(|_| stopped())?;
    }
    tracing::info!("initial sync done");

    let mut last_good: Vec<Option<Fragment>> = Vec::new();
    let mut reload_pending = false;
    let mut reload_failures = 0;
    loop {
        let objects = caches.lock().unwrap().objects();
        render_and_apply(
            pipeline,
            &objects,
            &config.applier,
            &mut last_good,
            &mut reload_pending,
        );
        if reload_pending {
            reload_failures += 1;
            match changed.recv_timeout(backoff(reload_failures)) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if config.applier.reload().is_ok() {
                        reload_pending = false;
                        reload_failures = 0;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
            }
        } else {
            reload_failures = 0;
            changed.recv().map_err(|_| stopped())?;
        }
        coalesce(changed, config.debounce, config.max_delay);
    }
}

/// Watch every resource through one API server at a time, moving to the next after repeated
/// failures, and tell the render loop about each change.
async fn watch_all(
    connection: Connection,
    servers: Vec<kube::Config>,
    caches: Arc<Mutex<Caches>>,
    changed: mpsc::SyncSender<()>,
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
        let mut streams: Vec<BoxStream<Result<bool, watcher::Error>>> = vec![
            watch(&connection, &client, &watch_config, &caches, |c, e| {
                c.services.apply(e)
            }),
            watch(&connection, &client, &watch_config, &caches, |c, e| {
                c.slices.apply(e)
            }),
        ];
        if connection.legacy_endpoints {
            streams.push(watch(
                &connection,
                &client,
                &watch_config,
                &caches,
                |c, e| c.endpoints.apply(e),
            ));
        }
        let mut events = futures::stream::select_all(streams);
        let (mut errors, mut answered_once) = (0, false);
        while let Some(event) = events.next().await {
            match event {
                Ok(answered) => {
                    if answered {
                        (errors, answered_once) = (0, true);
                        let _ = changed.try_send(());
                    }
                }
                Err(error) => {
                    errors += 1;
                    tracing::warn!(server = %url, %error, errors, "watch failed; the running configuration stays");
                    // A server that never answered is left at once; one that did gets a few tries.
                    if (!answered_once || errors >= ERRORS_BEFORE_FAILOVER) && servers.len() > 1 {
                        break;
                    }
                    tokio::time::sleep(backoff(errors)).await;
                }
            }
        }
        if attempt % servers.len() == servers.len() - 1 {
            tokio::time::sleep(backoff(errors)).await;
        }
        tracing::warn!(server = %url, "moving to the next API server");
    }
}

/// One watcher, its events applied to the caches with `apply`. Yields whether the server
/// answered: `Init` starts every list attempt, even against a server that is down.
fn watch<K>(
    connection: &Connection,
    client: &kube::Client,
    config: &watcher::Config,
    caches: &Arc<Mutex<Caches>>,
    apply: fn(&mut Caches, watcher::Event<K>),
) -> BoxStream<'static, Result<bool, watcher::Error>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let api = match &connection.namespace {
        Some(namespace) => kube::Api::<K>::namespaced(client.clone(), namespace),
        None => kube::Api::<K>::all(client.clone()),
    };
    let caches = caches.clone();
    watcher(api, config.clone())
        .map(move |event| {
            let event = event?.modify(|object| strip(object.meta_mut()));
            let answered = !matches!(event, watcher::Event::Init);
            apply(&mut caches.lock().unwrap(), event);
            Ok(answered)
        })
        .boxed()
}

/// Wait until no change came for `debounce`, or `max_delay` passed.
fn coalesce(changed: &mpsc::Receiver<()>, debounce: Duration, max_delay: Duration) {
    let deadline = Instant::now() + max_delay;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if changed.recv_timeout(debounce.min(left)).is_err() {
            return;
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(failures.min(6))).min(Duration::from_secs(30))
}

fn render_and_apply(
    pipeline: &Pipeline,
    objects: &Objects,
    applier: &Applier,
    last_good: &mut Vec<Option<Fragment>>,
    reload_pending: &mut bool,
) {
    let (services, problems) = model::build(objects);
    for problem in &problems {
        tracing::warn!(object = %problem.object, "skipped: {}", problem.reason);
    }
    let results = pipeline.run(services);
    last_good.resize(results.len(), None);
    for (result, last) in results.into_iter().zip(last_good.iter_mut()) {
        match result {
            Ok(fragment) => *last = Some(fragment),
            Err(error) => tracing::error!("{error}; keeping its last good output"),
        }
    }
    let Some(fragments) = last_good.iter().cloned().collect::<Option<Vec<_>>>() else {
        tracing::error!("a guest has never rendered successfully: nothing to apply yet");
        return;
    };
    let assembled = match pipeline.assemble(&fragments) {
        Ok(assembled) => assembled,
        Err(error) => {
            tracing::error!("{error}; the running configuration stays");
            return;
        }
    };
    match applier.apply(&assembled) {
        Ok(Applied::Unchanged) => tracing::debug!("configuration unchanged"),
        Ok(Applied::Reloaded) => *reload_pending = false,
        Err(crate::apply::ApplyError::Reload(error)) => {
            tracing::error!(%error, "reload failed; retrying with backoff");
            *reload_pending = true;
        }
        Err(error) => {
            tracing::error!("{error}; the running configuration stays, retried on the next change")
        }
    }
}
