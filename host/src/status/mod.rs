//! What `wasmconfd run` tells the outside over HTTP (`--status-address`): a status page at `/`
//! ([`page`]) and the same as JSON at `/status`, Prometheus metrics at `/metrics`, liveness at
//! `/healthz`, readiness at `/readyz`, and the services guests fail on at `/quarantined`.
//!
//! Ready means: the first complete list from the Kubernetes API is in, the configuration rendered
//! from it is installed and loaded by HAProxy, HAProxy runs (its master socket, or else the admin
//! socket of the configuration, accepts a connection), and the API answers. When the API stops
//! answering HAProxy keeps serving, but what it serves may be stale, and readiness says so.

pub mod page;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the status page shows beyond the counters and states.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    /// In slot order.
    pub guests: Vec<GuestReport>,
    /// Objects, or parts of them, left out of the model, and why.
    pub skipped: Vec<Skipped>,
    /// The last applies, newest first.
    pub applies: std::collections::VecDeque<ApplyReport>,
}

/// A guest: where it comes from, and its last run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestReport {
    pub slot: String,
    /// `bundled`, a file, or `registry/repository@sha256:...`.
    pub source: String,
    pub digest: String,
    pub signature: String,
    pub world: String,
    /// `compiled` at start, or `cached` precompiled code.
    pub compiled: String,
    /// `platform` or `team`.
    pub trust: String,
    /// Services it received at its last render.
    pub services: usize,
    pub last_run: Option<LastRun>,
}

/// A guest's last run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    /// RFC 3339.
    pub at: String,
    pub seconds: f64,
    /// `ok`, or the error (its last good output is in use).
    pub result: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub object: String,
    pub reason: String,
    /// The whole object; otherwise a part of it.
    pub whole: bool,
}

/// One apply.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyReport {
    /// RFC 3339.
    pub at: String,
    /// `runtime`, `reload`, `rejected` or `failed`.
    pub class: String,
    /// The Runtime API commands, the reasons for a reload, or the error.
    pub details: Vec<String>,
}

/// How many applies the status page keeps.
const APPLIES_KEPT: usize = 20;

/// Now, as RFC 3339 in seconds.
pub fn now_text() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Counters and states, shared by the watchers, the render loop and the HTTP server.
#[derive(Default)]
pub struct Status {
    pub runtime_applies: AtomicU64,
    pub reloads: AtomicU64,
    pub runtime_fallbacks: AtomicU64,
    pub rejected_configurations: AtomicU64,
    pub failed_reloads: AtomicU64,
    pub guest_errors: AtomicU64,
    /// Guest runs; a guest whose input did not change is not run.
    pub guest_renders: AtomicU64,
    pub watch_errors: AtomicU64,
    /// Servers disabled at runtime that wait for their connections to end.
    pub draining_servers: AtomicU64,
    /// Registry guests left out at start (--allow-missing-guests) and not loaded since.
    pub missing_guests: AtomicU64,
    /// Objects with a part (or all) left out of the model at the last render.
    pub skipped_objects: AtomicU64,
    /// Renders held back for removing too much at once.
    pub held_renders: AtomicU64,
    /// Why the current render is held back, while one is.
    pub held: Mutex<Option<String>>,
    /// The operator confirmed the held render (`POST /confirm-removal`).
    pub confirm_removal: AtomicBool,
    /// Services a guest fails on, left out of its input: (guest slot, `namespace/name`, why).
    pub quarantined: Mutex<Vec<(String, String, String)>>,
    /// Where HAProxy answers when it runs: the master socket, or the configuration's admin
    /// socket. Without one, readiness cannot see HAProxy and goes by what was installed.
    pub haproxy_socket: Mutex<Option<PathBuf>>,
    /// The first complete list is in.
    pub synced: AtomicBool,
    /// The last watch request failed and none has succeeded since.
    pub api_failing: AtomicBool,
    /// Installed, but HAProxy has not loaded it yet.
    pub reload_pending: AtomicBool,
    /// Why the last configuration could not be installed or loaded for a reason on this host
    /// (files, commands), and what to change; retried on a timer until it works.
    pub host_problem: Mutex<Option<String>>,
    /// When a configuration was last applied (installed and loaded, or changed through the
    /// Runtime API), in seconds since the Unix epoch; 0 before the first.
    pub last_applied: AtomicU64,
    /// The guests, the objects skipped and the last applies, for `/` and `/status`.
    pub report: Mutex<Report>,
    /// A configuration rendered from the cluster has been installed (and loaded, unless a
    /// reload is pending).
    pub installed: AtomicBool,
    /// The certificates in use: (namespace, secret) -> when it expires (seconds since the Unix
    /// epoch).
    pub certificates: Mutex<std::collections::BTreeMap<(String, String), i64>>,
}

