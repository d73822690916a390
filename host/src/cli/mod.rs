//! The command line. Every flag also reads a `WASMCONFD_*` environment variable; flags win.
//!
//! [`args`] holds the argument groups commands share and turns them into the plain
//! configuration of each stage; each command has a module of its own.

pub mod args;
pub mod guest;
pub mod render;
pub mod run;
pub mod snapshot;

use clap::{Parser, Subcommand, ValueEnum};
use guest::{InspectArgs, NewGuestArgs, PruneArgs, PullArgs, PushArgs, SignArgs, VerifyArgs};
use render::RenderArgs;
use run::RunArgs;
use snapshot::SnapshotArgs;
use tokio::runtime::Runtime;

/// Keep HAProxy in front of Kubernetes configured by sandboxed WebAssembly guests.
#[derive(Debug, Parser)]
#[command(
    name = "wasmconfd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WASMCONFD_COMMIT"), ")"),
    about,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(
        long,
        global = true,
        env = "WASMCONFD_LOG",
        default_value = "info",
        help_heading = "Global options"
    )]
    pub log_level: String,

    /// Log format.
    #[arg(long, global = true, env = "WASMCONFD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Global options")]
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
    /// Print a completion script for SHELL, e.g. `wasmconfd completions bash >
    /// /etc/bash_completion.d/wasmconfd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `wasmconfd man | man -l -`. With --dir, write it and one
    /// page per subcommand (`wasmconfd-render.1`, ...) there, e.g. into /usr/share/man/man1.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Start a new guest project that builds as it is and passes its own test.
    ///
    /// The project routes services with proto NAME by Host header to their ready endpoints. It
    /// has a build.sh, and a test.sh that builds the guest, renders a sample cluster through
    /// wasmconfd with the bundled base guest, checks it with `haproxy -c` and compares the
    /// guest's part with test/expected.cfg (`./test.sh --update` accepts a new output). See
    /// docs/guests.md.
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
    /// Work with the cache of compiled and pulled guests (--cache-dir).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove what was not used within --unused-for: compiled guests not loaded, guests pulled
    /// from registries not fetched, and the blobs no kept guest needs. A node's guests are used
    /// at every start, so they stay; a guest removed is compiled or pulled again when needed.
    Prune(PruneArgs),
}

/// Run the command, with `runtime` for what is asynchronous (the Kubernetes API, registries).
pub fn execute(command: &Command, runtime: &Runtime) -> anyhow::Result<()> {
    match command {
        Command::Render(args) => render::render(args, runtime),
        Command::Snapshot(args) => snapshot::snapshot(args, runtime),
        Command::Run(args) => run::run(args, runtime),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "wasmconfd", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => {
            use clap::CommandFactory as _;
            match dir {
                Some(dir) => clap_mangen::generate_to(Cli::command(), dir).map_err(|e| {
                    anyhow::anyhow!("cannot write the manual pages to {}: {e}", dir.display())
                })?,
                None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?,
            }
            Ok(())
        }
        Command::Guest { command } => match command {
            GuestCommand::New(args) => guest::new_guest(args),
            GuestCommand::Push(args) => guest::push_guest(args, runtime),
            GuestCommand::Pull(args) => guest::pull_guest(args, runtime),
            GuestCommand::Sign(args) => guest::sign_guest(args, runtime),
            GuestCommand::Verify(args) => guest::verify_guest(args, runtime),
            GuestCommand::Inspect(args) => guest::inspect_guest(args, runtime),
            GuestCommand::Cache {
                command: CacheCommand::Prune(args),
            } => guest::prune_cache(args),
        },
    }
}
