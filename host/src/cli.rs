//! The command line. Every flag also reads a `WASMCONFD_*` environment variable; flags win.

use crate::apply::check;
use crate::apply::{self, Applier, Reload};
use crate::daemon::DaemonConfig;
use crate::guests::Limits;
use crate::render::{GuestConfig, Pipeline, Settings};
use crate::source::kubernetes::Connection;
use crate::{model, source};
use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Keep HAProxy in front of Kubernetes configured by sandboxed WebAssembly guests.
#[derive(Debug, Parser)]
#[command(name = "wasmconfd", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(long, global = true, env = "WASMCONFD_LOG", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, global = true, env = "WASMCONFD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render a configuration once from a snapshot of the cluster.
    ///
    /// Prints the configuration, or writes it and its map files (into `maps/` beside it) with
    /// --output. Invalid objects in the snapshot are skipped with a warning that names them.
    Render(RenderArgs),
    /// Save the objects wasmconfd reads from Kubernetes to a file that `render --cluster` reads,
    /// so any render can be reproduced offline.
    Snapshot(SnapshotArgs),
    /// Keep HAProxy in step with the cluster: watch, render on each change, check, install
    /// atomically and reload. Unchanged output writes and reloads nothing; a configuration
    /// HAProxy rejects never replaces the running one.
    Run(Box<RunArgs>),
    /// Work with guests.
    Guest {
        #[command(subcommand)]
        command: GuestCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Start a new guest project that builds as it is and passes its own test.
    ///
    /// The project routes services with proto NAME by Host header to their ready endpoints. It
    /// has a build.sh, and a test.sh that builds the guest, renders a sample cluster through
    /// wasmconfd and compares the output with test/expected.cfg (`./test.sh --update` accepts
    /// a new output). See docs/guests.md.
    New(NewGuestArgs),
    /// Push a guest component to an OCI registry as a Wasm artifact (config
    /// application/vnd.wasm.config.v0+json, one application/wasm layer). Prints its digest.
    Push(PushArgs),
    /// Pull a guest from an OCI registry: resolve the tag to a digest once, check that a
    /// trusted key signed that digest, then pull the manifest and the component by that digest
    /// and check both digests.
    Pull(PullArgs),
    /// Sign a guest in an OCI registry, cosign-compatibly (a simple-signing payload under the
    /// tag sha256-<hex>.sig), with an ECDSA P-256 key in PEM.
    Sign(SignArgs),
    /// Check that a guest in an OCI registry is signed by one of the given keys.
    Verify(VerifyArgs),
    /// Say what a guest is, from a file or a registry, without running it: its digest and
    /// size, the world it was built for and whether this wasmconfd loads it, what it imports
    /// and exports, and (from a registry) whether it is signed and by which key.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A component file, or oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST).
    pub guest: String,
    /// Public keys (PEM) to check a registry guest's signatures against; repeat for more.
    #[arg(
        long = "trusted-key",
        visible_alias = "key",
        env = "WASMCONFD_TRUSTED_KEYS",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub keys: Vec<PathBuf>,
    /// Where compiled guests are cached [default: $XDG_CACHE_HOME/wasmconfd or ~/.cache/wasmconfd].
    #[arg(long, env = "WASMCONFD_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The signing key: ECDSA P-256 in PEM (`openssl ecparam -name prime256v1 -genkey -noout`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// oci://REGISTRY/REPOSITORY:TAG or @sha256:DIGEST; a tag is resolved to its digest now.
    pub reference: crate::guests::oci::GuestRef,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// oci://REGISTRY/REPOSITORY:TAG or @sha256:DIGEST.
    pub reference: crate::guests::oci::GuestRef,
    /// A public key (PEM, such as cosign.pub) whose signature counts; repeat for more.
    #[arg(
        long = "key",
        visible_alias = "trusted-key",
        env = "WASMCONFD_TRUSTED_KEYS",
        value_delimiter = ',',
        value_name = "FILE",
        required = true
    )]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Which signatures count.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// A public key (PEM, such as cosign.pub) whose signatures are trusted; repeat for more.
    #[arg(
        long = "trusted-key",
        env = "WASMCONFD_TRUSTED_KEYS",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub trusted_keys: Vec<PathBuf>,
    /// Load guests that carry no trusted signature. Only for development.
    #[arg(long, env = "WASMCONFD_INSECURE_ALLOW_UNSIGNED")]
    pub insecure_allow_unsigned: bool,
}

