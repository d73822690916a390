use clap::Parser;
use wasmconfd::cli::{self, Cli, LogFormat};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
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
