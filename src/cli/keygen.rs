//! `gpumesh keygen`: node identity, pre-shared network key and operator key files.
//!
//! Private keys are written to files (mode 0600) and never printed: only the peer id, the
//! network key's fingerprint and the operator's public key go to stdout.

use std::{path::PathBuf, process::ExitCode};

use gpumesh_dht::{OperatorKey, identity};

use super::UsageError;

/// Flags of `gpumesh keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Node identity key file (libp2p protobuf keypair, mode 0600). Created if missing; an
    /// existing file is only read. The peer id is printed either way.
    #[arg(long, env = "GPUMESH_KEY_FILE")]
    identity: Option<PathBuf>,
    /// Write a new pre-shared network key (`/key/swarm/psk/1.0.0/` format, mode 0600) here.
    /// Refuses to overwrite an existing file.
    #[arg(long, env = "GPUMESH_NETWORK_KEY_FILE")]
    network_key: Option<PathBuf>,
    /// Operator key file for worker admission (Ed25519, mode 0600). Created if missing; an
    /// existing file is only read. Its public key (give it to gateways as
    /// `--admission-pubkey`) is printed either way. Sign workers in with `gpumesh admit`.
    #[arg(long, env = "GPUMESH_OPERATOR_KEY_FILE")]
    operator_key: Option<PathBuf>,
}

/// Runs `gpumesh keygen`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.identity.is_none() && args.network_key.is_none() && args.operator_key.is_none() {
        return Err(UsageError(
            "give --identity <file>, --network-key <file> and/or --operator-key <file>".into(),
        )
        .into());
    }
    if let Some(path) = &args.network_key
        && path.exists()
    {
        return Err(UsageError(format!(
            "{} exists; refusing to overwrite a network key",
            path.display()
        ))
        .into());
    }
    if let Some(path) = &args.identity {
        let existed = path.exists();
        let key = identity::load_or_create_keypair(path)?;
        let verb = if existed { "read" } else { "wrote" };
        eprintln!("{verb} node identity {}", path.display());
        println!("peer_id: {}", key.public().to_peer_id());
    }
    if let Some(path) = &args.network_key {
        let psk = identity::generate_network_key();
        identity::write_network_key(path, psk)?;
        eprintln!("wrote network key {}", path.display());
        println!("network_key_fingerprint: {}", psk.fingerprint());
    }
    if let Some(path) = &args.operator_key {
        let existed = path.exists();
        let key = identity::load_or_create_keypair(path)?;
        let public =
            OperatorKey::of(&key).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        let verb = if existed { "read" } else { "wrote" };
        eprintln!("{verb} operator key {} (keep it offline)", path.display());
        println!("operator_public_key: {public}");
    }
    Ok(ExitCode::SUCCESS)
}
