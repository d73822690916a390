//! `wasmconfd render`: one configuration from a snapshot.

use super::args::{CheckArgs, GuestArgs, ModelArgs};
use crate::apply::check;
use crate::render::Pipeline;
use crate::{model, source, tls};
use anyhow::{Context as _, bail};
use clap::Args;
use std::path::PathBuf;
use tokio::runtime::Runtime;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Snapshot of the cluster: what `kubectl get services,endpointslices,endpoints -A -o yaml`
    /// (or `wasmconfd snapshot`) prints (YAML or JSON, a List or several documents); with
    /// `namespaces` too when a scope selects namespaces by label, and TLS `secrets` for
    /// services that name one (`wasmconfd snapshot --include-secrets`).
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

    #[command(flatten)]
    pub checking: CheckArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub guests: GuestArgs,
}

/// Warn when a scope selects namespaces by label and the snapshot has no Namespace objects.
fn warn_without_namespaces(config: &crate::render::GuestConfig, objects: &source::Objects) {
    let labelled = config
        .scopes
        .iter()
        .find(|(_, s)| s.namespace_labels.is_some());
    if let (Some((guest, _)), true) = (labelled, objects.namespaces.is_empty()) {
        tracing::warn!(
            guest,
            "the scope selects namespaces by label, but the snapshot has no Namespace objects \
             (`wasmconfd snapshot --with-namespaces`): it receives no service"
        );
    }
}

/// `wasmconfd render`.
pub fn render(args: &RenderArgs, runtime: &Runtime) -> anyhow::Result<()> {
    if let Some(output) = &args.output {
        crate::apply::install::refuse_not_a_file(output)?;
    }
    let file = source::Snapshot::open(&args.cluster)?;
    // The guests load while the snapshot is read and parsed; a snapshot that cannot be read or
    // does not parse is said first.
    let (read, loaded) = std::thread::scope(|scope| {
        let loading = scope.spawn(|| -> anyhow::Result<_> {
            let (config, _) = runtime.block_on(args.guests.config())?;
            let pipeline = Pipeline::new(&config)?;
            Ok((config, pipeline))
        });
        let read = file.read().and_then(|snapshot| {
            let parsed = snapshot.parse()?;
            drop_aside(snapshot);
            Ok(parsed)
        });
        let loaded = loading.join();
        (
            read,
            loaded.unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    });
    let (objects, mut problems) = read?;
    let (config, pipeline) = loaded?;
    let (services, model_problems) = model::build(&objects, &args.model.rules());
    problems.extend(model_problems);
    let default = args.model.default_certificate(args.output.as_deref())?;
    let (certificates, tls_problems) =
        tls::Kept::default().build(&objects.secrets, &services, &default, tls::now());
    problems.extend(tls_problems);
    source::warn_skipped(&problems);
    tracing::info!(
        services = services.len(),
        skipped = problems.len(),
        "model built"
    );

    warn_without_namespaces(&config, &objects);
    let namespaces = model::namespace_labels(&objects);
    // Everything the render needs is in the model now: at 10,000 services the objects are half
    // the memory a render takes.
    drop_aside(objects);
    let assembled = match pipeline.render(&services, &namespaces, &certificates) {
        Ok(assembled) => assembled,
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            bail!("rendering failed: {} error(s), see above", errors.len());
        }
    };

    if args.check {
        let output = check::check_staged(
            &args.checking.check_cmd,
            &assembled,
            args.checking.command_timeout,
        )?;
        for line in output.lines().filter(|l| l.contains("[WARNING]")) {
            tracing::warn!("haproxy: {line}");
        }
        tracing::info!("the configuration passed `{}`", args.checking.check_cmd);
    }

    match &args.output {
        Some(path) => {
            crate::apply::install::write(path, &assembled)
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), maps = assembled.maps.len(), certificates = certificates.used.len(), "configuration written");
        }
        None => {
            print!("{}", assembled.config);
            if !assembled.maps.is_empty() || !certificates.used.is_empty() {
                tracing::info!(
                    maps = assembled.maps.len(),
                    certificates = certificates.used.len(),
                    "map files and certificates are written only with --output"
                );
            }
        }
    }
    drop_aside((pipeline, services, assembled));
    Ok(())
}

/// Drop `value` on a thread of its own: freeing a render's worth of objects takes milliseconds
/// that the render need not wait for, nor the process at its exit.
fn drop_aside<T: Send + 'static>(value: T) {
    std::thread::spawn(move || drop(value));
}
