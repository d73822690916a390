//! Running guests: one wasmtime engine, each guest compiled once (precompiled code cached on
//! disk by content hash), pre-instantiated, and run in a fresh store per render with a time
//! limit and a memory cap. WASI is linked deny-all with a fixed clock and fixed random bytes,
//! so guests whose language runtime imports WASI load, and stay pure functions of their input.

use crate::bindings::{self, Description, GuestPre, Input, Level, RenderError};
use crate::fragment::{Fragment, Placement};
use crate::source::printable;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, ComponentType, HasSelf, Linker, Lower, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How often the epoch advances: the granularity of the time limit.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much of the end of a guest's stderr is kept, to explain a crash.
const STDERR_KEPT: usize = 4 << 10;

/// How much one render of a guest may return and log, so that the host work its output causes
/// (writing files, holding and assembling the text, logging) stays bounded like the guest's own
/// time and memory. Far above what 50,000 services need.
pub const OUTPUT_LIMITS: OutputLimits = OutputLimits {
    sections: 100_000,
    directives: 2_000_000,
    map_files: 100,
    map_entries: 1_000_000,
    copied_bytes: 128 << 20,
    log_bytes: 1 << 20,
};

/// See [`OUTPUT_LIMITS`].
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    pub sections: usize,
    pub directives: usize,
    pub map_files: usize,
    pub map_entries: usize,
    /// Bytes the host may copy out of the guest's memory for one call's result (or one call the
    /// guest makes): each string counted as often as the guest returns it (it may return one
    /// string of its memory over and over), and each list by what it takes in the host.
    /// wasmtime's "hostcall fuel", checked as the result is lifted, before it is copied.
    pub copied_bytes: usize,
    pub log_bytes: usize,
}

impl OutputLimits {
    /// What of `fragment` goes over a limit, if anything: (what, how many, limit).
    fn exceeded(&self, fragment: &bindings::WitFragment) -> Option<(&'static str, usize, usize)> {
        let directives = fragment.sections.iter().map(|s| s.directives.len()).sum();
        let entries = fragment.maps.iter().map(|m| m.entries.len()).sum();
        [
            ("sections", fragment.sections.len(), self.sections),
            ("directives", directives, self.directives),
            ("map files", fragment.maps.len(), self.map_files),
            ("map entries", entries, self.map_entries),
        ]
        .into_iter()
        .find(|(_, count, limit)| count > limit)
    }
}

/// Per-render limits of a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one render may take.
    pub timeout: Duration,
    /// Linear memory one render may use, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(5),
            memory: 256 << 20,
        }
    }
}

/// Why a guest produced no output. Each case names the guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest {guest} is not a valid wasmconfd guest component: {message}")]
    Load { guest: String, message: String },
    #[error("guest {guest} ran longer than its time limit of {limit:?} and was stopped")]
    Timeout { guest: String, limit: Duration },
    #[error(
        "guest {guest} tried to use more than its memory limit of {limit_mib} MiB and was stopped"
    )]
    OutOfMemory { guest: String, limit_mib: usize },
    #[error("guest {guest} crashed: {message}")]
    Trap { guest: String, message: String },
    #[error("guest {guest} returned {count} {what}, more than the {limit} one render may return")]
    TooLarge {
        guest: String,
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error(
        "guest {guest} gave the host more than the {limit_mib} MiB one call may copy out of its \
         memory (each string counted as often as it appears)"
    )]
    TooMuchCopied { guest: String, limit_mib: usize },
    #[error("guest {guest} could not render: {}", describe(.error))]
    Render { guest: String, error: RenderError },
    #[error("guest {guest}'s output was refused: {reason}")]
    Refused { guest: String, reason: String },
}

/// A guest's error, with control characters escaped so it cannot forge log lines.
fn describe(error: &RenderError) -> String {
    let text = match error {
        RenderError::InvalidSetting(e) => format!("setting {}: {}", e.key, e.reason),
        RenderError::Other(message) => message.clone(),
    };
    printable(&text).into_owned()
}

