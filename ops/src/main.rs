//! The `tandem` binary: servers, playground, administration, data commands and benchmarks.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 unavailable, 4 not found, 5 conflict, 6 disk full.

/// `print!` for command output: a reader that went away (`tandem full-scan t | head`) ends the
/// command quietly with 0 instead of a panic, and any other write error (a full disk) ends it
/// with exit code 1 and the reason. (SIGPIPE stays ignored: with its default action a connection
/// a server reset under a vectored write would kill the CLI without its "unavailable" error.)
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), false) };
}

/// `println!` for command output; see `out!`.
macro_rules! outln {
    () => { $crate::write_stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), true) };
}

mod admin;
mod backup;
mod bench;
mod dup;
mod cli;
mod config;
mod data;
mod playground;
mod policy;
mod servers;

use clap::Parser;

// Servers and the bench client allocate a buffer or two per request on many threads; glibc's
// malloc cost about 5% (servers) to 8% (client) of CPU in profiles of `tandem bench`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use cli::{Cli, Command};
use std::process::ExitCode;
use tandem_client::ClientError;

pub fn write_stdout(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(i32::from(EXIT_ERROR));
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

pub const EXIT_ERROR: u8 = 1;
pub const EXIT_UNAVAILABLE: u8 = 3;
pub const EXIT_NOT_FOUND: u8 = 4;
pub const EXIT_CONFLICT: u8 = 5;
/// The server's disk is below its reserve: free space (deletes still pass) before retrying.
pub const EXIT_DISK_FULL: u8 = 6;

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::InvalidArgument(_) | ClientError::Internal(_) | ClientError::TooLarge(_) | ClientError::WrongRoute(_) => EXIT_ERROR,
            ClientError::NotFound(_) => EXIT_NOT_FOUND,
            ClientError::AlreadyExists(_) => EXIT_CONFLICT,
            ClientError::Unavailable(_) | ClientError::ClockAhead(_) | ClientError::OutcomeUnknown(_) => EXIT_UNAVAILABLE,
            ClientError::DiskFull(_) => EXIT_DISK_FULL,
        };
        Failure { code, message: e.to_string() }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure { code: EXIT_ERROR, message: format!("{e:#}") }
    }
}

pub type CmdResult = Result<(), Failure>;

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// No transparent huge pages for this process. mimalloc returns freed memory to the kernel and
/// faults it in again as the servers allocate; with THP each such fault zeroes 2 MiB, which
/// `perf` showed as 5-9% of the servers' CPU under write load (clear_page_erms under
/// do_huge_pmd_anonymous_page) and as stalls of single requests. Measured with `tandem bench
/// --workload write-only` (8 partitions, 64 in flight, 5 runs each): p99 10.6-12.1 ms with THP,
/// 7.5-8.8 ms without, throughput equal or up to 6% higher. (Same as MIMALLOC_ALLOW_THP=0.)
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes no pointers; it only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let server = matches!(cli.command, Command::Meta { .. } | Command::Replica { .. });
    init_tracing(if server { "info" } else { "warn" });
    if server || matches!(cli.command, Command::Playground(_)) {
        match tandem_runtime::limits::raise_open_files() {
            Ok((before, after, _)) if before < after => tracing::info!("open files: soft limit raised from {before} to {after} (the hard limit)"),
            Ok((_, after, hard)) => tracing::info!("open files: soft limit {after}, hard limit {hard}"),
            Err(e) => tracing::warn!("cannot read or raise the open-files limit: {e}"),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Playground(args) => playground::run(args).await,
        Command::Meta { command } => servers::meta(command).await,
        Command::Replica { command } => servers::replica(command).await,
        Command::Config { command: cli::ConfigCommand::Default } => {
            out!("{}", config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Table { client, command } => admin::table(&client, command).await,
        Command::Policy { client, command } => policy::run(&client, command).await,
        Command::Site { client, command } => dup::site(&client.client_args(), command).await,
        Command::Dup { client, command } => dup::dup(&client, command).await,
        Command::Backup { client, command } => backup::run(&client, command).await,
        Command::Restore { client, command, id, table, as_original, wait, who } => backup::restore(&client, command, id, table, as_original, wait, who).await,
        Command::Nodes { client } => admin::nodes(&client).await,
        Command::Status { client } => admin::status(&client).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Sim(args) => match tandem_sim::run(&args) {
            Ok(report) => {
                out!("{report}");
                Ok(())
            }
            Err(failure) => Err(Failure::new(EXIT_ERROR, failure.to_string())),
        },
        other => data::run(other).await,
    }
}

/// A shutdown signal that fires on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

/// `HOST:PORT[,HOST:PORT…]` as given to `--meta`.
pub fn meta_addrs(list: &str) -> Vec<String> {
    list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

pub fn client_of(args: &cli::ClientArgs) -> Result<tandem_client::Client, Failure> {
    let meta = meta_addrs(&args.meta);
    let opts = tandem_client::ClientOptions { rpc_timeout: args.timeout.min(std::time::Duration::from_secs(5)), request_timeout: args.timeout };
    tandem_client::Client::new(&meta, opts).map_err(Failure::from)
}

/// Prints rows as an aligned table.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        outln!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn print_json(v: &serde_json::Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// Retries an administrative call while the cluster answers "unavailable" (no meta leader yet,
/// or the metadata store is down), polling until `timeout` (the command's `--timeout`):
/// configuration changes wait for the store instead of failing at once.
pub async fn retry_unavailable<T, F, Fut>(timeout: std::time::Duration, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match call().await {
            Err(ClientError::Unavailable(message)) if tokio::time::Instant::now() < deadline => {
                tracing::info!("retrying: {message}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}
