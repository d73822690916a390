//! `wasmconfd guest ...`: start, push, pull, sign, verify and inspect guests.

use super::args::{CacheArgs, KeysArgs, RegistryArgs, TrustArgs};
use crate::source::printable;
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use tokio::runtime::Runtime;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove what was not used for this long.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub unused_for: std::time::Duration,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `wasmconfd guest cache prune`.
pub fn prune_cache(args: &PruneArgs) -> anyhow::Result<()> {
    let dir = args
        .cache
        .dir()
        .context("no cache directory: pass --cache-dir")?;
    let cutoff = std::time::SystemTime::now()
        .checked_sub(args.unused_for)
        .unwrap_or(std::time::UNIX_EPOCH);
    let what = |e: std::io::Error| anyhow::anyhow!("cannot prune {}: {e}", dir.display());
    let compiled = crate::guests::sandbox::prune_compiled(&dir, cutoff).map_err(what)?;
    let (records, blobs) = crate::guests::oci::Cache::new(args.cache.oci_dir()?)
        .prune(cutoff)
        .map_err(what)?;
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    println!(
        "removed from {}, unused for {}: {} compiled guests ({}), {} pulled guests and {} blobs ({})",
        dir.display(),
        humantime::format_duration(args.unused_for),
        compiled.files,
        mib(compiled.bytes),
        records.files,
        blobs.files,
        mib(records.bytes + blobs.bytes),
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A component file, or oci://REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST).
    pub guest: String,
    #[command(flatten)]
    pub keys: KeysArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The private key to sign with: ECDSA P-256 in PEM (`openssl ecparam -name prime256v1
    /// -genkey -noout`). `--key`, as cosign names it, works too.
    #[arg(long = "signing-key", visible_alias = "key", value_name = "FILE")]
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
    #[command(flatten)]
    pub keys: KeysArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
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
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
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

    /// For --lang rust: use the guest SDK in DIR (guest-sdk/ of a wasmconfd checkout, to work
    /// on the SDK itself) by path, instead of the copy a new project carries in sdk/.
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
}

/// The guest component in `file`; for a directory (a guest's project, say), what to give instead.
fn read_component(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if file.is_dir() {
        let built = std::fs::read_dir(file.join("build"))
            .into_iter()
            .flatten()
            .flatten();
        let wasm: Vec<_> = (built.map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
            .collect();
        let there = match &wasm[..] {
            [one] => format!("; {} is there", one.display()),
            _ => String::new(),
        };
        anyhow::bail!(
            "{} is a directory: give the guest's component, a .wasm file (a project made by \
             `wasmconfd guest new` builds it with ./build.sh into build/NAME.wasm){there}",
            file.display()
        );
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// `wasmconfd guest push`.
pub fn push_guest(args: &PushArgs, runtime: &Runtime) -> anyhow::Result<()> {
    let wasm = read_component(&args.file)?;
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    let digest = runtime.block_on(registry.push(&wasm, &args.reference))?;
    println!("{}", args.reference.at(&digest));
    Ok(())
}

/// `wasmconfd guest pull`.
pub fn pull_guest(args: &PullArgs, runtime: &Runtime) -> anyhow::Result<()> {
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    let trust = args.trust.trust()?;
    let cache = crate::guests::oci::Cache::new(args.cache.oci_dir()?);
    let (digest, wasm) = runtime.block_on(crate::guests::oci::fetch(
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

/// `wasmconfd guest sign`.
pub fn sign_guest(args: &SignArgs, runtime: &Runtime) -> anyhow::Result<()> {
    let key = crate::guests::oci::read_signing_key(&args.key)?;
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    runtime.block_on(async {
        let digest = registry.resolve(&args.reference).await?;
        registry.sign(&args.reference, &digest, &key).await?;
        println!("signed {}", args.reference.at(&digest));
        anyhow::Ok(())
    })
}

/// `wasmconfd guest inspect`.
pub fn inspect_guest(args: &InspectArgs, runtime: &Runtime) -> anyhow::Result<()> {
    let mut report: Vec<(&str, String)> = Vec::new();
    let wasm = if args.guest.starts_with("oci://") {
        let reference: crate::guests::oci::GuestRef =
            args.guest.parse().map_err(anyhow::Error::msg)?;
        let keys = args.keys.read()?;
        let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
        runtime.block_on(async {
            let digest = registry.resolve(&reference).await?;
            let signature = match registry.verify(&reference, &digest, &keys).await {
                Ok((_, key)) => format!("verified: signed by {}", args.keys.files[key].display()),
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
        read_component(&file)?
    };
    report.push(("digest", crate::guests::oci::digest_of(&wasm)));
    report.push(("size", format!("{} bytes", wasm.len())));
    report.extend(describe_component(args, &wasm)?);
    for (key, value) in report {
        for (i, line) in value.lines().enumerate() {
            println!("{:<11} {line}", if i == 0 { key } else { "" });
        }
    }
    Ok(())
}

/// The world `wasm` was built for and whether this wasmconfd loads it (compiled and linked as
/// `run` would, never run), and what it exports and imports.
fn describe_component(
    args: &InspectArgs,
    wasm: &[u8],
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let interface = match crate::guests::sandbox::interface(wasm) {
        Ok(interface) => interface,
        Err(error) => return Ok(vec![("world", format!("none: {error:#}"))]),
    };
    let sandbox = crate::guests::Sandbox::new(Default::default(), args.cache.dir())
        .map_err(|e| anyhow::anyhow!("cannot start the engine: {e:#}"))?;
    let list = |names: Vec<String>| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join("\n")
        }
    };
    let mut rows = match sandbox.load(&args.guest, wasm) {
        Ok(guest) => {
            let said = |what: Option<Vec<String>>| {
                what.map(list)
                    .unwrap_or_else(|| "does not say (any)".to_string())
            };
            let description = guest.description();
            let settings = description.and_then(|d| {
                let settings = d.settings.as_ref()?;
                Some(
                    settings
                        .iter()
                        .map(|s| format!("{}: {}", s.key, printable(&s.help)))
                        .collect(),
                )
            });
            vec![
                (
                    "world",
                    format!("{} (this wasmconfd loads it)", guest.world()),
                ),
                ("protos", said(description.and_then(|d| d.protos.clone()))),
                ("settings", said(settings)),
                (
                    "annotations",
                    said(description.and_then(|d| d.annotations.clone())),
                ),
                ("labels", said(description.and_then(|d| d.labels.clone()))),
                (
                    "endpoints",
                    if description.is_none_or(|d| d.endpoint_details) {
                        "with their ports, node, zone and pod".into()
                    } else {
                        "address, port and conditions only (no ports, node, zone or pod)".into()
                    },
                ),
                (
                    "ports",
                    if description.is_none_or(|d| d.ports) {
                        "each service's ports and routed port".into()
                    } else {
                        "none (each endpoint still comes with its routed port)".into()
                    },
                ),
                (
                    "servers",
                    if description.is_some_and(|d| d.servers_apart) {
                        "written apart: an endpoint change asks only for its service's".into()
                    } else {
                        "written by render: an endpoint change renders everything again".into()
                    },
                ),
            ]
        }
        Err(error) => vec![("world", format!("this wasmconfd does not load it: {error}"))],
    };
    let wasi = interface.imports.iter().any(|i| i.starts_with("wasi:"));
    rows.extend([
        ("exports", list(interface.exports)),
        ("imports", list(interface.imports)),
    ]);
    if wasi {
        rows.push((
            "sandbox",
            "the WASI imports are linked deny-all: no files, network, environment or \
             arguments; a fixed clock and fixed random bytes; what it writes to stderr goes to \
             the debug log"
                .into(),
        ));
    }
    Ok(rows)
}

/// `wasmconfd guest verify`.
pub fn verify_guest(args: &VerifyArgs, runtime: &Runtime) -> anyhow::Result<()> {
    if args.keys.files.is_empty() {
        anyhow::bail!(
            "guest verify needs --trusted-key FILE, the public key whose signature counts"
        );
    }
    let keys = args.keys.read()?;
    let registry = crate::guests::oci::Registry::new(&args.registry.access()?)?;
    runtime.block_on(async {
        let digest = registry.resolve(&args.reference).await?;
        let (_, key) = registry.verify(&args.reference, &digest, &keys).await?;
        println!(
            "verified {} (signed by {})",
            args.reference.at(&digest),
            args.keys.files[key].display()
        );
        anyhow::Ok(())
    })
}
