//! `wasmconfd run`: keep HAProxy in step with the cluster.
//!
//! The watchers ([`crate::source::watch`]) keep a copy of the cluster; a burst of changes is
//! coalesced (debounce, with a maximum delay); then the pipeline renders, and the applier checks,
//! installs and reloads. Nothing is written when the output is unchanged. When the API is
//! unreachable the last configuration keeps serving while the watchers reconnect.

use crate::apply::install::installed as installed_files;
use crate::apply::plan::{self, Op, Plan};
use crate::apply::runtime_api;
use crate::apply::{Applied, Applier, ApplyError, Prepared, Reload};
use crate::assemble::Assembled;
use crate::assemble::{CERTS_DIR, MAPS_DIR};
use crate::fragment::Fragment;
use crate::guard::{Guard, Verdict};
use crate::model;
use crate::render::{GuestConfig, GuestOutput, Pipeline, empty_fragment};
use crate::source::kubernetes::Connection;
use crate::source::watch::{Caches, backoff};
use crate::source::{self, Objects};
use crate::status::Status;
use crate::tls::Certificates;
use anyhow::Context;
use std::collections::BTreeSet;
use std::path::Path;
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
    /// The certificate for names no TLS Secret is for.
    pub default_certificate: Arc<crate::tls::KeyPair>,
    pub guests: GuestConfig,
    /// How to fetch the registry guests that were left out at start, to try them again.
    pub remote: Option<crate::guests::oci::Remote>,
    pub applier: Applier,
    /// Quiet time after a change before rendering.
    pub debounce: Duration,
    /// Longest wait after the first change of a burst.
    pub max_delay: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`.
    pub status_address: Option<std::net::SocketAddr>,
    /// When to hold back a render that removes much at once.
    pub guard: crate::guard::Limits,
    /// Publish Kubernetes Events on the objects left out.
    pub events: bool,
}

/// How often draining servers are checked for their last connection, and a held render for
/// its time or a confirmation.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// The fragments of what is installed are kept for the next start once changes pause this
/// long, or at the latest this long after they changed: writing them (several MB at 10,000
/// services) is not on the path of each change. A start before they are written reloads on its
/// first change, as when they are missing.
const FRAGMENTS_IDLE: Duration = Duration::from_secs(1);
const FRAGMENTS_MAX_AGE: Duration = Duration::from_secs(10);

/// Run until the process is stopped. Watching is async; rendering runs on a thread of its own,
/// outside the async runtime, because WASI calls of a guest (writing to stderr, say) block on a
/// runtime of their own.
pub async fn run(mut config: DaemonConfig) -> anyhow::Result<()> {
    let servers = config.connection.configs().await?;
    let pipeline = Pipeline::new(&config.guests)?;
    let caches = Arc::new(Mutex::new(Caches::default()));
    let status = Arc::new(Status::default());
    let missing = config.guests.missing.len() as u64;
    status.missing_guests.store(missing, Ordering::Relaxed);
    status.report.lock().unwrap().guests = pipeline.reports();
    if let Some(address) = config.status_address {
        crate::status::serve(address, status.clone())
            .await
            .with_context(|| format!("cannot serve status on {address}"))?;
    }
    let events = config.events.then(|| {
        crate::source::events::Events::start(servers.clone(), &tokio::runtime::Handle::current())
    });
    let (changed_tx, changed) = mpsc::sync_channel::<()>(1);
    tokio::spawn(crate::source::watch::watch_all(
        config.connection.clone(),
        servers,
        caches.clone(),
        changed_tx.clone(),
        status.clone(),
    ));
    let (pipelines_tx, pipelines) = mpsc::channel();
    if let Some(remote) = config.remote.take() {
        tokio::spawn(crate::render::load_missing(
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
            let result = render_loop(
                &config, pipeline, &pipelines, &caches, &changed, status, events,
            );
            let _ = done_tx.send(result);
        })?;
    done.await?
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
    events: Option<crate::source::events::Events>,
) -> anyhow::Result<()> {
    while !caches.lock().unwrap().ready(&config.connection) {
        changed.recv().map_err(|_| stopped())?;
    }
    tracing::info!("initial sync done");

    status.synced.store(true, Ordering::Relaxed);
    if let Reload::MasterSocket(socket) = &config.applier.reload {
        *status.haproxy_socket.lock().unwrap() = Some(socket.clone());
    }
    let mut state = State {
        model: model::Model::default(),
        tls: crate::tls::Kept::default(),
        last_good: Vec::new(),
        installed: installed_before(&config.applier, &pipeline),
        reload_pending: false,
        retry_apply: false,
        draining: BTreeSet::new(),
        problems: Vec::new(),
        conflicts: BTreeSet::new(),
        guard: Guard::default(),
        status,
        events,
        fragments_owed: None,
    };
    let mut failures = 0;
    loop {
        // Guests that were missing have loaded: their outputs take their places in the order.
        if let Some(next) = pipelines.try_iter().last() {
            pipeline = next;
            state.last_good.clear();
            state.status.report.lock().unwrap().guests = pipeline.reports();
        }
        let objects = caches.lock().unwrap().objects();
        state.render_and_apply(&pipeline, &objects, config);
        if state.reload_pending || state.retry_apply {
            failures += 1;
            match changed.recv_timeout(backoff(failures)) {
                Ok(()) => {}
                Err(mpsc::RecvTimeoutError::Timeout) if state.reload_pending => {
                    state.retry_reload(&config.applier);
                    if !state.reload_pending {
                        failures = 0;
                    }
                    continue;
                }
                // Render and apply again: the host may have been fixed.
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
            }
        } else {
            failures = 0;
            // The fragments file is written once changes pause.
            let changed_meanwhile = state.fragments_owed.is_some()
                && match changed.recv_timeout(FRAGMENTS_IDLE) {
                    Ok(()) => true,
                    Err(mpsc::RecvTimeoutError::Timeout) => false,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
                };
            if !changed_meanwhile {
                state.remember_installed(&config.applier);
                state.wait_for_change(changed)?;
            }
        }
        coalesce(changed, config.debounce, config.max_delay);
    }
}

fn stopped() -> anyhow::Error {
    anyhow::anyhow!("the watchers stopped")
}

/// `<target>.fragments.json`: the guests' outputs the installed files were assembled from, so
/// that a restarted daemon can make its first change through the Runtime API too.
fn fragments_file(applier: &Applier) -> std::path::PathBuf {
    crate::files::with_suffix(&applier.target, ".fragments.json")
}

/// Keep `fragments`, installed, for the next start. Failing to is not worth failing for: that
/// start reloads instead. Written as serialized, not made in memory first: at 10,000 services
/// it is 4 MB of JSON.
fn write_fragments(applier: &Applier, fragments: &[Fragment]) {
    let path = fragments_file(applier);
    let written = crate::files::write_atomically_with(&path, |file| {
        serde_json::to_writer(file, fragments).map_err(std::io::Error::from)
    });
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot keep the installed fragments; the next start reloads");
    }
}

/// The fragments a previous run installed, when they assemble, with this pipeline, to exactly
/// the files on disk and HAProxy loaded those: then the first change after a restart can be
/// made through the Runtime API instead of a reload.
fn installed_before(applier: &Applier, pipeline: &Pipeline) -> Option<Vec<Fragment>> {
    let json = std::fs::read(fragments_file(applier)).ok()?;
    let fragments: Vec<Fragment> = serde_json::from_slice(&json).ok()?;
    if fragments.len() != pipeline.guest_count() {
        return None;
    }
    let assembled = pipeline.assemble(&fragments).ok()?;
    let loaded = applier.holds_config(&assembled) && !applier.reload_pending();
    if loaded {
        tracing::info!(
            "the installed configuration is the one the last run left: changes to its servers need no reload"
        );
    }
    loaded.then_some(fragments)
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

/// What the render loop keeps between renders.
struct State {
    /// The model, converted again only where objects changed.
    model: model::Model,
    /// The certificates, read again only where Secrets changed.
    tls: crate::tls::Kept,
    /// Each guest's last successful output.
    last_good: Vec<Option<Fragment>>,
    /// The fragments of the configuration on disk, once this process installed or found it.
    installed: Option<Vec<Fragment>>,
    reload_pending: bool,
    /// The last configuration failed to install for a reason on this host: tried again on a
    /// timer, not only on the next change of the cluster.
    retry_apply: bool,
    /// Servers taken out at runtime that still had connections: disabled, to be deleted once
    /// those end. A reload takes them away too.
    draining: BTreeSet<runtime_api::ServerName>,
    /// Objects (or parts of them) left out of the model, as last reported.
    problems: Vec<source::Problem>,
    /// Guest sections and map files left out for a claim another part holds, and domains left
    /// out for a guest, as last reported.
    conflicts: BTreeSet<String>,
    guard: Guard,
    status: Arc<Status>,
    /// Where Events on the objects left out go, unless `--no-events`.
    events: Option<crate::source::events::Events>,
    /// Since when the fragments file is behind what is installed.
    fragments_owed: Option<Instant>,
}

impl State {
    /// Write the fragments file, if it is behind.
    fn remember_installed(&mut self, applier: &Applier) {
        if let (Some(_), Some(installed)) = (self.fragments_owed.take(), &self.installed) {
            write_fragments(applier, installed);
        }
    }

    fn render_and_apply(&mut self, pipeline: &Pipeline, objects: &Objects, config: &DaemonConfig) {
        let Some((fragments, certificates)) = self.render(pipeline, objects, config) else {
            return;
        };
        if !self.guarded(&fragments, config.guard) {
            return;
        }
        let assembled = match pipeline.assemble(&fragments) {
            Ok(assembled) => assembled.with_certificates(&certificates),
            Err(error) => {
                tracing::error!("{error}; the running configuration stays");
                return;
            }
        };
        let plan = match &self.installed {
            _ if self.reload_pending => {
                Plan::Reload(vec!["the last reload has not succeeded yet".into()])
            }
            Some(installed) => {
                let certs = installed_files(&config.applier.target, CERTS_DIR);
                plan::plan(installed, &fragments, MAPS_DIR)
                    .with_certificates(plan::certificates(&certs, &assembled.certs))
            }
            None => Plan::Reload(vec!["first configuration from this process".into()]),
        };
        let socket = runtime_api::admin_socket(&fragments);
        let result = self.apply(
            &config.applier,
            &assembled,
            &plan,
            socket.as_deref(),
            &fragments,
        );
        let reload_failed = matches!(result, Err(ApplyError::Reload(_)));
        if matches!(result, Ok(Applied::Runtime | Applied::Reloaded)) {
            self.status.applied_now();
        }
        if !self.report(result, &plan, socket.is_some(), &config.applier) {
            return;
        }
        self.reload_pending = reload_failed;
        self.status
            .reload_pending
            .store(self.reload_pending, Ordering::Relaxed);
        self.status.installed.store(true, Ordering::Relaxed);
        if !matches!(config.applier.reload, Reload::MasterSocket(_)) {
            *self.status.haproxy_socket.lock().unwrap() = socket;
        }
        self.installed = Some(fragments);
        let owed = *self.fragments_owed.get_or_insert_with(Instant::now);
        if owed.elapsed() >= FRAGMENTS_MAX_AGE {
            self.remember_installed(&config.applier);
        }
    }

    /// Run the guests on the model of `objects`, keeping each one's last good output. Once
    /// every guest has rendered, their outputs, with each listening address given to one owner,
    /// and the certificates.
    fn render(
        &mut self,
        pipeline: &Pipeline,
        objects: &Objects,
        config: &DaemonConfig,
    ) -> Option<(Vec<Fragment>, Certificates)> {
        let (services, mut problems) = self.model.build(objects, &config.rules);
        let (certificates, tls_problems) = self.tls.build(
            &objects.secrets,
            &services,
            &config.default_certificate,
            crate::tls::now(),
        );
        problems.extend(tls_problems);
        self.report_problems(problems, objects);
        self.status.set_certificates(&certificates);
        let renders = pipeline.renders();
        let run = pipeline.run(&services, &model::namespace_labels(objects), &certificates);
        let ran = pipeline.renders() - renders;
        self.status.guest_renders.fetch_add(ran, Ordering::Relaxed);
        self.report_quarantined(&run.outputs, objects);
        let mut report = self.status.report.lock().unwrap();
        for output in &run.outputs {
            let Some(guest) = report.guests.iter_mut().find(|g| g.slot == output.slot) else {
                continue;
            };
            guest.services = output.services;
            if let Some(took) = output.took {
                guest.last_run = Some(crate::status::LastRun {
                    at: crate::status::now_text(),
                    seconds: took.as_secs_f64(),
                    result: match &output.result {
                        Ok(_) => "ok".into(),
                        Err(error) => format!("{error}; its last good output is in use"),
                    },
                });
            }
        }
        drop(report);
        self.last_good.resize(run.outputs.len(), None);
        let mut fragments = Vec::new();
        for (output, last) in run.outputs.into_iter().zip(self.last_good.iter_mut()) {
            match output.result {
                Ok(fragment) => *last = Some(fragment),
                Err(error) => {
                    self.status.guest_errors.fetch_add(1, Ordering::Relaxed);
                    match (&last, output.team) {
                        (Some(_), _) => tracing::error!("{error}; keeping its last good output"),
                        (None, true) => tracing::error!("{error}; the team guest is left out"),
                        (None, false) => {
                            tracing::error!(
                                "{error}; a platform guest has never rendered successfully: \
                                 nothing to apply yet"
                            );
                            return None;
                        }
                    }
                }
            }
            fragments.push(last.clone().unwrap_or_else(empty_fragment));
        }
        let mut conflicts = run.conflicts;
        conflicts.extend(pipeline.claim(&mut fragments));
        self.report_conflicts(conflicts);
        Some((fragments, certificates))
    }

    /// Whether `fragments` may be applied over the installed configuration: not when they
    /// remove too much at once, until that has persisted or the operator confirms.
    fn guarded(&mut self, fragments: &[Fragment], limits: crate::guard::Limits) -> bool {
        let Some(installed) = &self.installed else {
            return true;
        };
        let confirmed = self.status.confirm_removal.swap(false, Ordering::Relaxed);
        let was_holding = self.guard.holding();
        let verdict = self
            .guard
            .judge(limits, installed, fragments, Instant::now(), confirmed);
        let mut held = self.status.held.lock().unwrap();
        match verdict {
            Verdict::Apply => {
                if was_holding {
                    tracing::info!(
                        "the cluster no longer removes too much at once: nothing is held"
                    );
                }
                *held = None;
                true
            }
            Verdict::Released(removal) => {
                let why = if confirmed {
                    "confirmed"
                } else {
                    "it persisted"
                };
                tracing::warn!(removal, "applying the held render: {why}");
                *held = None;
                true
            }
            Verdict::Held(removal, since) => {
                let left = limits.hold_for.saturating_sub(since.elapsed());
                let reason = format!(
                    "a render that takes away {removal}, removing them or all their servers, is \
                     held back (--max-removal {}%): it applies in {} if the cluster stays so, \
                     or at once on POST /confirm-removal",
                    limits.max_removal,
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                );
                if !was_holding {
                    self.status.held_renders.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("{reason}");
                }
                *held = Some(reason);
                false
            }
        }
    }

    /// Make the change through the Runtime API when `plan` allows it, then check and install
    /// `assembled`; otherwise check, install and reload.
    fn apply(
        &mut self,
        applier: &Applier,
        assembled: &Assembled,
        plan: &Plan,
        socket: Option<&Path>,
        fragments: &[Fragment],
    ) -> Result<Applied, ApplyError> {
        // Servers and map entries only: HAProxy gets the change first, through its Runtime API;
        // the files follow, checked, so neither the check nor the write delays traffic, and the
        // file on disk stays one HAProxy accepts (see docs/hitless.md).
        if let (Plan::Runtime(ops), Some(socket)) = (plan, socket)
            && !applier.reload_pending()
            && self.change_at_runtime(socket, ops, fragments)
        {
            return match applier.prepare(assembled) {
                Ok(Prepared::Staged(staged)) => applier.install(staged, true),
                Ok(Prepared::Unchanged | Prepared::ReloadOwed) => Ok(Applied::Runtime),
                Err(error) => {
                    tracing::error!(
                        "HAProxy has the change through its Runtime API, but the files were \
                         not updated: {error}"
                    );
                    Ok(Applied::Runtime)
                }
            };
        }
        if matches!(plan, Plan::Runtime(_)) && applier.reload_pending() {
            tracing::info!("a reload is pending, so the change is made by reloading");
        }
        match applier.prepare(assembled)? {
            Prepared::Unchanged => Ok(Applied::Unchanged),
            Prepared::ReloadOwed => applier.reload().map(|()| Applied::Reloaded),
            Prepared::Staged(staged) => applier.install(staged, false),
        }
    }

    /// Make `ops` through the Runtime API on `socket` and read back that HAProxy holds
    /// `fragments`' servers and map entries. Servers with connections left drain.
    fn change_at_runtime(&mut self, socket: &Path, ops: &[Op], fragments: &[Fragment]) -> bool {
        let mut draining = self.draining.clone();
        let changed = runtime_api::apply(socket, ops).and_then(|busy| {
            draining.extend(busy);
            runtime_api::verify(socket, fragments, MAPS_DIR, &draining)
        });
        match changed {
            Ok(()) => {
                self.set_draining(draining);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "the Runtime API did not make the change; reloading instead");
                false
            }
        }
    }

    /// Log and count what applying did; whether a configuration is now installed. A failure
    /// on this host is published for `/readyz` with what to change, and retried on a timer.
    fn report(
        &mut self,
        result: Result<Applied, ApplyError>,
        plan: &Plan,
        socket: bool,
        applier: &Applier,
    ) -> bool {
        let status = self.status.clone();
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed) + 1;
        let host_fix = result.as_ref().err().and_then(|e| e.host_fix(applier));
        let host_problem = result.as_ref().err().and_then(|e| e.host_problem(applier));
        self.retry_apply = host_fix.is_some() && !matches!(result, Err(ApplyError::Reload(_)));
        *status.host_problem.lock().unwrap() = host_problem.clone();
        match result {
            Ok(Applied::Unchanged) => tracing::debug!("configuration unchanged"),
            Ok(Applied::Runtime) => {
                let changes: Vec<_> = match plan {
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
                status.record_apply("runtime", changes);
            }
            Ok(Applied::Reloaded) => {
                let reasons = match (plan, socket) {
                    (Plan::Reload(reasons), _) => reasons.clone(),
                    (Plan::Runtime(_), false) => vec![
                        "the configuration has no admin socket (`stats socket PATH` in `global`)"
                            .into(),
                    ],
                    (Plan::Runtime(_), true) => {
                        count(&status.runtime_fallbacks);
                        vec!["the Runtime API could not make the change".into()]
                    }
                    (Plan::Unchanged, _) => {
                        vec!["the installed configuration was never reloaded".into()]
                    }
                };
                let total = count(&status.reloads);
                tracing::info!(class = "reload", ?reasons, total, "applied by a reload");
                status.record_apply("reload", reasons);
                self.set_draining(BTreeSet::new());
            }
            Err(ApplyError::Reload(_)) => {
                count(&status.failed_reloads);
                let problem = host_problem.unwrap_or_default();
                tracing::error!("{problem}; retrying with backoff");
                status.record_apply("failed", vec![problem]);
            }
            Err(error) => {
                let class = if host_fix.is_some() {
                    "failed"
                } else {
                    "rejected"
                };
                match host_fix {
                    Some(fix) => tracing::error!(
                        "{error}; the running configuration stays: {fix}; retrying with backoff"
                    ),
                    None => {
                        count(&status.rejected_configurations);
                        tracing::error!(
                            "{error}; the running configuration stays, retried on the next change"
                        );
                    }
                }
                status.record_apply(class, vec![error.to_string()]);
                return false;
            }
        }
        true
    }

    /// Log each problem when it starts (or its reason changes), and each object once when it
    /// has none left; count the objects that have one.
    /// Each new problem also becomes an Event on its object.
    fn report_problems(&mut self, problems: Vec<source::Problem>, cluster: &Objects) {
        // Most changes leave every problem as it was, and they come in the same order: at
        // 50,000 services with thousands of problems, sorting them at each change was a fifth
        // of its CPU.
        if problems == self.problems {
            return;
        }
        let before: BTreeSet<_> = self.problems.iter().collect();
        let now: BTreeSet<_> = problems.iter().collect();
        fn objects<'a>(problems: &BTreeSet<&'a source::Problem>) -> BTreeSet<&'a str> {
            problems.iter().map(|p| p.object.as_str()).collect()
        }
        let new: Vec<_> = now.difference(&before).map(|&p| p.clone()).collect();
        source::warn_skipped(&new);
        self.publish_events(
            cluster,
            new.iter().map(|p| {
                let skipped = if p.whole { "left out: " } else { "" };
                (p.object.clone(), format!("{skipped}{}", p.reason))
            }),
        );
        let after = objects(&now);
        for object in objects(&before).difference(&after) {
            tracing::info!(%object, "no longer skipped");
        }
        let count = after.len() as u64;
        self.status.skipped_objects.store(count, Ordering::Relaxed);
        self.status.report.lock().unwrap().skipped = now
            .iter()
            .map(|p| crate::status::Skipped {
                object: p.object.clone(),
                reason: p.reason.clone(),
                whole: p.whole,
            })
            .collect();
        self.problems = problems;
    }

    /// Publish an Event for each of `events` (object, message), at most
    /// [`PER_RENDER`](crate::source::events::PER_RENDER).
    fn publish_events(&self, cluster: &Objects, events: impl Iterator<Item = (String, String)>) {
        let Some(publisher) = &self.events else {
            return;
        };
        let limit = crate::source::events::PER_RENDER;
        let mut left_out = 0;
        for (i, (object, note)) in events.enumerate() {
            if i < limit {
                publisher.publish(cluster, &object, &note);
            } else {
                left_out += 1;
            }
        }
        if left_out > 0 {
            tracing::info!(
                left_out,
                "more objects left out than Events published at once ({limit}): the log names them all"
            );
        }
    }

    /// Log each quarantined service when it is first quarantined and when it is released, and
    /// publish the list; each newly quarantined service also gets an Event.
    fn report_quarantined(&mut self, outputs: &[GuestOutput], cluster: &Objects) {
        let now: Vec<(String, String, String)> = outputs
            .iter()
            .flat_map(|output| {
                let slot = &output.slot;
                output
                    .quarantined
                    .iter()
                    .map(move |(object, why)| (slot.clone(), object.clone(), why.clone()))
            })
            .collect();
        let mut published = self.status.quarantined.lock().unwrap();
        let key = |(guest, object, _): &(String, String, String)| (guest.clone(), object.clone());
        let before: BTreeSet<_> = published.iter().map(key).collect();
        let after: BTreeSet<_> = now.iter().map(key).collect();
        let new: Vec<_> = now.iter().filter(|e| !before.contains(&key(e))).collect();
        for (guest, object, why) in &new {
            tracing::warn!(
                guest,
                object,
                "quarantined: the guest renders without it: {why}"
            );
        }
        for (guest, object) in before.difference(&after) {
            tracing::info!(guest, object, "no longer quarantined");
        }
        let events: Vec<_> = new
            .iter()
            .map(|(guest, object, why)| {
                let note = format!("guest {guest} fails on it, and renders without it: {why}");
                (format!("Service {object}"), note)
            })
            .collect();
        *published = now;
        drop(published);
        self.publish_events(cluster, events.into_iter());
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

    /// Wait for a change; meanwhile, delete the servers that have drained, and while a render
    /// is held, come back every second to see whether it is due or confirmed.
    fn wait_for_change(&mut self, changed: &mpsc::Receiver<()>) -> anyhow::Result<()> {
        loop {
            if self.draining.is_empty() && !self.guard.holding() {
                return changed.recv().map_err(|_| stopped());
            }
            match changed.recv_timeout(DRAIN_CHECK) {
                Ok(()) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout) if self.guard.holding() => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout) => self.delete_drained(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped()),
            }
        }
    }

    /// Retry the pending reload.
    fn retry_reload(&mut self, applier: &Applier) {
        let problem = match applier.reload() {
            Ok(()) => {
                self.status.applied_now();
                self.status.record_apply(
                    "reload",
                    vec!["a reload that had failed, tried again".into()],
                );
                self.reload_pending = false;
                self.status.reload_pending.store(false, Ordering::Relaxed);
                self.set_draining(BTreeSet::new());
                None
            }
            Err(error) => {
                self.status.failed_reloads.fetch_add(1, Ordering::Relaxed);
                let problem = error.host_problem(applier).unwrap_or_default();
                tracing::error!("{problem}; retrying with backoff");
                Some(problem)
            }
        };
        *self.status.host_problem.lock().unwrap() = problem;
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
        let socket = self
            .installed
            .as_deref()
            .and_then(runtime_api::admin_socket);
        let left = match socket {
            Some(socket) => runtime_api::delete_drained(&socket, &self.draining),
            None => BTreeSet::new(),
        };
        self.set_draining(left);
    }
}
