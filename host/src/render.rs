//! The pipeline from model to configuration: every guest runs on the services its scope admits
//! (static files are taken as they are), its output is checked against the policy, a guest
//! that fails on some services renders without them, and the outputs are assembled in slot
//! order, each listening address and name given to one owner.

use crate::assemble::{self, Assembled, CERTS_DIR, MAPS_DIR, Output};
use crate::bindings::{Context, Input, Reads, Section, Service, Tls};
use crate::claims::{Claims, static_binds, static_sections};
use crate::fragment::{Fragment, Placement};
use crate::guests::parts::{self, Part, PartsError, Source};
use crate::guests::{Guest, GuestError, Limits, Sandbox};
use crate::model::NamespaceLabels;
use crate::scope::{Scope, Trust};
use crate::tls::Certificates;
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Settings per guest name: `http` -> [(`bind`, `:8080`)].
pub type Settings = BTreeMap<String, BTreeMap<String, String>>;

/// How many extra renders one guest may take, per render, to find the services it fails on:
/// enough for a few bad services among 50,000. They may also take at most twice the guest's
/// time limit, so a service that makes a guest loop costs two time limits, not sixty-four. A
/// guest whose failures need more keeps its last good output instead.
pub const QUARANTINE_RENDERS: usize = 64;

/// How many services one call of a guest's `servers` is given at most. Its memory grows with
/// them (the bundled http guest: about 4 MiB for 1,000 services x 3 endpoints, 14 MiB for
/// 5,000), and a call it fails on is asked again one service at a time.
const SERVICES_PER_CALL: usize = 1000;

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
    /// Scopes by guest name (`--guests-config`); a guest without one is `platform` and sees
    /// everything.
    pub scopes: BTreeMap<String, Scope>,
    pub limits: Limits,
    /// Where precompiled guests are cached; compiled on every start when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Registry guests without a trusted signature were allowed (`--insecure-allow-unsigned`).
    pub unsigned_allowed: bool,
}

/// The loaded parts, ready to render any number of times.
pub struct Pipeline {
    sandbox: Sandbox,
    limits: Limits,
    renders: AtomicU64,
    parts: Vec<(Part, Option<Loaded>)>,
    /// What the status page says about each guest, as loaded.
    reports: Vec<crate::status::GuestReport>,
    /// The texts of the last assembly.
    written: Mutex<assemble::Written>,
    last_claim: Mutex<Option<LastClaim>>,
}

/// The outputs the last claim was given, which of their sections and map files it kept, and
/// its errors.
struct LastClaim {
    given: Vec<Fragment>,
    kept: Vec<(Vec<bool>, Vec<bool>)>,
    errors: Vec<String>,
}

/// Whether claims on `a` and on `b` come out the same: the same sections and map files by
/// kind, name and addresses bound, in the same places.
fn claim_alike(a: &[Fragment], b: &[Fragment]) -> bool {
    fn binds(s: &Section) -> impl Iterator<Item = Option<&str>> {
        let binds = s.directives.iter().filter(|d| d.keyword() == "bind");
        binds.map(|d| d.arg(0))
    }
    let section = |(x, y): (&Arc<Section>, &Arc<Section>)| {
        Arc::ptr_eq(x, y) || (x.same_title(y) && binds(x).eq(binds(y)))
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.sections.len() == b.sections.len()
                && a.sections.iter().zip(&b.sections).all(section)
                && a.maps.len() == b.maps.len()
                && a.maps.iter().zip(&b.maps).all(|(x, y)| x.name == y.name)
        })
}

/// Which of `given` are in `kept` (a subsequence of it, as `retain` leaves).
fn kept_of<T>(given: &[Arc<T>], kept: &[Arc<T>]) -> Vec<bool> {
    let mut kept = kept.iter().peekable();
    given
        .iter()
        .map(|item| kept.next_if(|k| Arc::ptr_eq(k, item)).is_some())
        .collect()
}

/// `items` without those `kept` says were not.
fn keep<T>(items: &mut Vec<Arc<T>>, kept: &[bool]) {
    let mut kept = kept.iter();
    items.retain(|_| *kept.next().unwrap_or(&true));
}

/// A loaded guest, with what it may see and do.
struct Loaded {
    guest: Guest,
    settings: Vec<(String, String)>,
    scope: Scope,
    /// The protos it says it serves, when it says.
    declared: Option<Vec<String>>,
    /// The annotations, labels and endpoint details it says it reads.
    reads: Arc<Reads>,
    /// Its last successful output: a guest is a pure function of its input, so the same
    /// input needs no render.
    last: Mutex<Option<LastOutput>>,
    /// It writes `server` lines apart (`servers`): what they are for each service.
    servers_apart: bool,
    servers: Mutex<ServersCache>,
}

/// The `server` lines of a guest that writes them apart, for each service of its last input
/// (in order), kept while the service stays the same; and the output they were last placed into.
#[derive(Default)]
struct ServersCache {
    entries: Vec<ServersEntry>,
    last_merged: Option<Fragment>,
    /// Each section of the last merged output, with what it was made of, so that a section
    /// whose render and placements are the same is not made again.
    merged: Vec<Merged>,
    /// The services whose servers the last merge left out, and why: they name a section the
    /// render does not have. Placed again at the next merge, as the render may change.
    misplaced: Vec<(String, String)>,
}

/// A section of the render with the `server` lines placed into it.
struct Merged {
    base: Arc<Section>,
    /// The placements it holds: (the service's placements, which one).
    from: Vec<(Arc<[Placement]>, usize)>,
    section: Arc<Section>,
}

impl Merged {
    /// Whether it is `base` with the placements `from`.
    fn made_of(&self, base: &Arc<Section>, from: &[(Arc<[Placement]>, usize)]) -> bool {
        Arc::ptr_eq(&self.base, base)
            && self.from.len() == from.len()
            && (self.from.iter().zip(from)).all(|((a, i), (b, j))| Arc::ptr_eq(a, b) && i == j)
    }
}