impl Status {
    /// Record an apply for the status page.
    pub fn record_apply(&self, class: &str, details: Vec<String>) {
        let mut report = self.report.lock().unwrap();
        report.applies.push_front(ApplyReport {
            at: now_text(),
            class: class.into(),
            details,
        });
        report.applies.truncate(APPLIES_KEPT);
    }

    /// The certificates of the last render.
    pub fn set_certificates(&self, certificates: &crate::tls::Certificates) {
        *self.certificates.lock().unwrap() = certificates
            .used
            .iter()
            .map(|u| ((u.namespace.clone(), u.secret.clone()), u.pair.not_after))
            .collect();
    }

    /// A configuration was applied now.
    pub fn applied_now(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let now = now.map_or(0, |since| since.as_secs());
        self.last_applied.store(now, Ordering::Relaxed);
    }

    /// Why the daemon is not ready, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        if !self.synced.load(Ordering::Relaxed) {
            Some("waiting for the first complete list from the Kubernetes API".into())
        } else if let Some(problem) = self.host_problem.lock().unwrap().clone() {
            Some(problem)
        } else if !self.installed.load(Ordering::Relaxed) {
            Some("no configuration installed yet".into())
        } else if let Some(error) = self.haproxy_down() {
            Some(error)
        } else if self.reload_pending.load(Ordering::Relaxed) {
            Some("a configuration is installed but HAProxy has not reloaded it yet".into())
        } else if let Some(held) = self.held.lock().unwrap().clone() {
            Some(held)
        } else if self.api_failing.load(Ordering::Relaxed) {
            Some(
                "the Kubernetes API does not answer: HAProxy serves the last configuration, which may be stale".into(),
            )
        } else {
            None
        }
    }

    /// Why HAProxy does not seem to run, if its socket is known and refuses a connection.
    fn haproxy_down(&self) -> Option<String> {
        let socket = self.haproxy_socket.lock().unwrap().clone()?;
        let error = std::os::unix::net::UnixStream::connect(&socket).err()?;
        Some(format!(
            "HAProxy does not answer on {}: {error}; is it running?",
            socket.display()
        ))
    }

    /// The Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        for ((name, kind, help), samples) in METRICS.iter().zip(self.samples()) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }

    /// The samples (labels, value) of each of [`METRICS`], in order.
    fn samples(&self) -> [Vec<(String, f64)>; 21] {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        let flag = |state: &AtomicBool| f64::from(u8::from(state.load(Ordering::Relaxed)));
        let one = |value: f64| vec![(String::new(), value)];
        let report = self.report.lock().unwrap();
        let per_guest = |value: &dyn Fn(&LastRun) -> f64| {
            report
                .guests
                .iter()
                .filter_map(|g| Some((g, g.last_run.as_ref()?)))
                .map(|(g, run)| (format!("{{guest=\"{}\"}}", label(&g.slot)), value(run)))
                .collect()
        };
        let quarantined = self.quarantined.lock().unwrap();
        [
            vec![
                (r#"{class="runtime"}"#.into(), get(&self.runtime_applies)),
                (r#"{class="reload"}"#.into(), get(&self.reloads)),
            ],
            one(get(&self.runtime_fallbacks)),
            one(get(&self.rejected_configurations)),
            one(get(&self.failed_reloads)),
            one(get(&self.guest_errors)),
            one(get(&self.guest_renders)),
            one(get(&self.watch_errors)),
            one(1.0 - flag(&self.api_failing)),
            one(get(&self.draining_servers)),
            one(get(&self.missing_guests)),
            one(get(&self.skipped_objects)),
            one(flag(&self.reload_pending)),
            one(get(&self.held_renders)),
            one(f64::from(u8::from(self.held.lock().unwrap().is_some()))),
            quarantined
                .iter()
                .map(|(guest, object, _)| {
                    let labels = format!(
                        "{{guest=\"{}\",object=\"{}\"}}",
                        label(guest),
                        label(object)
                    );
                    (labels, 1.0)
                })
                .collect(),
            one(f64::from(u8::from(
                self.host_problem.lock().unwrap().is_some(),
            ))),
            one(get(&self.last_applied)),
            vec![(
                format!(
                    "{{version=\"{}\",commit=\"{}\"}}",
                    env!("CARGO_PKG_VERSION"),
                    env!("WASMCONFD_COMMIT")
                ),
                1.0,
            )],
            per_guest(&|run| run.seconds),
            per_guest(&|run| f64::from(u8::from(run.result != "ok"))),
            self.certificates
                .lock()
                .unwrap()
                .iter()
                .map(|((namespace, secret), expiry)| {
                    let labels = format!(
                        "{{namespace=\"{}\",secret=\"{}\"}}",
                        label(namespace),
                        label(secret)
                    );
                    (labels, *expiry as f64)
                })
                .collect(),
        ]
    }

    /// `POST /confirm-removal`: apply the held render at once.
    fn confirm(&self, post: bool) -> (StatusCode, String) {
        if !post {
            return (StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into());
        }
        match self.held.lock().unwrap().as_deref() {
            None => (StatusCode::CONFLICT, "no render is held back\n".into()),
            Some(held) => {
                self.confirm_removal.store(true, Ordering::Relaxed);
                tracing::warn!("the held render was confirmed through /confirm-removal");
                (
                    StatusCode::ACCEPTED,
                    format!("confirmed, applied within a second: {held}\n"),
                )
            }
        }
    }

    /// The `/quarantined` page: one line per service a guest fails on, and why.
    fn quarantined_page(&self) -> String {
        let quarantined = self.quarantined.lock().unwrap();
        if quarantined.is_empty() {
            return "no service is quarantined\n".into();
        }
        quarantined
            .iter()
            .map(|(guest, object, why)| format!("guest {guest}: {object}: {why}\n"))
            .collect()
    }
}

/// `value` as a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Name, type and help of each metric.
const METRICS: [(&str, &str, &str); 21] = [
    (
        "wasmconfd_applies_total",
        "counter",
        "Configuration changes applied, by how: through the Runtime API or by a reload.",
    ),
    (
        "wasmconfd_runtime_fallbacks_total",
        "counter",
        "Changes meant for the Runtime API that were applied by a reload after all.",
    ),
    (
        "wasmconfd_rejected_configurations_total",
        "counter",
        "Rendered configurations that the check command rejected; none was installed.",
    ),
    (
        "wasmconfd_failed_reloads_total",
        "counter",
        "Reload attempts that failed.",
    ),
    (
        "wasmconfd_guest_errors_total",
        "counter",
        "Guest renders that failed; the guest's last good output was used.",
    ),
    (
        "wasmconfd_guest_renders_total",
        "counter",
        "Guest runs. A guest whose input did not change since its last good output is not run again.",
    ),
    (
        "wasmconfd_watch_errors_total",
        "counter",
        "Failed list or watch requests to the Kubernetes API.",
    ),
    (
        "wasmconfd_api_reachable",
        "gauge",
        "1 when the last request to the Kubernetes API succeeded.",
    ),
    (
        "wasmconfd_draining_servers",
        "gauge",
        "Servers removed at runtime that take no new traffic and wait for their connections to end before they are deleted.",
    ),
    (
        "wasmconfd_guests_missing",
        "gauge",
        "Registry guests left out at start because they could not be loaded (--allow-missing-guests), and not loaded since.",
    ),
    (
        "wasmconfd_skipped_objects",
        "gauge",
        "Objects left out of the model at the last render, whole or in part (an endpoint, a port), because they are invalid; the log names each one and why.",
    ),
    (
        "wasmconfd_reload_pending",
        "gauge",
        "1 when the installed configuration still waits for a successful reload.",
    ),
    (
        "wasmconfd_held_renders_total",
        "counter",
        "Times a render was held back because it would remove more than --max-removal of the installed servers or backends at once.",
    ),
    (
        "wasmconfd_removal_held",
        "gauge",
        "1 while a render is held back for removing too much at once; /readyz says until when.",
    ),
    (
        "wasmconfd_quarantined_objects",
        "gauge",
        "Services a guest fails on (a crash, an error, output the policy refuses), left out of that guest's input; /quarantined and the log say why.",
    ),
    (
        "wasmconfd_host_problem",
        "gauge",
        "1 while a configuration cannot be installed or loaded for a reason on this host (a check command that cannot run, a directory it may not write, a failed reload); /readyz says what to change.",
    ),
    (
        "wasmconfd_last_applied_timestamp_seconds",
        "gauge",
        "When a configuration was last applied, through the Runtime API or by a reload (seconds since the Unix epoch; 0 before the first).",
    ),
    (
        "wasmconfd_build_info",
        "gauge",
        "1, with the version and the commit of this build as labels.",
    ),
    (
        "wasmconfd_guest_render_seconds",
        "gauge",
        "How long each guest's last run took: lowering its input, running it, lifting and checking its output (and the renders that found the services it fails on).",
    ),
    (
        "wasmconfd_guest_failing",
        "gauge",
        "1 for a guest whose last run failed; it keeps its last good output.",
    ),
    (
        "wasmconfd_certificate_expiry_seconds",
        "gauge",
        "When each certificate in use (from a TLS Secret) expires, in seconds since the Unix epoch; the log warns 14 days before.",
    ),
];

/// Serve `/metrics`, `/healthz` and `/readyz` on `address` until the process ends.
pub async fn serve(address: std::net::SocketAddr, status: Arc<Status>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving the status page at /, and /status, /metrics, /healthz, /readyz and /quarantined");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            let service = hyper::service::service_fn(move |request| {
                let post = request.method() == hyper::Method::POST;
                let response = answer(&status, post, request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn answer(status: &Status, post: bool, path: &str) -> Response<Full<Bytes>> {
    let (code, body) = match path {
        "/confirm-removal" => status.confirm(post),
        "/" => (StatusCode::OK, page::View::of(status).html()),
        "/status" => (
            StatusCode::OK,
            serde_json::to_string_pretty(&page::View::of(status)).unwrap_or_default() + "\n",
        ),
        "/metrics" => (StatusCode::OK, status.metrics()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/quarantined" => (StatusCode::OK, status.quarantined_page()),
        "/readyz" => match status.not_ready() {
            None => (StatusCode::OK, "ready\n".to_string()),
            Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /, /status, /metrics, /healthz, /readyz, /quarantined or POST \
             /confirm-removal\n"
                .to_string(),
        ),
    };
    let content_type = match path {
        "/metrics" => "text/plain; version=0.0.4",
        "/" => "text/html; charset=utf-8",
        "/status" => "application/json",
        _ => "text/plain",
    };
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_guest_has_its_render_time_and_whether_it_fails() {
        let status = Status::default();
        status.report.lock().unwrap().guests =
            [("20-http", 0.012, "ok"), ("50-team\"a", 0.25, "crashed")]
                .map(|(slot, seconds, result)| GuestReport {
                    slot: slot.into(),
                    source: "bundled".into(),
                    digest: String::new(),
                    signature: String::new(),
                    world: String::new(),
                    compiled: String::new(),
                    trust: "platform".into(),
                    services: 0,
                    last_run: Some(LastRun {
                        at: now_text(),
                        seconds,
                        result: result.into(),
                    }),
                })
                .to_vec();
        let metrics = status.metrics();
        for line in [
            "wasmconfd_guest_render_seconds{guest=\"20-http\"} 0.012\n",
            "wasmconfd_guest_failing{guest=\"20-http\"} 0\n",
            "wasmconfd_guest_render_seconds{guest=\"50-team\\\"a\"} 0.25\n",
            "wasmconfd_guest_failing{guest=\"50-team\\\"a\"} 1\n",
            "wasmconfd_api_reachable 1\n",
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
    }
}
