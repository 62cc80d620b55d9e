//! `gpumesh demo`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use gpumesh_loadtest::demo::sample_curl;
use gpumesh_loadtest::{Demo, DemoConfig, LoadtestError};

/// Flags of `gpumesh demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated GPU workers (mixed h100x2, a100, rtx3090, t4).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// The gateway's HTTP address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// Runs `gpumesh demo` until Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = DemoConfig {
        listen: args.listen,
        workers: args.workers,
    };
    if let Err(e) = config.validate() {
        return Err(super::UsageError(e.to_string()).into());
    }
    super::runtime()?.block_on(async move {
        let demo = match Demo::start(config).await {
            Ok(demo) => demo,
            Err(e @ LoadtestError::Usage(_)) => return Err(super::UsageError(e.to_string()).into()),
            Err(e) => return Err(anyhow::Error::from(e)),
        };
        let url = demo.url();
        println!(
            "gpumesh demo: gateway and DHT seed at {url}, {} workers starting",
            args.workers
        );
        println!("  dashboard: {url}/");
        println!("  workers:   {url}/api/workers");
        println!("  try:       {}", sample_curl(&url));
        println!("Press Ctrl-C to stop.");
        // One signal future for the whole run: a Ctrl-C that arrives while the workers are
        // still joining is not lost.
        let signal = super::shutdown_signal();
        tokio::pin!(signal);
        tokio::select! {
            r = demo.wait_for_workers(args.workers, Duration::from_secs(120)) => match r {
                Ok(()) => println!("all {} workers are in the gateway's view", args.workers),
                Err(e) => eprintln!("gpumesh demo: {e}"),
            },
            () = &mut signal => {
                println!("stopping…");
                demo.shutdown().await?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        signal.await;
        println!("stopping…");
        demo.shutdown().await?;
        Ok(ExitCode::SUCCESS)
    })
}