fn read_public_keys(files: &[PathBuf]) -> anyhow::Result<Vec<p256::ecdsa::VerifyingKey>> {
    files
        .iter()
        .map(|file| crate::guests::oci::read_public_key(file))
        .collect()
}

impl TrustArgs {
    fn trust(&self) -> anyhow::Result<crate::guests::oci::Trust> {
        Ok(crate::guests::oci::Trust {
            keys: read_public_keys(&self.trusted_keys)?,
            allow_unsigned: self.insecure_allow_unsigned,
        })
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The component to push.
    pub file: PathBuf,
    /// Where to: oci://REGISTRY/REPOSITORY:TAG.
    pub reference: crate::guests::oci::GuestRef,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// oci://REGISTRY/REPOSITORY:TAG, @sha256:DIGEST, or both.
    pub reference: crate::guests::oci::GuestRef,
    /// Write the component here.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Where pulled guests are kept (in `oci/`), content-addressed, with their verified
    /// signatures [default: $XDG_CACHE_HOME/wasmconfd or ~/.cache/wasmconfd].
    #[arg(long, env = "WASMCONFD_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach OCI registries.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// User for basic auth, for every registry.
    #[arg(long, env = "WASMCONFD_REGISTRY_USER", requires = "registry_password")]
    pub registry_user: Option<String>,
    /// Password for basic auth.
    #[arg(long, env = "WASMCONFD_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
    /// Credentials per registry from a docker config.json (as `docker login` writes it, or the
    /// `.dockerconfigjson` of a Kubernetes image pull Secret). --registry-user, when given, wins
    /// [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json, if there is one].
    #[arg(long, env = "WASMCONFD_REGISTRY_AUTH_FILE", value_name = "FILE")]
    pub registry_auth_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for registries, besides the system's.
    #[arg(long, env = "WASMCONFD_REGISTRY_CA", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Speak plain HTTP to this registry (host[:port]); only for tests and labs.
    #[arg(long, env = "WASMCONFD_PLAIN_HTTP_REGISTRY", value_name = "HOST")]
    pub plain_http_registry: Vec<String>,
    /// Limit on connecting to a registry (TCP and TLS).
    #[arg(long, env = "WASMCONFD_REGISTRY_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub registry_connect_timeout: Duration,
    /// Limit on waiting for the next bytes of a registry's answer.
    #[arg(long, env = "WASMCONFD_REGISTRY_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub registry_read_timeout: Duration,
    /// Limit on each request to a registry as a whole (resolving a tag, reading signatures,
    /// pulling a guest). A guest whose registry does not answer in time comes from the cache,
    /// or is not loaded.
    #[arg(long, env = "WASMCONFD_REGISTRY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub registry_timeout: Duration,
    /// Largest guest component pulled from a registry, in MiB. A larger one is refused before
    /// it is downloaded, and a registry that sends more bytes than the manifest names is cut off.
    #[arg(
        long,
        env = "WASMCONFD_MAX_GUEST_SIZE_MIB",
        default_value_t = 64,
        value_name = "MIB"
    )]
    pub max_guest_size_mib: u64,
}

impl RegistryArgs {
    fn access(&self) -> anyhow::Result<crate::guests::oci::RegistryAccess> {
        let auth_file = self.registry_auth_file.clone().or_else(|| {
            let dir = std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker"))
                })?;
            Some(dir.join("config.json")).filter(|file| file.exists())
        });
        Ok(crate::guests::oci::RegistryAccess {
            credentials: self
                .registry_user
                .clone()
                .zip(self.registry_password.clone()),
            logins: match auth_file {
                Some(file) => crate::guests::oci::read_logins(&file)?,
                None => Default::default(),
            },
            ca_files: self.registry_ca.clone(),
            plain_http: self.plain_http_registry.clone(),
            limits: crate::guests::oci::RegistryLimits {
                connect_timeout: self.registry_connect_timeout,
                read_timeout: self.registry_read_timeout,
                timeout: self.registry_timeout,
                max_guest_size: self.max_guest_size_mib << 20,
            },
        })
    }
}

