//! The `atrest` command: parse, set up logging, dispatch. Everything else is in the library.

// The workspace lints (Cargo.toml) deny it; here, as in the library, nothing may allow it.
#![forbid(unsafe_code)]

mod cli;

use clap::FromArgMatches;

fn main() {
    // As `kubectl-atrest` (a kubectl plugin) usage and help say `kubectl atrest`.
    let matches = cli::command().get_matches();
    let args = match cli::args::Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let filter = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATREST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("atrest={filter}"))),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs and CI output stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(cli::EXIT_FAILED);
        }
    };
    let code = runtime.block_on(cli::run(args));
    std::process::exit(code);
}
