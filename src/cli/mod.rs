//! Flag parsing, tracing set-up, exit codes, and the dispatch to each subcommand.

mod admit;
mod agent;
#[cfg(feature = "loadtest")]
mod demo;
#[cfg(feature = "loadtest")]
mod dht_bench;
mod gateway;
mod keygen;
mod legacy_env;
#[cfg(feature = "loadtest")]
mod loadtest;
#[cfg(feature = "loadtest")]
mod mock;
#[cfg(feature = "loadtest")]
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for bad flags or configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_USAGE: u8 = 64;

/// Route AI requests to volunteer GPU workers found through a libp2p DHT.
#[derive(Debug, Parser)]
#[command(name = "gpumesh", version, about, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "GPUMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One process: a gateway (also the DHT seed) and N simulated GPU workers.
    #[cfg(feature = "loadtest")]
    Demo(demo::Args),
    /// The HTTP gateway and a DHT server node (boxed: its flag set is large).
    Gateway(Box<gateway::Args>),
    /// The worker agent: probe, DHT publication, coordinator fallback, drain.
    Agent(agent::Args),
    /// Discrete-event comparison of selection policies.
    #[cfg(feature = "loadtest")]
    Sim(sim::Args),
    /// N real DHT nodes in one process: discovery and lookup figures.
    #[cfg(feature = "loadtest")]
    DhtBench(dht_bench::Args),
    /// A fleet of agents, a gateway and goose users, with scenarios.
    #[cfg(feature = "loadtest")]
    Loadtest(loadtest::Args),
    /// Generate a node identity or cluster keys.
    Keygen(keygen::Args),
    /// Sign a worker's admission token with the operator key.
    Admit(admit::Args),
}

/// A problem with the flags or configuration: reported and mapped to exit code 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the command line, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.log_format);
    let outcome = match cli.command {
        #[cfg(feature = "loadtest")]
        Command::Demo(args) => demo::run(args),
        Command::Gateway(args) => gateway::run(*args),
        Command::Agent(args) => agent::run(args),
        #[cfg(feature = "loadtest")]
        Command::Sim(args) => sim::run(args),
        #[cfg(feature = "loadtest")]
        Command::DhtBench(args) => dht_bench::run(args),
        #[cfg(feature = "loadtest")]
        Command::Loadtest(args) => loadtest::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Admit(args) => admit::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) if e.is::<UsageError>() => {
            eprintln!("gpumesh: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("gpumesh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that `--json` output on stdout stays machine-readable.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GPUMESH_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A multi-threaded tokio runtime for the async commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on Ctrl-C or SIGTERM: the start of a graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Log capture for the secrets-hygiene tests: one global subscriber at TRACE (every thread,
/// every crate, libp2p included) writing into a shared buffer.
#[cfg(test)]
pub(crate) mod test_logs {
    use std::sync::{Arc, Mutex, OnceLock};

    /// The captured output of every test in this binary so far.
    #[derive(Clone, Default)]
    pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Logs {
        /// Everything captured so far, as text.
        pub(crate) fn text(&self) -> String {
            let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
            String::from_utf8_lossy(&buf).into_owned()
        }
    }

    impl std::io::Write for Logs {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Installs the capturing subscriber (once) and returns its buffer.
    pub(crate) fn capture() -> Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .try_init();
            logs
        })
        .clone()
    }

    /// Lower-case hex of `bytes` (how a key would most likely leak into a log).
    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Polls `cond` every 50 ms for up to `secs`; returns whether it held.
    pub(crate) async fn eventually(secs: u64, cond: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !cond() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        true
    }
}