/// `wasmconfd guest push`.
pub fn push_guest(args: &PushArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    let digest = tokio::runtime::Runtime::new()?.block_on(registry.push(&wasm, &args.reference))?;
    println!("{}", args.reference.at(&digest));
    Ok(())
}

/// `wasmconfd guest pull`.
pub fn pull_guest(args: &PullArgs) -> anyhow::Result<()> {
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    let trust = args.trust.trust()?;
    let cache = crate::guests::oci::Cache::new(oci_cache_dir(args.cache_dir.clone())?);
    let (digest, wasm) = tokio::runtime::Runtime::new()?.block_on(crate::guests::oci::fetch(
        &args.reference,
        &registry,
        &trust,
        &cache,
    ))?;
    println!("{}", args.reference.at(&digest));
    if let Some(output) = &args.output {
        crate::files::write_atomically(output, &wasm)
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    Ok(())
}

/// Where pulled guests are kept: `oci/` in the cache directory.
fn oci_cache_dir(cache_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = cache_dir
        .or_else(default_cache_dir)
        .context("no cache directory: pass --cache-dir")?;
    Ok(dir.join("oci"))
}

#[derive(Debug, Args)]
pub struct NewGuestArgs {
    /// The guest's name, which is also the proto of the services it serves: a lower-case word
    /// such as `grpc` or `team-routes`.
    pub name: String,

    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: crate::scaffold::Language,

    /// Where to create the project (default: ./NAME). Must not exist, or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// The Rust guest SDK (guest-sdk/ of a wasmconfd checkout), for --lang rust. Default: the
    /// checkout this binary was built from.
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
}

/// `wasmconfd guest new`.
pub fn new_guest(args: &NewGuestArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    crate::scaffold::create(&args.name, args.lang, &dir, args.sdk.as_deref())?;
    println!(
        "Created the {} guest {} in {}.\nNext: cd {} && ./test.sh",
        format!("{:?}", args.lang).to_lowercase(),
        args.name,
        dir.display(),
        dir.display()
    );
    Ok(())
}

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

    /// Check command; the path of the file to check is appended.
    #[arg(long, env = "WASMCONFD_CHECK_CMD", default_value = check::DEFAULT_CHECK_COMMAND, value_name = "COMMAND")]
    pub check_cmd: String,

    /// Time the check command, and a reload command, may take before they are killed (with
    /// every process they started) and count as failed.
    #[arg(long, env = "WASMCONFD_COMMAND_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub command_timeout: Duration,

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

    /// Serve Prometheus metrics at /metrics, liveness at /healthz and readiness at /readyz on
    /// this address (e.g. 0.0.0.0:9180). Ready: synced with the API, the configuration loaded,
    /// and the API answering.
    #[arg(long, env = "WASMCONFD_STATUS_ADDRESS", value_name = "ADDRESS:PORT")]
    pub status_address: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub kubernetes: KubernetesArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub guests: GuestArgs,
}

/// What the model accepts from the cluster.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The ports a service may ask to be exposed on with `wasmconfd.io/listen-port`, LOW-HIGH.
    /// A service asking for another is skipped with a warning. The default keeps the ports
    /// below 1024 (80, 443, 22, ...) for the proxy's own frontends and the node.
    #[arg(long, env = "WASMCONFD_LISTEN_PORTS", default_value = "1024-65535", value_parser = parse_port_range, value_name = "LOW-HIGH")]
    pub listen_ports: std::ops::RangeInclusive<u16>,

    /// Accept endpoint addresses in 127.0.0.0/8 and ::1. Off by default: such an endpoint would
    /// send a service's traffic to the proxy node itself (Kubernetes refuses them in Endpoints
    /// for the same reason). For development and tests on one machine.
    #[arg(long, env = "WASMCONFD_ALLOW_LOOPBACK_ENDPOINTS")]
    pub allow_loopback_endpoints: bool,
}

impl ModelArgs {
    pub fn rules(&self) -> model::Rules {
        model::Rules {
            listen_ports: self.listen_ports.clone(),
            allow_loopback: self.allow_loopback_endpoints,
        }
    }
}

fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let invalid = || format!("{text:?} is not a port range LOW-HIGH, such as 1024-65535");
    let (low, high) = text.split_once('-').ok_or_else(invalid)?;
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    match (port(low), port(high)) {
        (Some(low), Some(high)) if low <= high => Ok(low..=high),
        _ => Err(invalid()),
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

impl RunArgs {
    /// The daemon configuration, with the guests from registries fetched.
    pub fn config(&self) -> anyhow::Result<DaemonConfig> {
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
        crate::apply::install::refuse_symlink(&self.haproxy_conf)?;
        let (guests, remote) = self.guests.config()?;
        let remote = remote.filter(|_| !guests.missing.is_empty());
        Ok(DaemonConfig {
            connection: self.kubernetes.connection(),
            rules: self.model.rules(),
            guests,
            remote,
            applier: Applier {
                target: self.haproxy_conf.clone(),
                check_command: self.check_cmd.clone(),
                reload,
                command_timeout: self.command_timeout,
            },
            debounce: self.debounce,
            max_delay: self.max_delay,
            status_address: self.status_address,
        })
    }
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Write the snapshot to FILE (atomically) instead of printing it.
    #[arg(long, short, env = "WASMCONFD_OUTPUT", value_name = "FILE")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
}

/// How to reach the Kubernetes API, and what to read from it.
#[derive(Debug, Args)]
pub struct KubernetesArgs {
    /// API server URLs, tried in order, e.g. `https://10.0.0.1:6443,https://10.0.0.2:6443`.
    /// Without them: the kubeconfig (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`), else the
    /// in-cluster service account.
    #[arg(
        long,
        env = "WASMCONFD_API_SERVERS",
        value_delimiter = ',',
        value_name = "URL,..."
    )]
    pub api_servers: Vec<String>,

    /// Kubeconfig file.
    #[arg(
        long,
        env = "WASMCONFD_KUBECONFIG",
        value_name = "FILE",
        conflicts_with = "api_servers"
    )]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context [default: the current context].
    #[arg(
        long,
        env = "WASMCONFD_CONTEXT",
        value_name = "NAME",
        conflicts_with = "api_servers"
    )]
    pub context: Option<String>,

    /// CA certificates (PEM) that signed the API servers' certificates (with --api-servers).
    #[arg(
        long,
        env = "WASMCONFD_SSL_CA",
        value_name = "FILE",
        requires = "api_servers"
    )]
    pub ssl_ca: Option<PathBuf>,

    /// Client certificate (PEM) (with --api-servers).
    #[arg(long, env = "WASMCONFD_SSL_CERT", value_name = "FILE", requires_all = ["api_servers", "ssl_key"])]
    pub ssl_cert: Option<PathBuf>,

    /// Client key (PEM) (with --api-servers).
    #[arg(long, env = "WASMCONFD_SSL_KEY", value_name = "FILE", requires_all = ["api_servers", "ssl_cert"])]
    pub ssl_key: Option<PathBuf>,

    /// Bearer token (with --api-servers).
    #[arg(
        long,
        env = "WASMCONFD_TOKEN",
        value_name = "TOKEN",
        requires = "api_servers",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Limit on connecting to an API server and on waiting for its answer.
    #[arg(long, env = "WASMCONFD_API_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub api_timeout: Duration,

    /// Read only this namespace [default: all namespaces].
    #[arg(long, env = "WASMCONFD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Read only objects with these labels, e.g. `exposed=true,team!=legacy`.
    #[arg(long, env = "WASMCONFD_SELECTOR", value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Also read legacy v1 Endpoints objects, for services annotated python-confd style (on
    /// their Endpoints). Needs list/watch on endpoints.
    #[arg(long, env = "WASMCONFD_LEGACY_ENDPOINTS")]
    pub legacy_endpoints: bool,
}

impl KubernetesArgs {
    /// The plain connection settings.
    pub fn connection(&self) -> Connection {
        Connection {
            api_servers: self.api_servers.clone(),
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            ssl_ca: self.ssl_ca.clone(),
            ssl_cert: self.ssl_cert.clone(),
            ssl_key: self.ssl_key.clone(),
            token: self.token.clone(),
            timeout: self.api_timeout,
            namespace: self.namespace.clone(),
            label_selector: self.selector.clone(),
            legacy_endpoints: self.legacy_endpoints,
        }
    }
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Snapshot of the cluster: what `kubectl get services,endpointslices,endpoints -A -o yaml`
    /// prints (YAML or JSON, a List or several documents).
    #[arg(long, env = "WASMCONFD_CLUSTER", value_name = "FILE")]
    pub cluster: PathBuf,

