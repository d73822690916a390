//! The argument groups several commands share, and what they turn into: the plain
//! configuration of each stage, which tests build without clap.

use crate::apply::check;
use crate::guests::Limits;
use crate::model;
use crate::render::{GuestConfig, Settings};
use crate::source::kubernetes::Connection;
use anyhow::{Context as _, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Which signatures count.
#[derive(Debug, Args)]
pub struct TrustArgs {
    #[command(flatten)]
    pub keys: KeysArgs,
    /// Load guests that carry no trusted signature. Only for development.
    #[arg(long, env = "WASMCONFD_INSECURE_ALLOW_UNSIGNED")]
    pub insecure_allow_unsigned: bool,
}

impl TrustArgs {
    pub fn trust(&self) -> anyhow::Result<crate::guests::oci::Trust> {
        Ok(crate::guests::oci::Trust {
            keys: self.keys.read()?,
            allow_unsigned: self.insecure_allow_unsigned,
        })
    }
}

/// Public keys that signatures are checked against.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// A public key (PEM, such as cosign.pub) whose signatures are trusted; repeat for more.
    /// `--key`, as cosign names it, works too.
    #[arg(
        long = "trusted-key",
        visible_alias = "key",
        env = "WASMCONFD_TRUSTED_KEYS",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub files: Vec<PathBuf>,
}

impl KeysArgs {
    /// The keys, read from their files.
    pub fn read(&self) -> anyhow::Result<Vec<p256::ecdsa::VerifyingKey>> {
        self.files
            .iter()
            .map(|file| crate::guests::oci::read_public_key(file))
            .collect()
    }
}

/// How to reach OCI registries.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// User for basic auth, for every registry; with --registry-password-stdin or
    /// --registry-password.
    #[arg(long, env = "WASMCONFD_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// Password for basic auth. On the command line it shows in the process list: prefer
    /// --registry-password-stdin, or the environment variable.
    #[arg(long, env = "WASMCONFD_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
    /// Read the password for basic auth from standard input, without its final line break (as
    /// `docker login --password-stdin`): `cat password | wasmconfd ... --registry-password-stdin`.
    #[arg(long, conflicts_with = "registry_password", requires = "registry_user")]
    pub registry_password_stdin: bool,
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
    pub fn access(&self) -> anyhow::Result<crate::guests::oci::RegistryAccess> {
        let auth_file = self.registry_auth_file.clone().or_else(|| {
            let dir = std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker"))
                })?;
            Some(dir.join("config.json")).filter(|file| file.exists())
        });
        let password = if self.registry_password_stdin {
            let read = std::io::read_to_string(std::io::stdin()).map_err(|e| {
                anyhow::anyhow!("cannot read the registry password from stdin: {e}")
            })?;
            let password = read.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(
                !password.is_empty(),
                "--registry-password-stdin: standard input holds no password"
            );
            Some(password.to_string())
        } else {
            self.registry_password.clone()
        };
        if self.registry_user.is_some() && password.is_none() {
            anyhow::bail!(
                "--registry-user needs a password: --registry-password-stdin (or \
                 --registry-password, or WASMCONFD_REGISTRY_PASSWORD)"
            );
        }
        Ok(crate::guests::oci::RegistryAccess {
            credentials: self.registry_user.clone().zip(password),
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

    /// The certificate (chain and private key in one PEM file) HAProxy presents for names no
    /// TLS Secret is for. Without it, a self-signed one is made once and kept in `certs/`.
    #[arg(long, env = "WASMCONFD_DEFAULT_CERTIFICATE", value_name = "FILE")]
    pub default_certificate: Option<PathBuf>,
}

impl ModelArgs {
    /// The default certificate: --default-certificate, or the self-signed one already in the
    /// certificates directory beside `config`, or a new one.
    pub fn default_certificate(
        &self,
        config: Option<&std::path::Path>,
    ) -> anyhow::Result<std::sync::Arc<crate::tls::KeyPair>> {
        let existing = config
            .map(|c| crate::files::parent_dir(c).join(crate::assemble::CERTS_DIR))
            .map(|dir| dir.join(crate::tls::DEFAULT_FILE))
            .unwrap_or_default();
        crate::tls::default_certificate(self.default_certificate.as_deref(), &existing)
            .map_err(anyhow::Error::msg)
    }

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

    /// Bearer token from a file (with --api-servers), read again when it changes, so a rotated
    /// token is used within about a minute; surrounding whitespace is dropped, as kubectl does.
    #[arg(
        long,
        env = "WASMCONFD_TOKEN_FILE",
        value_name = "FILE",
        requires = "api_servers",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

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

    /// Read only the TLS Secrets with these labels, e.g. `wasmconfd.io/certificate=true`
    /// (with `run --tls-secrets` or `snapshot --include-secrets`).
    #[arg(long, env = "WASMCONFD_TLS_SECRET_SELECTOR", value_name = "SELECTOR")]
    pub tls_secret_selector: Option<String>,
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
            token_file: self.token_file.clone(),
            timeout: self.api_timeout,
            namespace: self.namespace.clone(),
            label_selector: self.selector.clone(),
            legacy_endpoints: self.legacy_endpoints,
            namespaces: false,
            tls_secrets: false,
            tls_secret_selector: self.tls_secret_selector.clone(),
        }
    }
}

