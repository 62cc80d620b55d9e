//! `gpumesh dht-bench`: a thin wrapper over `gpumesh_dht::bench`.

use std::{process::ExitCode, time::Duration};

use gpumesh_dht::{TransportKind, bench::BenchConfig};

use super::UsageError;

/// Flags of `gpumesh dht-bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Worker nodes to start.
    #[arg(long, env = "GPUMESH_BENCH_NODES", default_value_t = 500)]
    nodes: usize,
    /// Gateway/seed nodes (server mode; workers bootstrap from them).
    #[arg(long, env = "GPUMESH_BENCH_GATEWAYS", default_value_t = 3)]
    gateways: usize,
    /// OS threads of the gateways' own runtime (0: share the workers' runtime; default: one
    /// per gateway, as separate gateway processes would have).
    #[arg(long)]
    gateway_threads: Option<usize>,
    /// Transport: `tcp` (127.0.0.1) or `memory` (in-process, no file descriptors).
    #[arg(long, env = "GPUMESH_BENCH_TRANSPORT", default_value = "tcp")]
    transport: String,
    /// Milliseconds between worker starts.
    #[arg(long, default_value_t = 5)]
    stagger_ms: u64,
    /// Seconds after the last start by which every gateway must see every worker
    /// (default 10 up to 500 nodes, else 30).
    #[arg(long)]
    deadline_s: Option<u64>,
    /// Seconds of steady state measured for traffic, RSS and CPU.
    #[arg(long, default_value_t = 30)]
    steady_s: u64,
    /// DHT lookups to time.
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// New workers timed after the full view.
    #[arg(long, default_value_t = 20)]
    new_workers: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `gpumesh dht-bench`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let transport = match args.transport.as_str() {
        "tcp" => TransportKind::Tcp,
        "memory" => TransportKind::Memory,
        other => {
            return Err(
                UsageError(format!("--transport must be tcp or memory, not {other:?}")).into(),
            );
        }
    };
    if args.nodes == 0 || args.nodes > 20_000 {
        return Err(UsageError("--nodes must be between 1 and 20000".into()).into());
    }
    if args.gateways == 0 || args.gateways > 64 {
        return Err(UsageError("--gateways must be between 1 and 64".into()).into());
    }
    let mut cfg = BenchConfig::new(args.nodes);
    cfg.gateways = args.gateways;
    cfg.gateway_threads = args.gateway_threads.unwrap_or(args.gateways);
    cfg.transport = transport;
    cfg.stagger = Duration::from_millis(args.stagger_ms);
    if let Some(d) = args.deadline_s {
        cfg.deadline = Duration::from_secs(d);
    }
    cfg.steady = Duration::from_secs(args.steady_s);
    cfg.lookups = args.lookups;
    cfg.new_workers = args.new_workers;
    let report = super::runtime()?.block_on(gpumesh_dht::bench::run(cfg))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