    /// Write the configuration to FILE (atomically) and its map files into `maps/` beside it,
    /// instead of printing it.
    #[arg(long, short, env = "WASMCONFD_OUTPUT", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Check the configuration with the check command before printing or writing it; nothing is
    /// written when the check fails.
    #[arg(long, env = "WASMCONFD_CHECK")]
    pub check: bool,

    /// Check command; the path of the file to check is appended.
    #[arg(long, env = "WASMCONFD_CHECK_CMD", default_value = check::DEFAULT_CHECK_COMMAND, value_name = "COMMAND")]
    pub check_cmd: String,

    /// Time the check command may take before it is killed and counts as failed.
    #[arg(long, env = "WASMCONFD_COMMAND_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub command_timeout: Duration,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub guests: GuestArgs,
}

/// Which guests run, with which settings and limits.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// Directory of guests (`*.wasm`) and static files (`*.conf`), rendered in numeric-aware
    /// order of their names. A file named like a bundled slot (`00-base`, `20-http`, `30-https`,
    /// `40-redis`) replaces it; an empty `.conf` disables it.
    #[arg(long, env = "WASMCONFD_GUESTS", value_name = "DIR")]
    pub guests: Option<PathBuf>,

    /// A guest setting, GUEST.KEY=VALUE (e.g. `http.bind=127.0.0.1:8080`); repeatable. GUEST is
    /// the guest's file name without its order number. In the environment, separate with `;`.
    #[arg(long = "set", env = "WASMCONFD_SET", value_name = "GUEST.KEY=VALUE", value_delimiter = ';', value_parser = parse_setting)]
    pub settings: Vec<(String, String, String)>,

    /// Time one guest may take for one render, e.g. `5s`, `500ms`.
    #[arg(long, env = "WASMCONFD_GUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub guest_timeout: Duration,

    /// Memory one guest may use for one render, in MiB.
    #[arg(
        long,
        env = "WASMCONFD_GUEST_MEMORY_MIB",
        default_value_t = 256,
        value_name = "MIB"
    )]
    pub guest_memory_mib: usize,

    /// Where compiled guests are cached [default: $XDG_CACHE_HOME/wasmconfd or ~/.cache/wasmconfd].
    #[arg(long, env = "WASMCONFD_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every guest on every start instead of caching compiled code.
    #[arg(long, env = "WASMCONFD_NO_CACHE", conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// A guest from an OCI registry in a slot, SLOT=oci://REGISTRY/REPOSITORY:TAG (or
    /// @sha256:DIGEST, or both), e.g. `50-paths=oci://registry.example.com/team/paths:1.0`;
    /// repeatable. It takes its place in the slot order like a file of that name. It is
    /// verified against --trusted-key before it loads, and kept in the cache so a restart
    /// works while the registry is down. In the environment, separate with `;`.
    #[arg(long = "guest", env = "WASMCONFD_GUEST", value_name = "SLOT=REF", value_delimiter = ';', value_parser = parse_remote_guest)]
    pub remote: Vec<RemoteGuest>,

    /// Start without the --guest guests that cannot be loaded (registry down and nothing
    /// cached, not found, refused signature), logging why, instead of not starting at all.
    /// `run` keeps trying them, with backoff up to 30s, and renders with each one that loads.
    #[arg(long, env = "WASMCONFD_ALLOW_MISSING_GUESTS")]
    pub allow_missing_guests: bool,

    #[command(flatten)]
    pub trust: TrustArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// A --guest: its slot and reference.
pub type RemoteGuest = (String, crate::guests::oci::GuestRef);

fn parse_remote_guest(text: &str) -> Result<RemoteGuest, String> {
    let (slot, reference) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SLOT=oci://REGISTRY/REPOSITORY:TAG"))?;
    let valid = !slot.is_empty()
        && slot
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "{slot:?} is not a slot name: use letters, digits, - and _, like `50-paths`"
        ));
    }
    Ok((slot.to_string(), reference.parse()?))
}