/// Which guests run, with which settings and limits.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// Directory of guests (`*.wasm`) and static files (`*.conf`), rendered in numeric-aware
    /// order of their names. A file named like a bundled slot (`00-base`, `20-http`, `30-https`,
    /// `40-redis`) replaces it; an empty `.conf` disables it.
    #[arg(long, env = "WASMCONFD_GUESTS", value_name = "DIR")]
    pub guests: Option<PathBuf>,

    /// The guests configuration (YAML): per guest, its trust (`platform` or `team`), the
    /// namespaces and protos of the services it receives, the ports it may bind, and its
    /// settings. A guest it does not name is `platform` and sees every service. See
    /// docs/multi-tenant.md.
    #[arg(long, env = "WASMCONFD_GUESTS_CONFIG", value_name = "FILE")]
    pub guests_config: Option<PathBuf>,

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

    #[command(flatten)]
    pub cache: CacheArgs,

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

impl GuestArgs {
    /// The configuration the pipeline is built from, with the guests from registries fetched
    /// and verified (or taken from the cache when their registry is down); and how to fetch
    /// them, when there are any, to try again those left out.
    pub async fn config(
        &self,
    ) -> anyhow::Result<(GuestConfig, Option<crate::guests::oci::Remote>)> {
        let file = match &self.guests_config {
            Some(path) => crate::scope::GuestsFile::load(path)?,
            None => Default::default(),
        };
        let mut settings = Settings::new();
        for (guest, scope) in &file.guests {
            if !scope.settings.is_empty() {
                settings.insert(guest.clone(), scope.settings.clone());
            }
        }
        for (guest, key, value) in &self.settings {
            settings
                .entry(guest.clone())
                .or_default()
                .insert(key.clone(), value.clone());
        }
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache.dir()
        };
        let (remote, missing, registries) = self.fetch_remote().await?;
        let config = GuestConfig {
            dir: self.guests.clone(),
            remote,
            missing,
            settings,
            scopes: file.guests,
            limits: Limits {
                timeout: self.guest_timeout,
                memory: self.guest_memory_mib << 20,
            },
            cache_dir,
            unsigned_allowed: self.trust.insecure_allow_unsigned,
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
            cache: crate::guests::oci::Cache::new(self.cache.oci_dir()?),
        }))
    }

    /// The --guest parts, fetched, those left out, and how they were fetched. Every one must
    /// load unless --allow-missing-guests says otherwise: a start with some guests missing
    /// serves a configuration nobody asked for.
    async fn fetch_remote(
        &self,
    ) -> anyhow::Result<(
        Vec<crate::guests::Part>,
        Vec<RemoteGuest>,
        Option<crate::guests::oci::Remote>,
    )> {
        let Some(remote) = self.remote()? else {
            return Ok(Default::default());
        };
        let (parts, failed) = remote.fetch(&self.remote).await;
        let mut missing = Vec::new();
        for (guest, error) in failed {
            if !self.allow_missing_guests {
                return Err(error.context(
                    "a guest is missing, so nothing is rendered (--allow-missing-guests would \
                     go on without it)",
                ));
            }
            tracing::error!("{error:#}; left out (--allow-missing-guests)");
            missing.push(guest);
        }
        Ok((parts, missing, Some(remote)))
    }
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

/// Where guests are cached.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Where compiled guests, and guests pulled from registries (in `oci/`, with their verified
    /// signatures), are cached [default: $XDG_CACHE_HOME/wasmconfd or ~/.cache/wasmconfd].
    #[arg(long, env = "WASMCONFD_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    /// The cache directory, given or by default.
    pub fn dir(&self) -> Option<PathBuf> {
        self.cache_dir.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache"))
                })?;
            Some(base.join("wasmconfd"))
        })
    }

    /// Where pulled guests are kept: `oci/` in the cache directory.
    pub fn oci_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .dir()
            .context("no cache directory: pass --cache-dir")?
            .join("oci"))
    }
}

/// How a configuration is checked.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check command; the path of the file to check is appended.
    #[arg(long, env = "WASMCONFD_CHECK_CMD", default_value = check::DEFAULT_CHECK_COMMAND, value_name = "COMMAND")]
    pub check_cmd: String,

    /// Time the check command (and with `run`, a reload command) may take before it is
    /// killed, with every process it started, and counts as failed.
    #[arg(long, env = "WASMCONFD_COMMAND_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub command_timeout: Duration,
}
