use clap::Parser;
use wasmconfd::cli::{self, Cli, LogFormat};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    if matches!(cli.command, cli::Command::Render(_)) {
        keep_freed_memory();
    }
    // The one async runtime. Guests run outside it: WASI calls block on a runtime of their own.
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| cli::execute(&cli.command, &runtime));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`wasmconfd man | head`): nothing left to say.
        Err(error) if broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// mimalloc keeps memory freed for a second (its `purge_delay`), and in a committed arena it
/// does not give it back at all: at 10,000 services the peak RSS of a render then counts the
/// snapshot's text and every object read, long freed, with what the guests use. Given back 10 ms
/// after it is freed, and arenas committed as they are used, a render's peak RSS was 93 MB
/// rather than 132, for about 5% more time (docs/benchmarks.md). `MIMALLOC_PURGE_DELAY` and
/// `MIMALLOC_ARENA_EAGER_COMMIT` still decide when set. The daemon keeps these; a one-shot
/// render then changes the delay ([`keep_freed_memory`]).
///
/// It runs before `main`, as the program loads: whether an arena is committed at once is decided
/// when it is made, at the first allocation, which comes before `main`.
#[used]
#[unsafe(link_section = ".init_array")]
static RETURN_FREED_MEMORY: extern "C" fn() = return_freed_memory;

extern "C" fn return_freed_memory() {
    set_unless_given(ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0);
    set_unless_given(PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 10);
}

/// A render runs once and exits: memory it frees is kept for what it allocates next, not given
/// back to the system to be faulted in again page by page. At 10,000 services a quarter of the
/// render's page faults were memory given back and taken again; keeping it made the render about
/// 7% faster for 2 MB more peak RSS (docs/benchmarks.md).
fn keep_freed_memory() {
    set_unless_given(PURGE_DELAY, "MIMALLOC_PURGE_DELAY", -1);
}

// mimalloc 3's `mi_option_t` values (mimalloc.h); libmimalloc-sys names only older ones.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Set mimalloc's `option` to `value` unless the environment gives it (as `variable`).
fn set_unless_given(option: libmimalloc_sys::mi_option_t, variable: &str, value: i64) {
    if std::env::var_os(variable).is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads when it next needs it.
        unsafe { libmimalloc_sys::mi_option_set(option, value as _) };
    }
}

fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr (stdout may carry a configuration). Compiler noise is off unless asked for,
/// and so are the kube client's own lines for a failed request or watch (wasmconfd logs them,
/// with the server, the resource and what happens next).
fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::builder().parse_lossy(format!(
        "cranelift=warn,wasmtime=warn,kube_client::client::builder=off,kube_runtime::watcher=error,{}",
        cli.log_level
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