fn parse_setting(text: &str) -> Result<(String, String, String), String> {
    let invalid = || format!("{text:?} is not GUEST.KEY=VALUE");
    let (name, value) = text.split_once('=').ok_or_else(invalid)?;
    let (guest, key) = name.split_once('.').ok_or_else(invalid)?;
    if guest.is_empty() || key.is_empty() {
        return Err(invalid());
    }
    Ok((guest.to_string(), key.to_string(), value.to_string()))
}

impl GuestArgs {
    /// The configuration the pipeline is built from, with the guests from registries fetched
    /// and verified (or taken from the cache when their registry is down); and how to fetch
    /// them, when there are any, to try again those left out.
    pub fn config(&self) -> anyhow::Result<(GuestConfig, Option<crate::guests::oci::Remote>)> {
        let mut settings = Settings::new();
        for (guest, key, value) in &self.settings {
            settings
                .entry(guest.clone())
                .or_default()
                .insert(key.clone(), value.clone());
        }
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        let (remote, missing, registries) = self.fetch_remote()?;
        let config = GuestConfig {
            dir: self.guests.clone(),
            remote,
            missing,
            settings,
            limits: Limits {
                timeout: self.guest_timeout,
                memory: self.guest_memory_mib << 20,
            },
            cache_dir,
        };
        Ok((config, registries))
    }

    /// How to fetch the --guest guests; `None` when there are none.
    fn remote(&self) -> anyhow::Result<Option<crate::guests::oci::Remote>> {
        if self.remote.is_empty() {
            return Ok(None);
        }
        let trust = self.trust.trust()?;
        if trust.keys.is_empty() && !trust.allow_unsigned {
            bail!(
                "--guest needs --trusted-key FILE to verify the guests' signatures \
                 (or --insecure-allow-unsigned)"
            );
        }
        Ok(Some(crate::guests::oci::Remote {
            registry: crate::guests::oci::Registry::new(&self.registry.access()?)?,
            trust,
            cache: crate::guests::oci::Cache::new(oci_cache_dir(self.cache_dir.clone())?),
        }))
    }

    /// The --guest parts, fetched, those left out, and how they were fetched. Every one must
    /// load unless --allow-missing-guests says otherwise: a start with some guests missing
    /// serves a configuration nobody asked for.
    fn fetch_remote(
        &self,
    ) -> anyhow::Result<(
        Vec<crate::guests::Part>,
        Vec<RemoteGuest>,
        Option<crate::guests::oci::Remote>,
    )> {
        let Some(remote) = self.remote()? else {
            return Ok(Default::default());
        };
        let fetched = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(remote.fetch(&self.remote));
        let (mut parts, mut missing) = (Vec::new(), Vec::new());
        for (result, guest) in fetched.into_iter().zip(&self.remote) {
            match result {
                Ok(part) => parts.push(part),
                Err(error) if self.allow_missing_guests => {
                    tracing::error!("{error:#}; left out (--allow-missing-guests)");
                    missing.push(guest.clone());
                }
                Err(error) => {
                    return Err(error.context(
                        "nothing starts with a guest missing (--allow-missing-guests would \
                         start without it)",
                    ));
                }
            }
        }
        Ok((parts, missing, Some(remote)))
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("wasmconfd"))
}

/// `wasmconfd render`.
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let (objects, mut problems) = source::read_snapshot(&args.cluster)?;
    let (services, model_problems) = model::build(&objects, &args.model.rules());
    problems.extend(model_problems);
    source::warn_skipped(&problems);
    tracing::info!(
        services = services.len(),
        skipped = problems.len(),
        "model built"
    );

    let (config, _) = args.guests.config()?;
    let pipeline = Pipeline::new(&config)?;
    let assembled = match pipeline.render(services) {
        Ok(assembled) => assembled,
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            bail!("rendering failed: {} error(s), see above", errors.len());
        }
    };

    if args.check {
        let output = check::check_staged(&args.check_cmd, &assembled, args.command_timeout)?;
        for line in output.lines().filter(|l| l.contains("[WARNING]")) {
            tracing::warn!("haproxy: {line}");
        }
        tracing::info!("the configuration passed `{}`", args.check_cmd);
    }

    match &args.output {
        Some(path) => {
            crate::apply::install::write(path, &assembled)
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), maps = assembled.maps.len(), "configuration written");
        }
        None => {
            print!("{}", assembled.config);
            if !assembled.maps.is_empty() {
                tracing::info!(
                    maps = assembled.maps.len(),
                    "map files are written only with --output"
                );
            }
        }
    }
    Ok(())
}