/// `base` with the `server` lines of the placements `from` after its own lines; `base` itself
/// when there are none. Its lines are counted first: collected from a chain, a backend's
/// lines and its three servers took room for ten, and every section is kept between changes.
fn placed_into(base: &Arc<Section>, from: &[(Arc<[Placement]>, usize)]) -> Arc<Section> {
    if from.is_empty() {
        return base.clone();
    }
    let placed = from.iter().map(|(p, k)| &p[*k].servers);
    let count = base.directives.len() + placed.clone().map(Vec::len).sum::<usize>();
    let mut directives = Vec::with_capacity(count);
    directives.extend(base.directives.iter().chain(placed.flatten()).cloned());
    Arc::new(Section {
        kind: base.kind,
        name: base.name.clone(),
        directives,
    })
}

struct ServersEntry {
    service: Arc<Service>,
    /// Its placements, once `servers` gave them; or why `servers` fails on it (quarantined).
    placements: Option<Result<Arc<[Placement]>, String>>,
}

impl ServersEntry {
    /// A service not yet asked for its servers.
    fn new(service: &Arc<Service>) -> ServersEntry {
        ServersEntry {
            service: service.clone(),
            placements: None,
        }
    }
}

impl ServersCache {
    /// Make the entries those of `input`, keeping the entries of the services that did not
    /// change as the guest, which `reads` those annotations and labels, sees them (the same
    /// object, as the daemon's kept model gives, or an equal one).
    fn update(&mut self, input: &[Arc<Service>], reads: &Reads) {
        let before = std::mem::take(&mut self.entries);
        let kept = |entry: ServersEntry, service: &Arc<Service>| {
            if entry.service.same_to_guest(service, true, reads) {
                ServersEntry {
                    service: service.clone(),
                    ..entry
                }
            } else {
                ServersEntry::new(service)
            }
        };
        // Mostly the same services in the same order: compared in step, by pointer first.
        let same_service = |entry: &ServersEntry, service: &Arc<Service>| {
            Arc::ptr_eq(&entry.service, service)
                || (&entry.service.namespace, &entry.service.name)
                    == (&service.namespace, &service.name)
        };
        if before.len() == input.len() && before.iter().zip(input).all(|(e, s)| same_service(e, s))
        {
            self.entries = before
                .into_iter()
                .zip(input)
                .map(|(e, s)| kept(e, s))
                .collect();
        } else {
            let mut before: Vec<Option<ServersEntry>> = before.into_iter().map(Some).collect();
            let services: Vec<Arc<Service>> = before
                .iter()
                .flatten()
                .map(|entry| entry.service.clone())
                .collect();
            let index: foldhash::HashMap<(&str, &str), usize> = services
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.namespace.as_str(), s.name.as_str()), i))
                .collect();
            self.entries = input
                .iter()
                .map(|service| {
                    let key = (service.namespace.as_str(), service.name.as_str());
                    match index.get(&key).and_then(|&i| before[i].take()) {
                        Some(entry) => kept(entry, service),
                        None => ServersEntry::new(service),
                    }
                })
                .collect();
        }
    }
}

/// A guest's successful output, its quarantine, and the input they came from. Inputs are
/// compared whole ([`Input::same`]), not by a hash an object's author could make collide.
struct LastOutput {
    input: Input,
    fragment: Fragment,
    quarantined: Vec<(String, String)>,
}

/// One guest's result of one render.
pub struct GuestOutput {
    /// Its slot, e.g. `50-team-a`.
    pub slot: String,
    /// A `team` guest: without output it is left out, where a `platform` guest's missing
    /// output stops the configuration (it may hold what every other part relies on).
    pub team: bool,
    pub result: Result<Fragment, GuestError>,
    /// Services left out of its input because it fails on them: (`namespace/name`, why).
    pub quarantined: Vec<(String, String)>,
    /// How long it ran (with its checks, and the renders that found what it fails on); `None`
    /// when its input had not changed, so it did not run.
    pub took: Option<std::time::Duration>,
    /// How many services it received.
    pub services: usize,
}