/// The sandbox guests run in: the engine and linker every guest shares, and the limits.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
    limits: Limits,
    compiled: Option<CompiledCache>,
}

/// Precompiled guests in a directory, each file sealed with an HMAC-SHA256 tag under a key of
/// this node's, kept beside the directory (`<dir>.key`, mode 0600, made on first use), not in
/// it: whoever can write the cache (a shared volume, say) cannot make this node run their code.
struct CompiledCache {
    dir: PathBuf,
    key: [u8; 32],
}

type Mac = hmac::Hmac<Sha256>;

impl CompiledCache {
    /// The cache in `dir` with its key, made when missing. `None`, with a warning, when the
    /// key cannot be made or read, or others could read or change it.
    fn open_dir(dir: PathBuf) -> Option<CompiledCache> {
        let path = crate::files::with_suffix(&dir, ".key");
        match read_or_make_key(&path) {
            Ok(key) => Some(CompiledCache { dir, key }),
            Err(error) => {
                tracing::warn!(key = %path.display(), %error, "precompiled guests are not cached: every start compiles them");
                None
            }
        }
    }

    fn mac(&self, name: &str, code: &[u8]) -> Mac {
        use hmac::Mac as _;
        let mut mac = Mac::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(code);
        mac
    }

    /// The tag, then `code`, as the file `name` holds it.
    fn seal(&self, name: &str, code: &[u8]) -> Vec<u8> {
        use hmac::Mac as _;
        let mut file = self.mac(name, code).finalize().into_bytes().to_vec();
        file.extend_from_slice(code);
        file
    }

    /// The code in `file` (named `name`), if its tag is this node's for it.
    fn open<'a>(&self, name: &str, file: &'a [u8]) -> Option<&'a [u8]> {
        use hmac::Mac as _;
        let (tag, code) = file.split_at_checked(32)?;
        self.mac(name, code).verify_slice(tag).ok()?;
        Some(code)
    }
}

/// Remove the precompiled guests in `dir` (`*.cwasm`) not used since `cutoff`: each is
/// touched when it is loaded, so what a running node loads at its starts stays.
pub fn prune_compiled(
    dir: &std::path::Path,
    cutoff: std::time::SystemTime,
) -> std::io::Result<crate::files::Removed> {
    let mut removed = crate::files::Removed::default();
    for (path, meta) in crate::files::files_in(dir)? {
        if path.extension().is_some_and(|e| e == "cwasm") && meta.modified()? < cutoff {
            removed.remove(&path, &meta)?;
        }
    }
    Ok(removed)
}

