//! `wasmconfd run`: the daemon.

use super::args::{CheckArgs, GuestArgs, KubernetesArgs, ModelArgs};
use crate::apply::{self, Applier, Reload};
use crate::daemon::DaemonConfig;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use tokio::runtime::Runtime;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file HAProxy runs; map files go into `maps/` beside it.
    #[arg(
        long,
        env = "WASMCONFD_HAPROXY_CONF",
        default_value = "/etc/haproxy/haproxy.cfg",
        value_name = "FILE"
    )]
    pub haproxy_conf: PathBuf,

    #[command(flatten)]
    pub checking: CheckArgs,

    /// How to reload HAProxy.
    #[arg(long, env = "WASMCONFD_RELOAD_METHOD", value_enum, default_value_t = ReloadMethod::Command)]
    pub reload_method: ReloadMethod,

    /// Reload command (run by `sh -c`), for `--reload-method command`.
    #[arg(long, env = "WASMCONFD_RELOAD_CMD", default_value = apply::DEFAULT_RELOAD_COMMAND, value_name = "COMMAND")]
    pub reload_cmd: String,

    /// HAProxy's master CLI socket (`haproxy -W -S PATH`), for `--reload-method master-socket`.
    #[arg(
        long,
        env = "WASMCONFD_MASTER_SOCKET",
        value_name = "PATH",
        required_if_eq("reload_method", "master-socket")
    )]
    pub master_socket: Option<PathBuf>,

    /// HAProxy's pid file (`haproxy -p PATH`), for `--reload-method signal`.
    #[arg(
        long,
        env = "WASMCONFD_PID_FILE",
        value_name = "PATH",
        required_if_eq("reload_method", "signal")
    )]
    pub pid_file: Option<PathBuf>,

    /// Signal that reloads HAProxy, for `--reload-method signal` (USR2 for master-worker).
    #[arg(long, env = "WASMCONFD_RELOAD_SIGNAL", value_enum, default_value_t = apply::Signal::Usr2)]
    pub reload_signal: apply::Signal,

    /// Quiet time after a change before rendering, so a burst of changes renders once.
    #[arg(long, env = "WASMCONFD_DEBOUNCE", default_value = "200ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub debounce: Duration,

    /// Longest time a render waits in a continuous burst of changes.
    #[arg(long, env = "WASMCONFD_MAX_DELAY", default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub max_delay: Duration,

    /// Serve a status page at / (JSON at /status), Prometheus metrics at /metrics, liveness at
    /// /healthz, readiness at /readyz, the quarantined services at /quarantined, and POST
    /// /confirm-removal on this address (e.g.
    /// 0.0.0.0:9180). Ready: synced with the API, the configuration loaded, the API answering,
    /// and no render held back.
    #[arg(long, env = "WASMCONFD_STATUS_ADDRESS", value_name = "ADDRESS:PORT")]
    pub status_address: Option<std::net::SocketAddr>,

    /// Hold back a render that would take away more than this share (in percent) of the
    /// installed backends at once, removing them or all their servers, as an emptied list
    /// after an RBAC or API mistake would; 100 turns the guard off. Scaling a service down is
    /// never held, nor are clusters of fewer than 3 backends.
    #[arg(long, env = "WASMCONFD_MAX_REMOVAL", default_value_t = 50, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub max_removal: u8,

    /// Apply a held render anyway once it has persisted this long (`POST /confirm-removal` on
    /// --status-address applies it at once).
    #[arg(long, env = "WASMCONFD_HOLD_REMOVAL_FOR", default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub hold_removal_for: Duration,

    /// Read `kubernetes.io/tls` Secrets (in --namespace, or all; with --tls-secret-selector's
    /// labels) for services that name one with `wasmconfd.io/tls-secret`. Needs get, list and
    /// watch on secrets: off by default, so that wasmconfd reads no Secret unless told to (see
    /// docs/tls.md).
    #[arg(long, env = "WASMCONFD_TLS_SECRETS")]
    pub tls_secrets: bool,

    /// Publish no Kubernetes Events. By default an object left out of the configuration (an
    /// invalid annotation, a service a guest fails on, a broken TLS Secret) gets a Warning Event
    /// with reason WasmconfdSkipped, so its owners see why in `kubectl describe`; this needs
    /// create and patch on events.k8s.io events.
    #[arg(long, env = "WASMCONFD_NO_EVENTS")]
    pub no_events: bool,

    #[command(flatten)]
    pub kubernetes: KubernetesArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub guests: GuestArgs,
}

impl RunArgs {
    /// The daemon configuration, with the guests from registries fetched.
    pub async fn config(&self) -> anyhow::Result<DaemonConfig> {
        let reload = match self.reload_method {
            ReloadMethod::Command => Reload::Command(self.reload_cmd.clone()),
            ReloadMethod::MasterSocket => {
                Reload::MasterSocket(self.master_socket.clone().unwrap_or_default())
            }
            ReloadMethod::Signal => Reload::Signal {
                pid_file: self.pid_file.clone().unwrap_or_default(),
                signal: self.reload_signal,
            },
        };
        crate::apply::install::refuse_not_a_file(&self.haproxy_conf)?;
        let (guests, remote) = self.guests.config().await?;
        let remote = remote.filter(|_| !guests.missing.is_empty());
        let mut connection = self.kubernetes.connection();
        // Namespace objects are read (and need RBAC) only when a scope selects by their labels.
        connection.namespaces = guests.scopes.values().any(|s| s.namespace_labels.is_some());
        connection.tls_secrets = self.tls_secrets;
        if connection.tls_secret_selector.is_some() && !self.tls_secrets {
            anyhow::bail!(
                "--tls-secret-selector selects the TLS Secrets to read: add --tls-secrets"
            );
        }
        Ok(DaemonConfig {
            connection,
            rules: self.model.rules(),
            default_certificate: self.model.default_certificate(Some(&self.haproxy_conf))?,
            guests,
            remote,
            applier: Applier {
                target: self.haproxy_conf.clone(),
                check_command: self.checking.check_cmd.clone(),
                reload,
                command_timeout: self.checking.command_timeout,
            },
            debounce: self.debounce,
            max_delay: self.max_delay,
            status_address: self.status_address,
            guard: crate::guard::Limits {
                max_removal: self.max_removal,
                hold_for: self.hold_removal_for,
            },
            events: !self.no_events,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReloadMethod {
    /// Run --reload-cmd.
    Command,
    /// `reload` on --master-socket, verified with `show proc`.
    MasterSocket,
    /// Send --reload-signal to the pid in --pid-file.
    Signal,
}

/// `wasmconfd run`.
pub fn run(args: &RunArgs, runtime: &Runtime) -> anyhow::Result<()> {
    runtime.block_on(async { crate::daemon::run(args.config().await?).await })
}