/// `wasmconfd snapshot`.
pub fn snapshot(args: &SnapshotArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let objects = runtime.block_on(args.kubernetes.connection().list())?;
    let yaml = source::to_snapshot(&objects)?;
    match &args.output {
        Some(path) => {
            crate::files::write_atomically(path, yaml.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(
                path = %path.display(),
                services = objects.services.len(),
                endpoint_slices = objects.endpoint_slices.len(),
                endpoints = objects.endpoints.len(),
                "snapshot written"
            );
        }
        None => print!("{yaml}"),
    }
    Ok(())
}

/// `wasmconfd run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = args.config()?;
    runtime.block_on(crate::daemon::run(config))
}

/// `wasmconfd guest sign`.
pub fn sign_guest(args: &SignArgs) -> anyhow::Result<()> {
    let key = crate::guests::oci::read_signing_key(&args.key)?;
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let digest = registry.resolve(&args.reference).await?;
        registry.sign(&args.reference, &digest, &key).await?;
        println!("signed {}", args.reference.at(&digest));
        anyhow::Ok(())
    })
}

/// `wasmconfd guest inspect`.
pub fn inspect_guest(args: &InspectArgs) -> anyhow::Result<()> {
    let mut report: Vec<(&str, String)> = Vec::new();
    let wasm = if args.guest.starts_with("oci://") {
        let reference: crate::guests::oci::GuestRef =
            args.guest.parse().map_err(anyhow::Error::msg)?;
        let keys = read_public_keys(&args.keys)?;
        let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
        tokio::runtime::Runtime::new()?.block_on(async {
            let digest = registry.resolve(&reference).await?;
            let signature = match registry.verify(&reference, &digest, &keys).await {
                Ok((_, key)) => format!("verified: signed by {}", args.keys[key].display()),
                Err(crate::guests::oci::SignatureError::Unsigned(..)) => {
                    "none: loads only with --insecure-allow-unsigned".to_string()
                }
                Err(crate::guests::oci::SignatureError::UntrustedKey(..)) if keys.is_empty() => {
                    "signed; pass --trusted-key FILE to check by whom".to_string()
                }
                Err(error) => format!("refused: {error}"),
            };
            report.push(("reference", reference.to_string()));
            report.push(("pinned", reference.at(&digest).to_string()));
            report.push(("signature", signature));
            anyhow::Ok(registry.pull(&reference, &digest).await?.1)
        })?
    } else {
        let file = PathBuf::from(&args.guest);
        report.push(("file", file.display().to_string()));
        std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
    };
    report.push(("digest", crate::guests::oci::digest_of(&wasm)));
    report.push(("size", format!("{} bytes", wasm.len())));
    match crate::guests::sandbox::interface(&wasm) {
        Ok(interface) => {
            let sandbox = crate::guests::Sandbox::new(
                Default::default(),
                args.cache_dir.clone().or_else(default_cache_dir),
            )
            .map_err(|e| anyhow::anyhow!("cannot start the engine: {e:#}"))?;
            let world = match sandbox.load(&args.guest, &wasm) {
                Ok(_) => format!("{} (this wasmconfd loads it)", crate::bindings::WORLD),
                Err(error) => format!("this wasmconfd does not load it: {error}"),
            };
            report.push(("world", world));
            for (key, names) in [
                ("exports", interface.exports),
                ("imports", interface.imports),
            ] {
                let names = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join("\n")
                };
                report.push((key, names));
            }
        }
        Err(error) => report.push(("world", format!("none: {error:#}"))),
    }
    for (key, value) in report {
        for (i, line) in value.lines().enumerate() {
            println!("{:<10} {line}", if i == 0 { key } else { "" });
        }
    }
    Ok(())
}

/// `wasmconfd guest verify`.
pub fn verify_guest(args: &VerifyArgs) -> anyhow::Result<()> {
    let keys = read_public_keys(&args.keys)?;
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let digest = registry.resolve(&args.reference).await?;
        let (_, key) = registry.verify(&args.reference, &digest, &keys).await?;
        println!(
            "verified {} (signed by {})",
            args.reference.at(&digest),
            args.keys[key].display()
        );
        anyhow::Ok(())
    })
}