/// The 32-byte key in `path`, made (mode 0600) when there is none. Made whole under another
/// name and linked into place, so processes starting together agree on one key.
fn read_or_make_key(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    loop {
        match std::fs::File::open(path) {
            Ok(mut file) => {
                if file.metadata()?.mode() & 0o077 != 0 {
                    return Err(invalid(
                        "others may read or change the key: make it mode 0600 (or remove it)",
                    ));
                }
                let mut key = [0; 32];
                file.read_exact(&mut key)?;
                if file.read(&mut [0])? != 0 {
                    return Err(invalid(
                        "the key is not 32 bytes: remove it to make a new one",
                    ));
                }
                return Ok(key);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0; 32];
                std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
                let dir = crate::files::parent_dir(path);
                std::fs::create_dir_all(dir)?;
                let temporary = dir.join(format!(".wasmconfd-key-{}", std::process::id()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)?;
                file.write_all(&key)?;
                file.sync_all()?;
                let linked = std::fs::hard_link(&temporary, path);
                std::fs::remove_file(&temporary)?;
                match linked {
                    Ok(()) => return Ok(key),
                    // Another process made it first: read theirs.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(error) => return Err(error),
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// A compiled, pre-instantiated guest.
pub struct Guest {
    name: String,
    pre: Pre,
    description: Option<Description>,
    /// How its native code came to be: compiled now, or loaded precompiled from the cache.
    compiled: &'static str,
}

/// A guest pre-instantiated for the version of the contract it was built for.
enum Pre {
    Current(GuestPre<State>),
    V0_4(bindings::v0_4::GuestPre<State>),
    V0_3(bindings::v0_3::GuestPre<State>),
    V0_2(bindings::v0_2::GuestPre<State>),
    V0_1(bindings::v0_1::GuestPre<State>),
}

impl Guest {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The world it was built for, as its WIT names it.
    pub fn world(&self) -> &'static str {
        match self.pre {
            Pre::Current(_) => bindings::WORLD,
            Pre::V0_4(_) => bindings::WORLD_0_4,
            Pre::V0_3(_) => bindings::WORLD_0_3,
            Pre::V0_2(_) => bindings::WORLD_0_2,
            Pre::V0_1(_) => bindings::WORLD_0_1,
        }
    }

    /// What the guest says about itself; `None` for a 0.1.0 guest, which cannot say.
    pub fn description(&self) -> Option<&Description> {
        self.description.as_ref()
    }

    /// `compiled` at load, or `cached` when its precompiled code came from the cache.
    pub fn compiled(&self) -> &'static str {
        self.compiled
    }
}

impl Sandbox {
    /// The one engine of the process: component model, epoch interruption, nothing else.
    /// Precompiled code is cached in `cache_dir` when given.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Guest::add_to_linker::<_, HasSelf<State>>(&mut linker, |state| state)?;
        bindings::v0_4::Guest::add_to_linker::<_, HasSelf<State>>(&mut linker, |state| state)?;
        bindings::v0_3::Guest::add_to_linker::<_, HasSelf<State>>(&mut linker, |state| state)?;
        bindings::v0_2::Guest::add_to_linker::<_, HasSelf<State>>(&mut linker, |state| state)?;
        bindings::v0_1::Guest::add_to_linker::<_, HasSelf<State>>(&mut linker, |state| state)?;
        Ok(Sandbox {
            engine,
            linker,
            limits,
            compiled: cache_dir.and_then(CompiledCache::open_dir),
        })
    }

    /// Compile (or load from the cache) and pre-instantiate the component `wasm`, for the
    /// current version of the contract or else for an earlier one, and ask it to describe
    /// itself (a 0.1.0 guest cannot).
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<Guest, GuestError> {
        let load_error = |e: wasmtime::Error| GuestError::Load {
            guest: name.to_string(),
            message: with_hint(format!("{e:#}")),
        };
        let (component, compiled) = self.compile(name, wasm).map_err(load_error)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(load_error)?;
        // Each version's bindings check the component's whole world; why each refused it is
        // said when none takes it.
        let refusals = &mut Vec::new();
        let (pre, description) =
            if let Some(current) = tried(refusals, bindings::WORLD, GuestPre::new(pre.clone())) {
                let description = self.describe(name, |store| {
                    current.instantiate(&mut *store)?.call_describe(store)
                })?;
                (Pre::Current(current), Some(description))
            } else if let Some(old) = tried(
                refusals,
                bindings::WORLD_0_4,
                bindings::v0_4::GuestPre::new(pre.clone()),
            ) {
                let description = self.describe(name, |store| {
                    old.instantiate(&mut *store)?.call_describe(store)
                })?;
                (Pre::V0_4(old), Some(description.into()))
            } else if let Some(old) = tried(
                refusals,
                bindings::WORLD_0_3,
                bindings::v0_3::GuestPre::new(pre.clone()),
            ) {
                let description = self.describe(name, |store| {
                    old.instantiate(&mut *store)?.call_describe(store)
                })?;
                (Pre::V0_3(old), Some(description.into()))
            } else if let Some(old) = tried(
                refusals,
                bindings::WORLD_0_2,
                bindings::v0_2::GuestPre::new(pre.clone()),
            ) {
                let description = self.describe(name, |store| {
                    old.instantiate(&mut *store)?.call_describe(store)
                })?;
                (Pre::V0_2(old), Some(description.into()))
            } else if let Some(old) = tried(
                refusals,
                bindings::WORLD_0_1,
                bindings::v0_1::GuestPre::new(pre),
            ) {
                (Pre::V0_1(old), None)
            } else {
                return Err(load_error(wasmtime::Error::msg(refusals.join("; "))));
            };
        Ok(Guest {
            name: name.to_string(),
            pre,
            description,
            compiled,
        })
    }

    /// Call the guest's `describe` (through `call`) in a fresh store, with the limits of a
    /// render.
    fn describe<D>(
        &self,
        name: &str,
        call: impl FnOnce(&mut Store<State>) -> wasmtime::Result<D>,
    ) -> Result<D, GuestError> {
        let mut store = self.store(name);
        let result = call(&mut store);
        result.map_err(|error| self.stopped(name.to_string(), error, store.data()))
    }

    /// Compile `wasm`, or load its precompiled code from the cache. Precompiled code is native
    /// code run as it is, so it is deserialized only when this node's key authenticates it for
    /// this very component and engine: a file swapped, edited or written by anyone else is
    /// compiled again from the component.
    /// Also says which: `compiled` or `cached`.
    fn compile(&self, name: &str, wasm: &[u8]) -> wasmtime::Result<(Component, &'static str)> {
        let Some(cache) = &self.compiled else {
            tracing::info!(guest = name, "compiling guest (no cache directory)");
            return Ok((Component::new(&self.engine, wasm)?, "compiled"));
        };
        let file_name = self.compiled_name(wasm);
        let path = cache.dir.join(&file_name);
        if let Ok(file) = std::fs::read(&path) {
            match cache.open(&file_name, &file) {
                // SAFETY: the code is authenticated as written by `precompile_component` of an
                // engine with this compatibility hash for this component, by this node.
                Some(code) => match unsafe { Component::deserialize(&self.engine, code) } {
                    Ok(component) => {
                        crate::files::touch(&path);
                        return Ok((component, "cached"));
                    }
                    Err(error) => {
                        tracing::warn!(guest = name, path = %path.display(), %error, "ignoring a broken precompiled guest")
                    }
                },
                None => tracing::warn!(
                    guest = name,
                    path = %path.display(),
                    "the precompiled guest is not authenticated by this node's key (changed, or \
                     written elsewhere): compiling it again from the component"
                ),
            }
        }
        let started = Instant::now();
        tracing::info!(guest = name, "compiling guest");
        let bytes = self.engine.precompile_component(wasm)?;
        tracing::info!(
            guest = name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled guest"
        );
        if let Err(error) = crate::files::write_atomically(&path, &cache.seal(&file_name, &bytes)) {
            tracing::warn!(guest = name, path = %path.display(), %error, "cannot cache the compiled guest");
        }
        // SAFETY: the bytes were just produced by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &bytes) }?;
        Ok((component, "compiled"))
    }

    /// `<sha256 of the wasm>-<engine compatibility>.cwasm`.
    fn compiled_name(&self, wasm: &[u8]) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let digest = hex::encode(Sha256::digest(wasm));
        format!("{digest}-{:016x}.cwasm", hasher.finish())
    }

    /// A fresh store for one call into guest `name`, with its memory and time limits.
    fn store(&self, name: &str) -> Store<State> {
        let mut store = Store::new(&self.engine, State::new(name, self.limits.memory));
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(OUTPUT_LIMITS.copied_bytes);
        let ticks = self
            .limits
            .timeout
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            .max(1);
        store.set_epoch_deadline(ticks as u64);
        store.epoch_deadline_trap();
        store
    }

    /// Run `guest` on `input` in a fresh store; a guest built for an earlier version of the
    /// contract gets it without what that version lacks.
    pub fn render(&self, guest: &Guest, input: &Input) -> Result<Fragment, GuestError> {
        let mut store = self.store(&guest.name);
        let cluster = input.view();
        let result = match &guest.pre {
            Pre::Current(pre) => call_render(pre.instance_pre(), &mut store, &cluster),
            Pre::V0_4(pre) => call_render(pre.instance_pre(), &mut store, &cluster),
            Pre::V0_3(pre) => call_render(pre.instance_pre(), &mut store, &cluster),
            Pre::V0_2(pre) => call_render(pre.instance_pre(), &mut store, &cluster.older()),
            Pre::V0_1(pre) => call_render(pre.instance_pre(), &mut store, &cluster.older()),
        };
        let said = store.data().stderr.text();
        if !said.trim().is_empty() {
            tracing::debug!(
                guest = guest.name,
                "the guest wrote to stderr: {}",
                said.trim()
            );
        }
        let guest_name = guest.name.clone();
        match result {
            Ok(Ok(fragment)) => match OUTPUT_LIMITS.exceeded(&fragment) {
                None => Ok(fragment.into()),
                Some((what, count, limit)) => Err(GuestError::TooLarge {
                    guest: guest_name,
                    what,
                    count,
                    limit,
                }),
            },
            Ok(Err(error)) => Err(GuestError::Render {
                guest: guest_name,
                error,
            }),
            Err(error) => Err(self.stopped(guest_name, error, store.data())),
        }
    }

    /// Run `guest`'s `servers` on `services`, with the annotations and labels it `reads`, in a
    /// fresh store: one list of placements per service. Only a guest built for 0.3.0 or later
    /// has it.
    pub fn servers(
        &self,
        guest: &Guest,
        context: &bindings::Context,
        services: &[Arc<bindings::Service>],
        reads: &bindings::Reads,
    ) -> Result<Vec<Vec<Placement>>, GuestError> {
        type Servers = Result<Vec<Vec<Placement>>, RenderError>;
        let guest_name = || guest.name.clone();
        let pre = match &guest.pre {
            Pre::Current(pre) => pre.instance_pre(),
            Pre::V0_4(pre) => pre.instance_pre(),
            Pre::V0_3(pre) => pre.instance_pre(),
            Pre::V0_2(_) | Pre::V0_1(_) => {
                return Err(GuestError::Render {
                    guest: guest_name(),
                    error: RenderError::Other("built for an earlier contract: no servers".into()),
                });
            }
        };
        let services: Vec<_> = services.iter().map(|s| s.view(true, reads)).collect();
        let mut store = self.store(&guest.name);
        let result = pre.instantiate(&mut store).and_then(|instance| {
            let servers = instance
                .get_typed_func::<(&bindings::Context, &[bindings::ServiceView]), (Servers,)>(
                    &mut store, "servers",
                )?;
            Ok(servers.call(&mut store, (context, &services))?.0)
        });
        match result {
            Ok(Ok(placements)) => {
                let count: usize = placements.iter().flatten().map(|p| p.servers.len()).sum();
                if count > OUTPUT_LIMITS.directives {
                    return Err(GuestError::TooLarge {
                        guest: guest_name(),
                        what: "server lines",
                        count,
                        limit: OUTPUT_LIMITS.directives,
                    });
                }
                Ok(placements)
            }
            Ok(Err(error)) => Err(GuestError::Render {
                guest: guest_name(),
                error,
            }),
            Err(error) => Err(self.stopped(guest_name(), error, store.data())),
        }
    }

    /// Why a guest that did not return was stopped: its memory or time limit, or a crash,
    /// explained with what it wrote to stderr.
    fn stopped(&self, guest: String, error: wasmtime::Error, state: &State) -> GuestError {
        // wasmtime's error for hostcall fuel running out; its type is private.
        if (error.root_cause().to_string())
            .contains("fuel allocated for hostcalls has been exhausted")
        {
            return GuestError::TooMuchCopied {
                guest,
                limit_mib: OUTPUT_LIMITS.copied_bytes >> 20,
            };
        }
        if state.limiter.exceeded {
            return GuestError::OutOfMemory {
                guest,
                limit_mib: self.limits.memory >> 20,
            };
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return GuestError::Timeout {
                guest,
                limit: self.limits.timeout,
            };
        }
        tracing::debug!(guest, "guest crashed: {error:?}");
        let reason = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        let message = match state.stderr.text().trim() {
            "" => reason,
            said => format!("{reason}; it wrote: {said}"),
        };
        GuestError::Trap { guest, message }
    }
}

/// What a store holds for one render.
struct State {
    guest: String,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// What the guest writes to stderr (a panic message, a traceback), to explain a crash.
    stderr: Tail,
    /// Bytes of log messages in this render so far.
    logged: usize,
}

impl State {
    fn new(guest: &str, memory: usize) -> Self {
        // Deny-all: no preopened directories, environment, arguments, network or stdin, and a
        // clock and random numbers that are the same on every run. Stdout is discarded.
        let stderr = Tail::default();
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(FixedClock)
            .monotonic_clock(SteppingClock::default())
            .secure_random(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0))
            .insecure_random(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0))
            .insecure_random_seed(0)
            .build();
        State {
            guest: guest.to_string(),
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory,
                exceeded: false,
            },
            stderr,
            logged: 0,
        }
    }
}

