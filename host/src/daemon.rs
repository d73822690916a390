//! `wasmconfd run`: keep HAProxy in step with the cluster.
//!
//! Watchers keep a copy of the services, endpointslices (and legacy endpoints) in memory, in
//! caches of our own rather than kube's reflector stores, so that the copy survives moving to
//! another API server; a burst of changes is coalesced (debounce, with a maximum delay); then the
//! pipeline renders, and the applier checks, installs and reloads. Nothing is written when the
//! output is unchanged. When the API is unreachable the last configuration keeps serving while
//! the watchers reconnect, moving to the next API server after repeated failures.

use crate::apply::plan::{self, Op, Plan};
use crate::apply::runtime_api;
use crate::apply::{Applied, Applier, Reload};
use crate::assemble::MAPS_DIR;
use crate::bindings::{Fragment, SectionKind};
use crate::model;
use crate::render::{GuestConfig, Pipeline};
use crate::source::Objects;
use crate::source::kubernetes::{Connection, strip};
use crate::status::Status;
use anyhow::Context;
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

/// Everything `run` needs.
pub struct DaemonConfig {
    pub connection: Connection,
    /// What the model accepts from the cluster.
    pub rules: model::Rules,
    pub guests: GuestConfig,
    /// How to fetch the registry guests that were left out at start, to try them again.
    pub remote: Option<crate::oci::Remote>,
    pub applier: Applier,
    /// Quiet time after a change before rendering.
    pub debounce: Duration,
    /// Longest wait after the first change of a burst.
    pub max_delay: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`.
    pub status_address: Option<std::net::SocketAddr>,
}

/// How often draining servers are checked for their last connection.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

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
pub async fn run(mut config: DaemonConfig) -> anyhow::Result<()> {
    let pipeline = Pipeline::new(&config.guests)?;
    let servers = config.connection.configs().await?;
    let caches = Arc::new(Mutex::new(Caches::default()));
    let status = Arc::new(Status::default());
    let missing = config.guests.missing.len() as u64;
    status.missing_guests.store(missing, Ordering::Relaxed);
    if let Some(address) = config.status_address {
        crate::status::serve(address, status.clone())
            .await
            .with_context(|| format!("cannot serve status on {address}"))?;
    }
    let (changed_tx, changed) = mpsc::sync_channel::<()>(1);
    tokio::spawn(watch_all(
        config.connection.clone(),
        servers,
        caches.clone(),
        changed_tx.clone(),
        status.clone(),
    ));
    let (pipelines_tx, pipelines) = mpsc::channel();
    if let Some(remote) = config.remote.take() {
        tokio::spawn(load_missing(
            config.guests.clone(),
            remote,
            pipelines_tx,
            changed_tx,
            status.clone(),
        ));
    }
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("render".into())
        .spawn(move || {
            let result = render_loop(&config, pipeline, &pipelines, &caches, &changed, status);
            let _ = done_tx.send(result);
        })?;
    done.await?
}

/// Try the registry guests left out at start again, with backoff, until every one has loaded;
/// hand the render loop a new pipeline with those that do.
async fn load_missing(
    mut guests: GuestConfig,
    remote: crate::oci::Remote,
    pipelines: mpsc::Sender<Pipeline>,
    changed: mpsc::SyncSender<()>,
    status: Arc<Status>,
) {
    let mut attempts = 0;
    while !guests.missing.is_empty() {
        attempts += 1;
        tokio::time::sleep(backoff(attempts)).await;
        let fetched = remote.fetch(&guests.missing).await;
        let (mut next, mut loaded) = (guests.clone(), Vec::new());
        next.missing.clear();
        for (result, guest) in fetched.into_iter().zip(&guests.missing) {
            match result {
                Ok(part) => {
                    next.remote.push(part);
                    loaded.push(guest.0.clone());
                }
                Err(error) => {
                    tracing::warn!("{error:#}; trying again");
                    next.missing.push(guest.clone());
                }
            }
        }
        if loaded.is_empty() {
            continue;
        }
        let built = tokio::task::spawn_blocking(move || Pipeline::new(&next).map(|p| (p, next)));
        match built.await {
            Ok(Ok((pipeline, next))) => {
                tracing::info!(
                    ?loaded,
                    "guests left out at start loaded; rendering with them"
                );
                guests = next;
                let missing = guests.missing.len() as u64;
                status.missing_guests.store(missing, Ordering::Relaxed);
                if pipelines.send(pipeline).is_err() {
                    return;
                }
                let _ = changed.try_send(());
            }
            Ok(Err(error)) => tracing::error!(?loaded, "{error}; trying again"),
            Err(error) => tracing::error!(%error, "loading guests failed"),
        }
    }
}

/// Render after the first complete list, then after every burst of changes; retry a failed
/// reload with backoff until it succeeds.
fn render_loop(
    config: &DaemonConfig,
    mut pipeline: Pipeline,
    pipelines: &mpsc::Receiver<Pipeline>,
    caches: &Mutex<Caches>,
    changed: &mpsc::Receiver<()>,
    status: Arc<Status>,
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

    status.synced.store(true, Ordering::Relaxed);
    if let Reload::MasterSocket(socket) = &config.applier.reload {
        *status.haproxy_socket.lock().unwrap() = Some(socket.clone());
    }
    let mut state = State {
        last_good: Vec::new(),
        installed: None,
        reload_pending: false,
        draining: BTreeSet::new(),
        problems: BTreeSet::new(),
        conflicts: BTreeSet::new(),
        status,
    };
    let mut reload_failures = 0;
    loop {
        // Guests that were missing have loaded: their outputs take their places in the order.
        if let Some(next) = pipelines.try_iter().last() {
            pipeline = next;
            state.last_good.clear();
        }
        let objects = caches.lock().unwrap().objects();
        state.render_and_apply(&pipeline, &objects, config);
        if state.reload_pending {
            reload_failures += 1;
            match changed.recv_timeout(backoff(reload_failures)) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    state.retry_reload(&config.applier);
                    if !state.reload_pending {
                        reload_failures = 0;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
            }
        } else {
            reload_failures = 0;
            // Wait for a change; meanwhile, delete the servers that have drained.
            loop {
                if state.draining.is_empty() {
                    changed.recv().map_err(|_| stopped())?;
                    break;
                }
                match changed.recv_timeout(DRAIN_CHECK) {
                    Ok(()) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => state.delete_drained(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
                }
            }
        }
        coalesce(changed, config.debounce, config.max_delay);
    }
}

/// Watch every resource through one API server at a time, moving to the next after repeated
/// failures, and tell the render loop about each change. Each resource's watch retries on its
/// own, with its own backoff, so one failing watch never holds up the others; a watch told
/// that its resource version is gone (410, after a compaction or an API server restart) lists
/// again at once.
async fn watch_all(
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
        let mut streams: Vec<BoxStream<Result<bool, Failure>>> = vec![
            watch(
                "services",
                &connection,
                &client,
                &watch_config,
                &caches,
                |c, e| c.services.apply(e),
            ),
            watch(
                "endpointslices",
                &connection,
                &client,
                &watch_config,
                &caches,
                |c, e| c.slices.apply(e),
            ),
        ];
        if connection.legacy_endpoints {
            streams.push(watch(
                "endpoints",
                &connection,
                &client,
                &watch_config,
                &caches,
                |c, e| c.endpoints.apply(e),
            ));
        }
        let mut events = futures::stream::select_all(streams);
        let mut answered_once = false;
        let mut failures = 0;
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
                    if in_a_row.is_power_of_two() {
                        let retry = humantime::format_duration(retry).to_string();
                        tracing::warn!(server = %url, resource, %error, failures, %retry, "watch failed; the running configuration stays");
                    }
                    // A server that never answered is left at once; one that did gets a few tries.
                    if (!answered_once || failures >= ERRORS_BEFORE_FAILOVER) && servers.len() > 1 {
                        break;
                    }
                }
            }
        }
        if attempt % servers.len() == servers.len() - 1 {
            tokio::time::sleep(backoff(failures)).await;
        }
        tracing::warn!(server = %url, "moving to the next API server");
    }
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
    connection: &Connection,
    client: &kube::Client,
    config: &watcher::Config,
    caches: &Arc<Mutex<Caches>>,
    apply: fn(&mut Caches, watcher::Event<K>),
) -> BoxStream<'static, Result<bool, Failure>>
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
    let events = watcher(api, config.clone()).boxed();
    futures::stream::unfold(
        (events, 0, Duration::ZERO),
        move |(mut events, mut failures, wait)| {
            let caches = caches.clone();
            async move {
                tokio::time::sleep(wait).await;
                let item = match events.next().await? {
                    Ok(event) => {
                        let event = event.modify(|object| strip(object.meta_mut()));
                        let answered = !matches!(event, watcher::Event::Init);
                        if answered {
                            failures = 0;
                        }
                        apply(&mut caches.lock().unwrap(), event);
                        Ok(answered)
                    }
                    Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                        Err(Failure::Gone { resource })
                    }
                    Err(error) => {
                        failures += 1;
                        Err(Failure::Error {
                            resource,
                            error,
                            failures,
                            retry: retry_delay(failures),
                        })
                    }
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

/// What the render loop keeps between renders.
struct State {
    /// Each guest's last successful output.
    last_good: Vec<Option<Fragment>>,
    /// The fragments of the configuration on disk, once this process installed or found it.
    installed: Option<Vec<Fragment>>,
    reload_pending: bool,
    /// Servers taken out at runtime that still had connections: disabled, to be deleted once
    /// those end. A reload takes them away too.
    draining: BTreeSet<runtime_api::ServerName>,
    /// Objects (or parts of them) left out of the model, as last reported.
    problems: BTreeSet<model::Problem>,
    /// Guest sections left out for a listening address another part holds, as last reported.
    conflicts: BTreeSet<String>,
    status: Arc<Status>,
}

impl State {
    fn render_and_apply(&mut self, pipeline: &Pipeline, objects: &Objects, config: &DaemonConfig) {
        let applier = &config.applier;
        let (services, problems) = model::build(objects, &config.rules);
        self.report_problems(problems);
        let results = pipeline.run(services);
        self.last_good.resize(results.len(), None);
        for (result, last) in results.into_iter().zip(self.last_good.iter_mut()) {
            match result {
                Ok(fragment) => *last = Some(fragment),
                Err(error) => {
                    self.status.guest_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("{error}; keeping its last good output")
                }
            }
        }
        let Some(mut fragments) = self.last_good.iter().cloned().collect::<Option<Vec<_>>>() else {
            tracing::error!("a guest has never rendered successfully: nothing to apply yet");
            return;
        };
        let conflicts = pipeline.claim_listeners(&mut fragments);
        self.report_conflicts(conflicts);
        let status = &self.status;
        let assembled = match pipeline.assemble(&fragments) {
            Ok(assembled) => assembled,
            Err(error) => {
                tracing::error!("{error}; the running configuration stays");
                return;
            }
        };

        let plan = match &self.installed {
            _ if self.reload_pending => {
                Plan::Reload(vec!["the last reload has not succeeded yet".into()])
            }
            Some(installed) => plan::plan(installed, &fragments, MAPS_DIR),
            None => Plan::Reload(vec!["first configuration from this process".into()]),
        };
        let socket = admin_socket(&fragments);
        let draining = std::cell::RefCell::new(self.draining.clone());
        let result = match (&plan, &socket) {
            (Plan::Runtime(ops), Some(socket)) => applier.apply_hitless(&assembled, &|| {
                let busy = runtime_api::apply(socket, ops)?;
                draining.borrow_mut().extend(busy);
                runtime_api::verify(socket, &fragments, MAPS_DIR, &draining.borrow())
            }),
            _ => applier.apply(&assembled),
        };
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed) + 1;
        let reload_failed = matches!(result, Err(crate::apply::ApplyError::Reload(_)));
        match result {
            Ok(Applied::Unchanged) => tracing::debug!("configuration unchanged"),
            Ok(Applied::Runtime) => {
                let changes: Vec<_> = match &plan {
                    Plan::Runtime(ops) => ops.iter().map(Op::to_string).collect(),
                    _ => Vec::new(),
                };
                let total = count(&status.runtime_applies);
                tracing::info!(
                    class = "runtime",
                    ?changes,
                    total,
                    "applied through the Runtime API, without a reload"
                );
                self.set_draining(draining.into_inner());
            }
            Ok(Applied::Reloaded) => {
                let reasons = match (&plan, &socket) {
                    (Plan::Reload(reasons), _) => reasons.clone(),
                    (Plan::Runtime(_), None) => vec![
                        "the configuration has no admin socket (`stats socket PATH` in `global`)"
                            .into(),
                    ],
                    (Plan::Runtime(_), Some(_)) => {
                        count(&status.runtime_fallbacks);
                        vec!["the Runtime API could not make the change".into()]
                    }
                    (Plan::Unchanged, _) => {
                        vec!["the installed configuration was never reloaded".into()]
                    }
                };
                let total = count(&status.reloads);
                tracing::info!(class = "reload", ?reasons, total, "applied by a reload");
                self.set_draining(BTreeSet::new());
            }
            Err(crate::apply::ApplyError::Reload(error)) => {
                count(&status.failed_reloads);
                tracing::error!(%error, "reload failed; retrying with backoff");
            }
            Err(error) => {
                if matches!(error, crate::apply::ApplyError::Check(_)) {
                    count(&status.rejected_configurations);
                }
                tracing::error!(
                    "{error}; the running configuration stays, retried on the next change"
                );
                return;
            }
        }
        self.reload_pending = reload_failed;
        self.status
            .reload_pending
            .store(self.reload_pending, Ordering::Relaxed);
        self.status.installed.store(true, Ordering::Relaxed);
        if !matches!(applier.reload, Reload::MasterSocket(_)) {
            *self.status.haproxy_socket.lock().unwrap() = socket;
        }
        self.installed = Some(fragments);
    }

    /// Log each problem when it starts (or its reason changes), and each object once when it
    /// has none left; count the objects that have one.
    fn report_problems(&mut self, problems: Vec<model::Problem>) {
        let now: BTreeSet<_> = problems.into_iter().collect();
        let objects = |problems: &BTreeSet<model::Problem>| -> BTreeSet<String> {
            problems.iter().map(|p| p.object.clone()).collect()
        };
        model::warn_skipped(&now.difference(&self.problems).cloned().collect::<Vec<_>>());
        let (before, after) = (objects(&self.problems), objects(&now));
        for object in before.difference(&after) {
            tracing::info!(%object, "no longer skipped");
        }
        let count = after.len() as u64;
        self.status.skipped_objects.store(count, Ordering::Relaxed);
        self.problems = now;
    }

    /// Log each listener conflict when it starts, and when it ends.
    fn report_conflicts(&mut self, conflicts: Vec<String>) {
        let now: BTreeSet<_> = conflicts.into_iter().collect();
        for conflict in now.difference(&self.conflicts) {
            tracing::error!("{conflict}");
        }
        for conflict in self.conflicts.difference(&now) {
            tracing::info!(%conflict, "resolved");
        }
        self.conflicts = now;
    }

    /// Retry the pending reload.
    fn retry_reload(&mut self, applier: &Applier) {
        match applier.reload() {
            Ok(()) => {
                self.reload_pending = false;
                self.status.reload_pending.store(false, Ordering::Relaxed);
                self.set_draining(BTreeSet::new());
            }
            Err(error) => {
                self.status.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "reload failed; retrying with backoff");
            }
        }
    }

    fn set_draining(&mut self, draining: BTreeSet<runtime_api::ServerName>) {
        let names: Vec<_> = draining.difference(&self.draining).collect();
        if !names.is_empty() {
            tracing::info!(servers = ?names, "disabled, deleted once their connections end");
        }
        self.status
            .draining_servers
            .store(draining.len() as u64, Ordering::Relaxed);
        self.draining = draining;
    }

    /// Delete the draining servers whose connections have ended.
    fn delete_drained(&mut self) {
        let Some(socket) = self.installed.as_deref().and_then(admin_socket) else {
            return self.set_draining(BTreeSet::new());
        };
        let draining = self
            .draining
            .iter()
            .filter(|(backend, server)| match runtime_api::delete(&socket, backend, server) {
                Ok(true) => {
                    tracing::info!(backend, server, "drained server deleted");
                    false
                }
                Ok(false) => true,
                Err(error) => {
                    tracing::warn!(%error, "cannot delete a drained server; it stays in maintenance until the next reload");
                    false
                }
            })
            .cloned()
            .collect();
        self.set_draining(draining);
    }
}

/// The admin socket the configuration opens: `stats socket PATH ...` in `global`, with an
/// absolute path.
fn admin_socket(fragments: &[Fragment]) -> Option<PathBuf> {
    fragments
        .iter()
        .flat_map(|f| &f.sections)
        .filter(|s| s.kind == SectionKind::Global)
        .flat_map(|s| &s.directives)
        .filter(|d| d.keyword == "stats" && d.args.first().is_some_and(|a| a == "socket"))
        .filter_map(|d| d.args.get(1))
        .map(|path| path.strip_prefix("unix@").unwrap_or(path))
        .find(|path| path.starts_with('/'))
        .map(PathBuf::from)
}
