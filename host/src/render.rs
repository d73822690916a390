//! The pipeline from model to configuration: every part runs (guests in the sandbox, static
//! files as they are), then the outputs are assembled in slot order.

use crate::assemble::{self, Assembled, CERTS_DIR, MAPS_DIR, Output};
use crate::bindings::{Cluster, Context, Fragment, Service};
use crate::claims::{Listeners, static_binds};
use crate::guests::parts::{self, Part, PartsError, Source};
use crate::guests::{Guest, GuestError, Limits, Sandbox};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Settings per guest name: `http` -> [(`bind`, `:8080`)].
pub type Settings = BTreeMap<String, BTreeMap<String, String>>;

/// What the pipeline is built from.
#[derive(Debug, Clone, Default)]
pub struct GuestConfig {
    /// Directory of `*.wasm` guests and `*.conf` files; the bundled parts only when `None`.
    pub dir: Option<PathBuf>,
    /// Parts from elsewhere (guests pulled from registries), in their slots.
    pub remote: Vec<Part>,
    /// Registry guests left out because they could not be loaded: (slot, reference).
    pub missing: Vec<(String, crate::guests::oci::GuestRef)>,
    pub settings: Settings,
    pub limits: Limits,
    /// Where precompiled guests are cached; compiled on every start when `None`.
    pub cache_dir: Option<PathBuf>,
}

/// The loaded parts, ready to render any number of times.
pub struct Pipeline {
    sandbox: Sandbox,
    parts: Vec<(Part, Loaded)>,
}

enum Loaded {
    Guest {
        guest: Guest,
        settings: Vec<(String, String)>,
    },
    Static,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Parts(#[from] PartsError),
    #[error(transparent)]
    Assemble(#[from] assemble::AssembleError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("settings given for guest {0}, but no guest has that name (guests: {1})")]
    UnknownGuest(String, String),
    #[error("{0}")]
    Engine(String),
}

impl Pipeline {
    /// Find the parts, compile and pre-instantiate the guests.
    pub fn new(config: &GuestConfig) -> Result<Self, PipelineError> {
        let parts = parts::parts(config.dir.as_deref(), config.remote.clone())?;
        // Settings for a guest left out are kept for when it loads.
        let missing = config
            .missing
            .iter()
            .map(|(slot, _)| parts::guest_name(slot));
        let names: Vec<&str> = parts.iter().map(Part::name).chain(missing).collect();
        if let Some(unknown) = config
            .settings
            .keys()
            .find(|k| !names.contains(&k.as_str()))
        {
            return Err(PipelineError::UnknownGuest(
                unknown.clone(),
                names.join(", "),
            ));
        }
        let sandbox = Sandbox::new(config.limits, config.cache_dir.clone())
            .map_err(|e| PipelineError::Engine(format!("{e:#}")))?;
        let mut loaded = Vec::new();
        for part in parts {
            let state = match &part.source {
                Source::Guest(wasm) => Loaded::Guest {
                    guest: sandbox.load(part.name(), wasm)?,
                    settings: config
                        .settings
                        .get(part.name())
                        .map(|s| s.clone().into_iter().collect())
                        .unwrap_or_default(),
                },
                Source::Static(_) => Loaded::Static,
            };
            loaded.push((part, state));
        }
        Ok(Pipeline {
            sandbox,
            parts: loaded,
        })
    }

    /// Run every guest on `services`. Each guest's result is kept apart, so one failing guest
    /// does not take the others' output with it.
    pub fn run(&self, services: Vec<Service>) -> Vec<Result<Fragment, GuestError>> {
        let mut cluster = Cluster {
            context: Context {
                maps_dir: MAPS_DIR.into(),
                certs_dir: CERTS_DIR.into(),
                settings: Vec::new(),
            },
            services,
        };
        self.parts
            .iter()
            .filter_map(|(_, loaded)| match loaded {
                Loaded::Guest { guest, settings } => {
                    cluster.context.settings = settings.clone();
                    Some(self.sandbox.render(guest, &cluster))
                }
                Loaded::Static => None,
            })
            .collect()
    }

    /// Assemble the outputs of [`Pipeline::run`] (one per guest, in order).
    pub fn assemble(&self, fragments: &[Fragment]) -> Result<Assembled, assemble::AssembleError> {
        let mut fragments = fragments.iter();
        let outputs: Vec<_> = self
            .parts
            .iter()
            .map(|(part, loaded)| {
                let output = match (loaded, &part.source) {
                    (Loaded::Static, Source::Static(text)) => Output::Static(text),
                    _ => Output::Fragment(fragments.next().expect("one fragment per guest")),
                };
                (part, output)
            })
            .collect();
        assemble::assemble(&outputs)
    }

    /// Give each listening address to its first claimant: the static files, then the guests in
    /// slot order. A guest's section that binds an address already claimed is dropped from
    /// `fragments` (the outputs of [`Pipeline::run`]); each error names both claimants.
    pub fn claim_listeners(&self, fragments: &mut [Fragment]) -> Vec<String> {
        let mut listeners = Listeners::default();
        let mut errors = Vec::new();
        for (part, _) in &self.parts {
            if let Source::Static(text) = &part.source {
                let owner = format!("static file {}", part.slot);
                for bind in static_binds(text) {
                    if let Err(error) = listeners.claim(&owner, [bind]) {
                        errors.push(format!("{owner} {error}: change one of them"));
                    }
                }
            }
        }
        let guests = self
            .parts
            .iter()
            .filter(|(_, loaded)| matches!(loaded, Loaded::Guest { .. }));
        for ((part, _), fragment) in guests.zip(fragments) {
            let owner = format!("guest {}", part.slot);
            errors.extend(listeners.claim_sections(&owner, &mut fragment.sections));
        }
        errors
    }

    /// Render `services` into a configuration; any guest failing fails the render, with every
    /// guest's error. Sections that lose a listening address are left out, with an error log.
    pub fn render(&self, services: Vec<Service>) -> Result<Assembled, Vec<PipelineError>> {
        let (fragments, errors): (Vec<_>, Vec<_>) =
            self.run(services).into_iter().partition(Result::is_ok);
        if !errors.is_empty() {
            return Err(errors
                .into_iter()
                .filter_map(Result::err)
                .map(Into::into)
                .collect());
        }
        let mut fragments: Vec<_> = fragments.into_iter().filter_map(Result::ok).collect();
        for error in self.claim_listeners(&mut fragments) {
            tracing::error!("{error}");
        }
        self.assemble(&fragments).map_err(|e| vec![e.into()])
    }
}

/// Try the registry guests left out at start again, with backoff, until every one has loaded;
/// hand the render loop a new pipeline with those that do.
pub async fn load_missing(
    mut guests: GuestConfig,
    remote: crate::guests::oci::Remote,
    pipelines: std::sync::mpsc::Sender<Pipeline>,
    changed: std::sync::mpsc::SyncSender<()>,
    status: std::sync::Arc<crate::status::Status>,
) {
    let mut attempts = 0;
    while !guests.missing.is_empty() {
        attempts += 1;
        tokio::time::sleep(crate::source::watch::backoff(attempts)).await;
        let (parts, failed) = remote.fetch(&guests.missing).await;
        let loaded: Vec<_> = parts.iter().map(|part| part.slot.clone()).collect();
        let mut next = guests.clone();
        next.remote.extend(parts);
        next.missing.clear();
        for (guest, error) in failed {
            tracing::warn!("{error:#}; trying again");
            next.missing.push(guest);
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
                status
                    .missing_guests
                    .store(missing, std::sync::atomic::Ordering::Relaxed);
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