/// Every guest's result of one render, in slot order, and what is left out between guests: the
/// domains a guest did not get because an earlier one routes them, and services of a proto no
/// guest serves.
pub struct Run {
    pub outputs: Vec<GuestOutput>,
    pub conflicts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Parts(#[from] PartsError),
    #[error(transparent)]
    Assemble(#[from] assemble::AssembleError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("{0} given for guest {1}, but no guest has that name (guests: {2})")]
    UnknownGuest(&'static str, String, String),
    #[error(
        "setting {key} given for guest {guest}, which has no such setting (it reads: {known}); \
         check --set and the guests configuration"
    )]
    UnknownSetting {
        guest: String,
        key: String,
        known: String,
    },
    #[error("{0}")]
    Engine(String),
}

impl Pipeline {
    /// Find the parts, compile and pre-instantiate the guests.
    pub fn new(config: &GuestConfig) -> Result<Self, PipelineError> {
        let parts = parts::parts(config.dir.as_deref(), config.remote.clone())?;
        // Settings and scopes for a guest left out are kept for when it loads.
        let missing = config
            .missing
            .iter()
            .map(|(slot, _)| parts::guest_name(slot));
        let names: Vec<&str> = parts.iter().map(Part::name).chain(missing).collect();
        let given = (config.settings.keys().map(|k| ("settings", k)))
            .chain(config.scopes.keys().map(|k| ("a scope", k)));
        for (what, name) in given {
            if !names.contains(&name.as_str()) {
                return Err(PipelineError::UnknownGuest(
                    what,
                    name.clone(),
                    names.join(", "),
                ));
            }
        }
        let sandbox = Sandbox::new(config.limits, config.cache_dir.clone())
            .map_err(|e| PipelineError::Engine(format!("{e:#}")))?;
        let mut loaded = Vec::new();
        let mut reports = Vec::new();
        for part in parts {
            let state = match &part.source {
                Source::Guest(wasm) => {
                    let guest = sandbox.load(part.name(), wasm)?;
                    let settings: Vec<(String, String)> = config
                        .settings
                        .get(part.name())
                        .map(|s| s.clone().into_iter().collect())
                        .unwrap_or_default();
                    check_settings(&guest, &settings)?;
                    let scope: Scope = config.scopes.get(part.name()).cloned().unwrap_or_default();
                    reports.push(crate::status::GuestReport {
                        slot: part.slot.clone(),
                        source: part.origin.clone(),
                        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(wasm))),
                        signature: signature(&part, config),
                        world: guest.world().into(),
                        compiled: guest.compiled().into(),
                        trust: format!("{:?}", scope.trust).to_lowercase(),
                        services: 0,
                        last_run: None,
                    });
                    Some(Loaded {
                        declared: guest.description().and_then(|d| d.protos.clone()),
                        reads: Arc::new(Reads::of(guest.description())),
                        servers_apart: guest.description().is_some_and(|d| d.servers_apart),
                        servers: Mutex::new(ServersCache::default()),
                        guest,
                        settings,
                        scope,
                        last: Mutex::new(None),
                    })
                }
                Source::Static(_) => None,
            };
            loaded.push((part, state));
        }
        Ok(Pipeline {
            sandbox,
            limits: config.limits,
            renders: AtomicU64::new(0),
            parts: loaded,
            reports,
            written: Mutex::default(),
            last_claim: Mutex::default(),
        })
    }

    /// Each guest as loaded, for the status page: source, digest, signature, world.
    pub fn reports(&self) -> Vec<crate::status::GuestReport> {
        self.reports.clone()
    }

    fn guests(&self) -> impl Iterator<Item = (&Part, &Loaded)> {
        self.parts
            .iter()
            .filter_map(|(part, loaded)| Some((part, loaded.as_ref()?)))
    }

    /// Run every guest on the services its scope admits. Each guest's result is kept apart, so
    /// one failing guest does not take the others' output with it.
    pub fn run(
        &self,
        services: &[Arc<Service>],
        namespaces: &NamespaceLabels,
        certificates: &Certificates,
    ) -> Run {
        let mut domains = BTreeMap::new();
        let mut conflicts = Vec::new();
        let team_involved = self.guests().any(|(_, l)| l.scope.trust == Trust::Team);
        let outputs = self
            .guests()
            .map(|(part, loaded)| {
                let admitted = (services.iter()).filter(|s| {
                    loaded
                        .scope
                        .admits(s, namespaces, loaded.declared.as_deref())
                });
                let input = if team_involved {
                    input(
                        part,
                        loaded.scope.trust,
                        admitted,
                        &mut domains,
                        &mut conflicts,
                    )
                } else {
                    admitted.cloned().collect()
                };
                let tls = certificates.for_services(&input);
                self.render_if_changed(part, loaded, self.cluster(loaded, input, tls))
            })
            .collect();
        conflicts.extend(self.unserved(services));
        Run { outputs, conflicts }
    }

    /// A warning for each proto of services that no guest serves, naming them, when every guest
    /// says which protos it serves (a guest that does not say may serve any).
    fn unserved(&self, services: &[Arc<Service>]) -> Vec<String> {
        let mut served = Vec::new();
        for (_, loaded) in self.guests() {
            match &loaded.declared {
                Some(protos) => served.extend(protos.iter().map(String::as_str)),
                None => return Vec::new(),
            }
        }
        served.sort();
        served.dedup();
        let mut unserved: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for service in services
            .iter()
            .filter(|s| !served.contains(&s.proto.as_str()))
        {
            unserved
                .entry(&service.proto)
                .or_default()
                .push(service.id());
        }
        unserved
            .into_iter()
            .map(|(proto, ids)| {
                format!(
                    "proto {proto}, which no guest serves (the guests serve: {}), is the proto \
                     of {}: not routed",
                    served.join(", "),
                    ids.join(", ")
                )
            })
            .collect()
    }

    /// Render one guest, unless its input is the one its last successful output came from; a
    /// guest that writes servers apart is asked only for what changed.
    fn render_if_changed(&self, part: &Part, loaded: &Loaded, mut input: Input) -> GuestOutput {
        if !loaded.servers_apart {
            return self.render_cached(part, loaded, input);
        }
        // The rest of the configuration from the services without their endpoints, which an
        // endpoint change leaves as they were; then the `server` lines of the services that
        // changed, placed into it.
        let started = std::time::Instant::now();
        let mut cache = loaded.servers.lock().unwrap();
        cache.update(&input.services, &loaded.reads);
        let services = input.services.clone();
        input.endpoints = false;
        // The two calls are independent: on a full render, each has every service.
        let (mut output, ran) = std::thread::scope(|scope| {
            let rendered = scope.spawn(|| self.render_cached(part, loaded, input));
            let ran = self.place_servers(part, loaded, &mut cache);
            let rendered = rendered.join();
            (
                rendered.unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                ran,
            )
        });
        let Ok(fragment) = output.result else {
            return output;
        };
        output.result = ran.and_then(|ran| match (ran, output.took, &cache.last_merged) {
            // Neither part ran: the output is the last one.
            (false, None, Some(last)) => Ok(last.clone()),
            _ => {
                output.took = Some(started.elapsed());
                self.merge_servers(part, loaded, &mut cache, &services, fragment)
            }
        });
        output.quarantined.extend(cache.misplaced.iter().cloned());
        output
            .quarantined
            .extend(cache.entries.iter().filter_map(|entry| {
                let Some(Err(why)) = &entry.placements else {
                    return None;
                };
                Some((entry.service.id(), why.clone()))
            }));
        output
    }

    /// Ask the guest for the `server` lines of the services of the cache it has not given them
    /// for: [`SERVICES_PER_CALL`] at a time, or, when that fails, one by one, so that a service
    /// it fails on is quarantined and the others keep their servers. Whether it ran.
    fn place_servers(
        &self,
        part: &Part,
        loaded: &Loaded,
        cache: &mut ServersCache,
    ) -> Result<bool, GuestError> {
        let missing: Vec<usize> = (0..cache.entries.len())
            .filter(|&i| cache.entries[i].placements.is_none())
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        let services: Vec<Arc<Service>> = missing
            .iter()
            .map(|&i| cache.entries[i].service.clone())
            .collect();
        let context = self.context(loaded);
        let ask = |services: &[Arc<Service>]| {
            self.renders.fetch_add(1, Ordering::Relaxed);
            let placements =
                (self.sandbox).servers(&loaded.guest, &context, services, &loaded.reads)?;
            if placements.len() != services.len() {
                return Err(GuestError::Refused {
                    guest: part.name().to_string(),
                    reason: format!(
                        "`servers` returned {} lists of placements for {} services",
                        placements.len(),
                        services.len()
                    ),
                });
            }
            // Checked here, in parts, so that merging them into a render that passed its own
            // checks needs no check of every section again.
            let mut written = String::new();
            for (service, placements) in services.iter().zip(&placements) {
                for line in placements.iter().flat_map(|p| &p.servers) {
                    let why = if line.keyword() == "server" {
                        written.clear();
                        assemble::write_directive(&mut written, line).err()
                    } else {
                        Some(format!("`{}` where only `server` lines go", line.keyword()))
                    };
                    if let Some(why) = why {
                        return Err(GuestError::Refused {
                            guest: part.name().to_string(),
                            reason: format!("servers of service {}: {why}", service.id()),
                        });
                    }
                }
            }
            Ok(placements)
        };
        // A first render asks for thousands: in parts, taken by one thread per core beside the
        // guest's `render`. A part the guest fails on is asked again one service at a time.
        let asked = crate::parallel::in_parts(&services, SERVICES_PER_CALL, ask);
        let parts = services
            .chunks(SERVICES_PER_CALL)
            .zip(missing.chunks(SERVICES_PER_CALL));
        for ((services, missing), asked) in parts.zip(asked) {
            let placed: Vec<Result<Arc<[Placement]>, String>> = match asked {
                Ok(placements) => placements.into_iter().map(|p| Ok(p.into())).collect(),
                Err(error) if services.len() == 1 => vec![Err(error.to_string())],
                Err(_) => (services.iter())
                    .map(|service| {
                        ask(std::slice::from_ref(service))
                            .map(|mut placements| placements.remove(0).into())
                            .map_err(|error| error.to_string())
                    })
                    .collect(),
            };
            for (&i, placed) in missing.iter().zip(placed) {
                cache.entries[i].placements = Some(placed);
            }
        }
        Ok(true)
    }

    /// `fragment` with the `server` lines of each service of `input` in the sections their
    /// placements name, checked against the guest's policy; a service whose placements name a
    /// section the render lacks is left out (`misplaced`). A section whose render and
    /// placements are the ones of the last merge is that merge's, so an endpoint change makes
    /// one section.
    fn merge_servers(
        &self,
        part: &Part,
        loaded: &Loaded,
        cache: &mut ServersCache,
        input: &[Arc<Service>],
        mut fragment: Fragment,
    ) -> Result<Fragment, GuestError> {
        let refused = |reason: String| GuestError::Refused {
            guest: part.name().to_string(),
            reason,
        };
        let index: foldhash::HashMap<&str, usize> = fragment
            .sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind.has_servers())
            .filter_map(|(i, s)| Some((s.name.as_deref()?, i)))
            .collect();
        let mut additions: Vec<Vec<(Arc<[Placement]>, usize)>> =
            vec![Vec::new(); fragment.sections.len()];
        let mut misplaced = Vec::new();
        for entry in &cache.entries {
            let Some(Ok(placements)) = &entry.placements else {
                continue;
            };
            if let Some(p) = (placements.iter()).find(|p| !index.contains_key(p.section.as_str())) {
                let id = entry.service.id();
                let why = refused(format!(
                    "servers of service {id} for section {}, which its render does not have",
                    p.section
                ));
                misplaced.push((id, why.to_string()));
                continue;
            }
            for (k, placement) in placements.iter().enumerate() {
                additions[index[placement.section.as_str()]].push((placements.clone(), k));
            }
        }
        drop(index);
        // Each section that is not the one of the last merge in its place is made anew: on a
        // first merge, thousands, on several threads.
        let mut before = std::mem::take(&mut cache.merged).into_iter();
        let kept: Vec<Option<Merged>> = (fragment.sections.iter().zip(&additions))
            .map(|(base, from)| before.next().filter(|last| last.made_of(base, from)))
            .collect();
        let missing: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].is_none()).collect();
        let made = crate::parallel::by_chunks(&missing, 2000, |missing| {
            (missing.iter())
                .map(|&i| placed_into(&fragment.sections[i], &additions[i]))
                .collect::<Vec<_>>()
        });
        let mut made = made.into_iter().flatten();
        let merged: Vec<Merged> = (kept.into_iter())
            .zip(fragment.sections.iter().zip(additions))
            .map(|(kept, (base, from))| {
                kept.unwrap_or_else(|| Merged {
                    base: base.clone(),
                    from,
                    section: made.next().expect("one section made for each not kept"),
                })
            })
            .collect();
        // The render passed its checks, and each service's lines theirs when they were placed.
        fragment.sections = merged.iter().map(|m| m.section.clone()).collect();
        crate::policy::check(
            part.name(),
            &loaded.scope,
            (input, true),
            &fragment,
            MAPS_DIR,
        )
        .map_err(|refusal| refused(refusal.to_string()))?;
        cache.merged = merged;
        cache.misplaced = misplaced;
        cache.last_merged = Some(fragment.clone());
        Ok(fragment)
    }

    /// Render one guest, unless its input is the one its last successful output came from.
    fn render_cached(&self, part: &Part, loaded: &Loaded, input: Input) -> GuestOutput {
        let mut last = loaded.last.lock().unwrap();
        if let Some(same) = last.as_mut().filter(|last| last.input.same(&input)) {
            // The newest objects, so that the next comparison is of pointers again.
            same.input = input;
            return GuestOutput {
                slot: part.slot.clone(),
                team: loaded.scope.trust == Trust::Team,
                result: Ok(same.fragment.clone()),
                quarantined: same.quarantined.clone(),
                took: None,
                services: same.input.services.len(),
            };
        }
        let checked = last.as_ref().map(|last| &last.fragment);
        let started = std::time::Instant::now();
        let mut output = self.render_guest(part, loaded, &input, checked);
        output.took = Some(started.elapsed());
        output.services = input.services.len();
        if let Ok(fragment) = &output.result {
            *last = Some(LastOutput {
                input,
                fragment: fragment.clone(),
                quarantined: output.quarantined.clone(),
            });
        }
        output
    }

    /// How many times guests were run since the pipeline was built (renders skipped for an
    /// unchanged input do not count).
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// Where guest `loaded` writes, and its settings.
    fn context(&self, loaded: &Loaded) -> Context {
        Context {
            maps_dir: MAPS_DIR.into(),
            certs_dir: CERTS_DIR.into(),
            settings: loaded.settings.clone(),
        }
    }

    /// What guest `loaded` receives: `services`, with their endpoints, and `tls`, with its
    /// settings.
    fn cluster(&self, loaded: &Loaded, services: Vec<Arc<Service>>, tls: Tls) -> Input {
        Input {
            context: self.context(loaded),
            services,
            tls,
            endpoints: true,
            reads: loaded.reads.clone(),
        }
    }

    /// One render of one guest, its output checked against the policy.
    fn attempt(
        &self,
        part: &Part,
        loaded: &Loaded,
        cluster: &Input,
        checked: Option<&Fragment>,
    ) -> Result<Fragment, GuestError> {
        self.renders.fetch_add(1, Ordering::Relaxed);
        let fragment = self.sandbox.render(&loaded.guest, cluster)?;
        let refused = |reason: String| GuestError::Refused {
            guest: part.name().to_string(),
            reason,
        };
        assemble::check_fragment(&fragment, checked).map_err(refused)?;
        let services = (&cluster.services[..], cluster.endpoints);
        crate::policy::check(part.name(), &loaded.scope, services, &fragment, MAPS_DIR)
            .map_err(|refusal| refused(refusal.to_string()))?;
        Ok(fragment)
    }

    /// Render one guest; when it fails, find the services it fails on by rendering halves
    /// (a guest is a pure function of its input) and render the rest without them. Only a
    /// guest that fails with no service at all, or on more services than
    /// [`QUARANTINE_RENDERS`] can find, has no output.
    fn render_guest(
        &self,
        part: &Part,
        loaded: &Loaded,
        cluster: &Input,
        checked: Option<&Fragment>,
    ) -> GuestOutput {
        let output = |result, quarantined| GuestOutput {
            slot: part.slot.clone(),
            team: loaded.scope.trust == Trust::Team,
            result,
            quarantined,
            took: None,
            services: 0,
        };
        let error = match self.attempt(part, loaded, cluster, checked) {
            Err(error) if !cluster.services.is_empty() => error,
            result => return output(result, Vec::new()),
        };
        if (self.attempt(part, loaded, &cluster.with(Vec::new()), checked)).is_err() {
            return output(Err(error), Vec::new());
        }
        let services = &cluster.services;
        let render = |indices: &[usize]| {
            let subset = indices.iter().map(|&i| services[i].clone()).collect();
            self.attempt(part, loaded, &cluster.with(subset), checked)
        };
        let mut budget = Budget {
            renders: QUARANTINE_RENDERS,
            until: std::time::Instant::now() + 2 * self.limits.timeout,
        };
        let mut culprits = Vec::new();
        let all: Vec<usize> = (0..services.len()).collect();
        if !culprits_of(&render, &all, error.to_string(), &mut budget, &mut culprits) {
            tracing::warn!(
                guest = part.slot,
                "could not single out the services the guest fails on within {QUARANTINE_RENDERS} \
                 renders and twice its time limit"
            );
            return output(Err(error), Vec::new());
        }
        let rest: Vec<usize> = all
            .into_iter()
            .filter(|i| culprits.iter().all(|(c, _)| c != i))
            .collect();
        let quarantined = culprits
            .into_iter()
            .map(|(i, why)| (services[i].id(), why))
            .collect();
        output(render(&rest), quarantined)
    }

    /// How many guests there are: [`Pipeline::run`] gives an output for each.
    pub fn guest_count(&self) -> usize {
        self.guests().count()
    }

    /// Assemble the outputs of [`Pipeline::run`] (one per guest, in order).
    pub fn assemble(&self, fragments: &[Fragment]) -> Result<Assembled, assemble::AssembleError> {
        let mut fragments = fragments.iter();
        let outputs: Vec<_> = self
            .parts
            .iter()
            .map(|(part, loaded)| {
                let output = match (loaded, &part.source) {
                    (None, Source::Static(text)) => Output::Static(text),
                    _ => Output::Fragment(fragments.next().expect("one fragment per guest")),
                };
                (part, output)
            })
            .collect();
        assemble::assemble_with(&outputs, &mut self.written.lock().unwrap())
    }

    /// Give each listening address, section name and map file name to its first claimant:
    /// the static files, then the guests in slot order. A guest's section or map file that
    /// claims what is taken is dropped from `fragments` (the outputs of [`Pipeline::run`]);
    /// each error names both claimants.
    pub fn claim(&self, fragments: &mut [Fragment]) -> Vec<String> {
        // Most renders change servers, not what is claimed: the last claim's outcome holds.
        let mut last = self.last_claim.lock().unwrap();
        if let Some(last) = last.as_mut().filter(|l| claim_alike(&l.given, fragments)) {
            // Compared with next time: mostly the same sections, so mostly pointers.
            last.given = fragments.to_vec();
            for (fragment, (sections, maps)) in fragments.iter_mut().zip(&last.kept) {
                keep(&mut fragment.sections, sections);
                keep(&mut fragment.maps, maps);
            }
            return last.errors.clone();
        }
        let given = fragments.to_vec();
        let errors = self.claim_all(fragments);
        let kept = (given.iter().zip(fragments.iter()))
            .map(|(given, kept)| {
                let sections = kept_of(&given.sections, &kept.sections);
                (sections, kept_of(&given.maps, &kept.maps))
            })
            .collect();
        *last = Some(LastClaim {
            given,
            kept,
            errors: errors.clone(),
        });
        errors
    }

    fn claim_all(&self, fragments: &mut [Fragment]) -> Vec<String> {
        let mut claims = Claims::default();
        let mut errors = Vec::new();
        for (part, _) in &self.parts {
            if let Source::Static(text) = &part.source {
                let owner: Arc<str> = format!("static file {}", part.slot).into();
                let mut refused = |result: Result<(), String>| {
                    if let Err(error) = result {
                        errors.push(format!("{owner} {error}: change one of them"));
                    }
                };
                for (kind, name) in static_sections(text) {
                    refused(claims.claim_name(&owner, kind, name));
                }
                for bind in static_binds(text) {
                    refused(claims.claim(&owner, [bind]));
                }
            }
        }
        for ((part, _), fragment) in self.guests().zip(fragments) {
            let owner = format!("guest {}", part.slot);
            errors.extend(claims.claim_sections(&owner, &mut fragment.sections));
            errors.extend(claims.claim_maps(&owner, &mut fragment.maps));
        }
        errors
    }

    /// Render `services` into a configuration; a `platform` guest without output fails the
    /// render, with every such guest's error, and a `team` guest without output is left out.
    /// Quarantined services, domains an earlier guest routes, and sections that lose a claim
    /// are left out, each with an error log.
    pub fn render(
        &self,
        services: &[Arc<Service>],
        namespaces: &NamespaceLabels,
        certificates: &Certificates,
    ) -> Result<Assembled, Vec<PipelineError>> {
        let run = self.run(services, namespaces, certificates);
        for conflict in &run.conflicts {
            tracing::warn!("{conflict}");
        }
        let mut fragments = Vec::new();
        let mut errors = Vec::new();
        for output in run.outputs {
            for (object, why) in &output.quarantined {
                tracing::error!(guest = output.slot, object, "quarantined: {why}");
            }
            match output.result {
                Ok(fragment) => fragments.push(fragment),
                Err(error) if output.team => {
                    tracing::error!("{error}; the team guest is left out");
                    fragments.push(empty_fragment());
                }
                Err(error) => errors.push(error.into()),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for error in self.claim(&mut fragments) {
            tracing::error!("{error}");
        }
        self.assemble(&fragments)
            .map(|assembled| assembled.with_certificates(certificates))
            .map_err(|e| vec![e.into()])
    }
}

/// How a guest's signature was checked, in words.
fn signature(part: &Part, config: &GuestConfig) -> String {
    let from_registry = config.remote.iter().any(|r| r.slot == part.slot);
    match (from_registry, config.unsigned_allowed) {
        (true, false) => "verified at start against the trusted keys".into(),
        (true, true) => "checked at start; unsigned allowed (--insecure-allow-unsigned)".into(),
        (false, _) if part.origin == "bundled" => "bundled in the binary".into(),
        (false, _) => "a local file: not checked".into(),
    }
}

/// Refuse a setting `guest` says it does not read: most likely a typo, which would otherwise
/// be ignored without a word.
fn check_settings(guest: &Guest, settings: &[(String, String)]) -> Result<(), PipelineError> {
    let Some(known) = guest.description().and_then(|d| d.settings.as_ref()) else {
        return Ok(());
    };
    match settings
        .iter()
        .find(|(key, _)| !known.iter().any(|s| s.key == *key))
    {
        Some((key, _)) => Err(PipelineError::UnknownSetting {
            guest: guest.name().to_string(),
            key: key.clone(),
            known: known
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        None => Ok(()),
    }
}

/// What a guest without output contributes.
pub fn empty_fragment() -> Fragment {
    Fragment {
        sections: Vec::new(),
        maps: Vec::new(),
    }
}

/// The input of `part`'s guest, of trust `trust`, from the services its scope `admitted`. A
/// domain an earlier guest routes is left out for a later one when either is a `team` guest
/// (platform guests may share), with a conflict naming both; a service left with none of its
/// domains is left out.
fn input<'a>(
    part: &Part,
    trust: Trust,
    admitted: impl Iterator<Item = &'a Arc<Service>>,
    domains: &mut BTreeMap<String, (String, Trust)>,
    conflicts: &mut Vec<String>,
) -> Vec<Arc<Service>> {
    let mut input = Vec::new();
    for service in admitted {
        let mut dropped = Vec::new();
        for domain in &service.domains {
            match domains.get(domain) {
                Some((holder, theirs))
                    if *holder != part.slot && (trust == Trust::Team || *theirs == Trust::Team) =>
                {
                    conflicts.push(format!(
                        "guest {}: domain {domain} of service {} left out: guest {holder} \
                         routes it, and the earlier slot keeps a domain",
                        part.slot,
                        service.id()
                    ));
                    dropped.push(domain);
                }
                Some(_) => {}
                None => {
                    domains.insert(domain.clone(), (part.slot.clone(), trust));
                }
            }
        }
        if dropped.is_empty() {
            input.push(service.clone());
        } else if dropped.len() < service.domains.len() {
            let mut trimmed = Service::clone(service);
            trimmed.domains.retain(|domain| !dropped.contains(&domain));
            input.push(Arc::new(trimmed));
        }
    }
    input
}

/// What the search for the services a guest fails on may still spend.
struct Budget {
    renders: usize,
    until: std::time::Instant,
}

/// Find the members of `indices` that `render` fails on alone, given that it fails on all of
/// them with `error`: halve, and recurse into each half that fails. `false` when the budget
/// runs out, or when the halves render and only their union fails (no one service to blame).
fn culprits_of(
    render: &dyn Fn(&[usize]) -> Result<Fragment, GuestError>,
    indices: &[usize],
    error: String,
    budget: &mut Budget,
    culprits: &mut Vec<(usize, String)>,
) -> bool {
    if let [only] = indices {
        culprits.push((*only, error));
        return true;
    }
    let (left, right) = indices.split_at(indices.len() / 2);
    let mut found = false;
    for half in [left, right] {
        if budget.renders == 0 || std::time::Instant::now() > budget.until {
            return false;
        }
        budget.renders -= 1;
        if let Err(error) = render(half) {
            if !culprits_of(render, half, error.to_string(), budget, culprits) {
                return false;
            }
            found = true;
        }
    }
    found
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::SectionKind;

    /// The model of two http services and a redis one; `shop` served at `shop_ip`.
    fn services(shop_ip: &str) -> Vec<Arc<Service>> {
        let service = |name: &str, proto: &str, extra: &str, ip: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: t, \
                 annotations: {{wasmconfd.io/proto: {proto}, {extra}}}}}\n\
                 spec: {{ports: [{{name: {proto}, port: 80}}]}}\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n\
                 metadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}\n\
                 ports: [{{name: {proto}, port: 8080}}]\nendpoints: [{{addresses: [{ip}]}}]\n---\n"
            )
        };
        let text = service("shop", "http", "wasmconfd.io/domain: shop.test", shop_ip)
            + &service("blog", "http", "wasmconfd.io/domain: blog.test", "10.0.0.2")
            + &service(
                "cache",
                "redis",
                "wasmconfd.io/listen-port: '6380'",
                "10.0.0.3",
            );
        let (objects, _) = crate::source::parse_snapshot(&text).unwrap();
        crate::model::build(&objects, &Default::default()).0
    }

    /// [`services`] with `shop` served at 10.0.0.1, changed by `change`.
    fn shop_changed(change: impl FnOnce(&mut Service)) -> Vec<Arc<Service>> {
        let mut services = services("10.0.0.1");
        let shop = services.iter_mut().find(|s| s.name == "shop").unwrap();
        change(Arc::make_mut(shop));
        services
    }

    #[test]
    fn a_guest_whose_input_did_not_change_is_not_run_again() {
        let pipeline = Pipeline::new(&GuestConfig::default()).unwrap();
        let namespaces = NamespaceLabels::new();
        let certificates = Certificates::only_default().unwrap();
        let render = |ip: &str| pipeline.render(&services(ip), &namespaces, &certificates);
        let first = render("10.0.0.1").unwrap();
        assert_eq!(
            pipeline.renders(),
            5,
            "base, http (render, and servers for its services), https and redis"
        );

        let again = render("10.0.0.1").unwrap();
        assert_eq!(again, first);
        assert_eq!(pipeline.renders(), 5, "nothing changed: no guest runs");

        let moved = render("10.0.0.9").unwrap();
        assert_eq!(
            pipeline.renders(),
            6,
            "one endpoint moved: only the http guest's servers, of that one service"
        );
        assert!(moved.config.contains("10.0.0.9:8080"), "{}", moved.config);
        assert!(!moved.config.contains("10.0.0.1:8080"), "{}", moved.config);
    }

    #[test]
    fn a_change_to_an_annotation_no_guest_reads_runs_no_guest() {
        let pipeline = Pipeline::new(&GuestConfig::default()).unwrap();
        let namespaces = NamespaceLabels::new();
        let certificates = Certificates::only_default().unwrap();
        let annotated = |key: &str| {
            let services = shop_changed(|shop| {
                shop.annotations.push((key.into(), "true".into()));
                shop.annotations.sort();
            });
            pipeline.render(&services, &namespaces, &certificates)
        };
        let first = annotated("meta.helm.sh/release-name").unwrap();
        assert_eq!(pipeline.renders(), 5);

        let helm = annotated("meta.helm.sh/revision").unwrap();
        assert_eq!(helm, first);
        assert_eq!(
            pipeline.renders(),
            5,
            "the bundled guests read only wasmconfd.io/ annotations: none runs"
        );

        annotated("wasmconfd.io/ssl-redirect").unwrap();
        assert_eq!(
            pipeline.renders(),
            7,
            "the http guest reads it: its render, and its servers of that one service"
        );
    }

    #[test]
    fn a_change_to_an_endpoint_detail_no_guest_reads_runs_no_guest() {
        let pipeline = Pipeline::new(&GuestConfig::default()).unwrap();
        let namespaces = NamespaceLabels::new();
        let certificates = Certificates::only_default().unwrap();
        let on_node = |node: &str| {
            let services = shop_changed(|shop| shop.endpoints[0].node = Some(node.into()));
            pipeline.render(&services, &namespaces, &certificates)
        };
        let first = on_node("node-1").unwrap();
        assert_eq!(pipeline.renders(), 5);
        assert_eq!(on_node("node-2").unwrap(), first);
        assert_eq!(
            pipeline.renders(),
            5,
            "the bundled guests read no endpoint details: none runs"
        );
    }

    /// After any sequence of changes to the cluster (a service added, removed, or given another
    /// proto, domain or path; its endpoints moved, made unready or gone), the kept pipeline, fed
    /// by the kept model as the daemon feeds it, writes the configuration and map files that a
    /// new pipeline writes from a full build: none of its caches (each guest's last output,
    /// each service's servers, the merged sections, the written texts) keeps anything stale.
    #[test]
    fn after_any_sequence_of_changes_the_kept_pipeline_renders_what_a_new_one_does() {
        let mut random = crate::model::reproducible_random(0x9e37_79b9_7f4a_7c15);
        let object = |text: String| crate::source::parse_snapshot(&text).unwrap().0;
        let rules = crate::model::Rules::default();
        let namespaces = NamespaceLabels::new();
        let certificates = Certificates::only_default().unwrap();
        let pipeline = Pipeline::new(&GuestConfig::default()).unwrap();
        let mut model = crate::model::Model::default();
        let mut objects = crate::source::Objects::default();
        let mut servers_seen = 0;
        for step in 0..50 {
            let i = random(8);
            let name = format!("s{i}");
            match random(4) {
                0 => objects
                    .services
                    .retain(|s| s.meta.name.as_deref() != Some(&name)),
                1 => {
                    let proto = ["http", "http", "https", "redis"][random(4) as usize];
                    let path = ["", ", wasmconfd.io/path: /x"][random(2) as usize];
                    let annotations = match proto {
                        "redis" => format!("wasmconfd.io/listen-port: '{}'", 6380 + i),
                        _ => format!("wasmconfd.io/domain: d{}.test{path}", random(5)),
                    };
                    let new = object(format!(
                        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: t, \
                         annotations: {{wasmconfd.io/proto: {proto}, {annotations}}}}}\n\
                         spec: {{ports: [{{name: {proto}, port: 80}}]}}"
                    ));
                    objects
                        .services
                        .retain(|s| s.meta.name.as_deref() != Some(&name));
                    objects.services.extend(new.services);
                }
                _ => {
                    let endpoints: Vec<String> = (0..random(4))
                        .map(|_| {
                            let ready = random(4) > 0;
                            format!(
                                "{{addresses: [10.0.{i}.{}], conditions: {{ready: {ready}}}}}",
                                random(4) + 1
                            )
                        })
                        .collect();
                    let new = object(format!(
                        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                         addressType: IPv4\nmetadata: {{name: {name}-a, namespace: t, labels: \
                         {{kubernetes.io/service-name: {name}}}}}\n\
                         ports: [{{name: http, port: 8080}}, {{name: https, port: 8443}}, \
                         {{name: redis, port: 6379}}]\nendpoints: [{}]",
                        endpoints.join(", ")
                    ));
                    let slice = format!("{name}-a");
                    objects
                        .endpoint_slices
                        .retain(|s| s.meta.name.as_deref() != Some(&slice));
                    objects.endpoint_slices.extend(new.endpoint_slices);
                }
            }
            let kept =
                pipeline.render(&model.build(&objects, &rules).0, &namespaces, &certificates);
            let full = crate::model::build(&objects, &rules).0;
            let new = (Pipeline::new(&GuestConfig::default()).unwrap()).render(
                &full,
                &namespaces,
                &certificates,
            );
            let (kept, new) = (kept.unwrap(), new.unwrap());
            assert_eq!(kept.config, new.config, "step {step}");
            assert_eq!(kept.maps, new.maps, "step {step}");
            servers_seen = servers_seen.max(kept.config.matches("\n    server ").count());
        }
        assert!(
            servers_seen >= 4,
            "the sequence placed servers: {servers_seen}"
        );
    }

    #[test]
    fn thousands_of_services_asked_for_their_servers_in_parts_each_have_them() {
        let address = |i: usize| format!("10.1.{}.{}", i / 200, i % 200 + 1);
        let items: Vec<String> = (0..2_001)
            .flat_map(|i| {
                [
                    format!(
                        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "s{i}", "namespace": "t", "annotations": {{"wasmconfd.io/proto": "http", "wasmconfd.io/domain": "s{i}.test"}}}}, "spec": {{"ports": [{{"name": "http", "port": 80}}]}}}}"#
                    ),
                    format!(
                        r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4", "metadata": {{"name": "s{i}-1", "namespace": "t", "labels": {{"kubernetes.io/service-name": "s{i}"}}}}, "ports": [{{"name": "http", "port": 8080}}], "endpoints": [{{"addresses": ["{}"]}}]}}"#,
                        address(i)
                    ),
                ]
            })
            .collect();
        let text = format!(r#"{{"kind": "List", "items": [{}]}}"#, items.join(","));
        let (objects, _) = crate::source::parse_snapshot(&text).unwrap();
        let services = crate::model::build(&objects, &Default::default()).0;
        let pipeline = Pipeline::new(&GuestConfig::default()).unwrap();
        let certificates = Certificates::only_default().unwrap();
        let assembled = (pipeline.render(&services, &NamespaceLabels::new(), &certificates))
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(
            pipeline.renders(),
            4 + 2_001usize.div_ceil(SERVICES_PER_CALL) as u64,
            "base, http (render, and servers in parts of 1,000), https and redis"
        );
        for i in [0, 1_000, 1_001, 2_000] {
            let server = format!(" {}:8080", address(i));
            assert!(assembled.config.contains(&server), "no server{server}");
        }
        let servers = (assembled.config.lines())
            .filter(|line| line.trim_start().starts_with("server "))
            .count();
        assert_eq!(servers, 2_001, "one server per service");
    }

    #[test]
    fn a_claim_holds_while_names_and_binds_stay_and_is_made_again_when_they_change() {
        let section = |kind, name: &str, lines: &[(&str, &str)]| {
            Arc::new(Section {
                kind,
                name: Some(name.into()),
                directives: lines
                    .iter()
                    .map(|(keyword, arg)| crate::bindings::Directive::new(keyword, [arg]))
                    .collect(),
            })
        };
        let front = section(SectionKind::Frontend, "web", &[("bind", ":80")]);
        let old = section(SectionKind::Backend, "a", &[("server", "10.0.0.1:80")]);
        let given = vec![Fragment {
            sections: vec![front.clone(), old.clone()],
            maps: Vec::new(),
        }];
        let servers_changed = vec![Fragment {
            sections: vec![
                front.clone(),
                section(SectionKind::Backend, "a", &[("server", "10.0.0.2:80")]),
            ],
            maps: Vec::new(),
        }];
        assert!(claim_alike(&given, &servers_changed));
        for (kind, name, line) in [
            (SectionKind::Frontend, "web", ("bind", ":81")),
            (SectionKind::Frontend, "other", ("bind", ":80")),
            (SectionKind::Listen, "web", ("bind", ":80")),
        ] {
            let changed = vec![Fragment {
                sections: vec![section(kind, name, &[line]), old.clone()],
                maps: Vec::new(),
            }];
            assert!(!claim_alike(&given, &changed), "{name} {line:?}");
        }
        assert!(!claim_alike(&given, &[]));

        let kept = [old.clone()];
        assert_eq!(kept_of(&given[0].sections, &kept), [false, true]);
        let mut sections = servers_changed[0].sections.clone();
        keep(&mut sections, &[false, true]);
        assert_eq!(sections, [servers_changed[0].sections[1].clone()]);
    }
}
