//! `wasmconfd snapshot`: save what `run` would read, for offline renders: the objects as
//! `run` keeps them (see [`crate::source::compact`]), not whole.

use super::args::KubernetesArgs;
use crate::source;
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use tokio::runtime::Runtime;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Write the snapshot to FILE (atomically) instead of printing it.
    #[arg(long, short, env = "WASMCONFD_OUTPUT", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also save every Namespace object, for renders with scopes that select namespaces by
    /// label (`namespace-labels` in --guests-config). Needs list on namespaces.
    #[arg(long, env = "WASMCONFD_WITH_NAMESPACES")]
    pub with_namespaces: bool,

    /// Also save the `kubernetes.io/tls` Secrets, private keys included, for renders that
    /// terminate TLS. Off by default, so that a snapshot is safe to share. Needs list on
    /// secrets.
    #[arg(long, env = "WASMCONFD_INCLUDE_SECRETS")]
    pub include_secrets: bool,

    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
}

/// `wasmconfd snapshot`.
pub fn snapshot(args: &SnapshotArgs, runtime: &Runtime) -> anyhow::Result<()> {
    let mut connection = args.kubernetes.connection();
    connection.namespaces = args.with_namespaces;
    connection.tls_secrets = args.include_secrets;
    if connection.tls_secret_selector.is_some() && !args.include_secrets {
        anyhow::bail!(
            "--tls-secret-selector selects the TLS Secrets to save: add --include-secrets"
        );
    }
    let objects = runtime.block_on(connection.list())?;
    let named_secrets = objects
        .services
        .iter()
        .filter(|s| s.meta.annotations.get(crate::tls::ANNOTATION).is_some())
        .count();
    if !args.include_secrets && named_secrets > 0 {
        tracing::warn!(
            services = named_secrets,
            "services name TLS Secrets, which the snapshot leaves out (private keys): pass \
             --include-secrets for a render that terminates TLS"
        );
    }
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
                namespaces = objects.namespaces.len(),
                secrets = objects.secrets.len(),
                "snapshot written"
            );
        }
        None => print!("{yaml}"),
    }
    Ok(())
}