/// An output stream that keeps the last [`STDERR_KEPT`] bytes written to it and drops the rest,
/// so a guest can write as much as it likes and never fails to.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<u8>>>);

impl Tail {
    fn keep(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap();
        kept.extend(bytes);
        let excess = kept.len().saturating_sub(STDERR_KEPT);
        kept.drain(..excess);
    }

    /// What was kept, trimmed, with control characters (line breaks too) escaped so it cannot
    /// forge log lines.
    fn text(&self) -> String {
        let kept = self.0.lock().unwrap();
        let text = String::from_utf8_lossy(&kept.iter().copied().collect::<Vec<_>>()).into_owned();
        printable(text.trim()).into_owned()
    }
}

impl wasmtime_wasi::cli::IsTerminal for Tail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Tail {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl wasmtime_wasi::p2::OutputStream for Tail {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Tail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Tail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.keep(bytes);
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::wasmconfd::haproxy::types::Host for State {}

/// A guest of an earlier version logs as a current one.
macro_rules! log_as_current {
    ($($version:ident),*) => {$(
        impl bindings::$version::wasmconfd::haproxy::host::Host for State {
            fn log(&mut self, level: bindings::$version::Level, message: String) {
                use bindings::$version::Level as Old;
                let level = match level {
                    Old::Debug => Level::Debug,
                    Old::Info => Level::Info,
                    Old::Warn => Level::Warn,
                    Old::Error => Level::Error,
                };
                bindings::wasmconfd::haproxy::host::Host::log(self, level, message)
            }
        }
    )*};
}

log_as_current!(v0_4, v0_3, v0_2, v0_1);

impl bindings::v0_4::wasmconfd::haproxy::types::Host for State {}

impl bindings::v0_3::wasmconfd::haproxy::types::Host for State {}

impl bindings::v0_2::wasmconfd::haproxy::types::Host for State {}

impl bindings::wasmconfd::haproxy::host::Host for State {
    /// A guest's message, with control characters escaped so it cannot forge log lines.
    fn log(&mut self, level: Level, message: String) {
        let guest = self.guest.as_str();
        let limit = OUTPUT_LIMITS.log_bytes;
        let before = self.logged;
        self.logged = self.logged.saturating_add(message.len());
        if self.logged > limit {
            if before <= limit {
                tracing::warn!(
                    guest,
                    "the guest logged more than {limit} bytes in one render; the rest of its messages are dropped"
                );
            }
            return;
        }
        let message = printable(&message);
        match level {
            Level::Debug => tracing::debug!(guest, "{message}"),
            Level::Info => tracing::info!(guest, "{message}"),
            Level::Warn => tracing::warn!(guest, "{message}"),
            Level::Error => tracing::error!(guest, "{message}"),
        }
    }
}

/// Caps linear memory and remembers that the cap was hit, to say so.
struct MemoryLimiter {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} bytes reached", self.limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The Unix epoch, always.
struct FixedClock;

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// What `result`, the bindings of world `world` for a component, holds; or `None`, with why
/// they refused it in `refusals`.
fn tried<T>(refusals: &mut Vec<String>, world: &str, result: wasmtime::Result<T>) -> Option<T> {
    (result.map_err(|error| refusals.push(format!("as a {world} guest, {error:#}")))).ok()
}

/// Instantiate `pre` and call its `render` export with `cluster`, a WIT `cluster` record.
fn call_render<C>(
    pre: &wasmtime::component::InstancePre<State>,
    store: &mut Store<State>,
    cluster: &C,
) -> wasmtime::Result<Result<bindings::WitFragment, RenderError>>
where
    C: ComponentType + Lower + Sync,
{
    let instance = pre.instantiate(&mut *store)?;
    let render = instance.get_typed_func::<(&C,), (Result<bindings::WitFragment, RenderError>,)>(
        &mut *store,
        "render",
    )?;
    Ok(render.call(store, (cluster,))?.0)
}

/// A monotonic clock that advances one microsecond per reading: deterministic, yet never stuck
/// for a guest that waits for time to pass.
#[derive(Default)]
struct SteppingClock(AtomicU64);

impl wasmtime_wasi::HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

/// What a component imports and exports, by name, read without compiling it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// The top-level imports and exports of the component `wasm`.
pub fn interface(wasm: &[u8]) -> anyhow::Result<Interface> {
    use wasmparser::{ComponentExternalKind, ComponentTypeRef, Encoding, Payload};
    let mut interface = Interface::default();
    let mut depth = 0;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    anyhow::bail!(
                        "a core WebAssembly module, not a component: build for wasm32-wasip2, \
                         or make a component of it (see docs/guests.md)"
                    );
                }
                depth += 1;
            }
            Payload::End(_) => depth -= 1,
            // Types a world `use`s are imported and exported too; they are left out.
            Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    let import = import?;
                    if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                        interface.imports.push(import.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    let export = export?;
                    if export.kind != ComponentExternalKind::Type {
                        interface.exports.push(export.name.name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(interface)
}

/// A load error, with what to do where the cause is a common one.
fn with_hint(mut message: String) -> String {
    if message.contains("imports instance `wasi:http/") {
        message.push_str(
            "; guests have no network, so leave wasi:http out of the build \
             (componentize-js: --disable http fetch-event)",
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundled_guest_imports_the_host_and_exports_describe_and_render() {
        let http = interface(include_bytes!("../../guests/http.wasm")).unwrap();
        assert_eq!(http.exports, ["describe", "render", "servers"]);
        assert!(
            http.imports
                .contains(&"wasmconfd:haproxy/host@0.5.0".to_string()),
            "{http:?}"
        );
        let error = interface(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(
            error.contains("a core WebAssembly module, not a component"),
            "{error}"
        );
    }

    #[test]
    fn a_guest_importing_wasi_http_is_told_to_build_without_it() {
        let message = "component imports instance `wasi:http/types@0.2.10`, but a matching \
                       implementation was not found in the linker";
        assert!(with_hint(message.into()).ends_with("--disable http fetch-event)"));
        assert_eq!(with_hint("other".into()), "other");
    }
}
