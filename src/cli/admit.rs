//! `gpumesh admit`: the operator signs a worker in (operator-signed admission, docs/dht.md).
//!
//! ```text
//! gpumesh keygen --operator-key op.key            # once; prints operator_public_key
//! gpumesh admit --operator-key op.key --peer-id 12D3KooW… --valid-for 30d --out w1.admission
//! gpumesh agent --admission w1.admission …         # on the worker
//! gpumesh gateway --admission-pubkey 12D3KooW… …   # gateways and seeds enforce it
//! ```

use std::{path::PathBuf, process::ExitCode, time::Duration};

use super::UsageError;
use gpumesh_dht::{AdmissionToken, admission, identity, rules::unix_ms};

/// Longest admission `--valid-for` accepts (about ten years).
const MAX_VALID_FOR: Duration = Duration::from_secs(3650 * 86_400);

/// Flags of `gpumesh admit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The operator key file (from `gpumesh keygen --operator-key`); never created here.
    #[arg(long, env = "GPUMESH_OPERATOR_KEY_FILE")]
    operator_key: PathBuf,
    /// The worker's peer id (`gpumesh keygen --identity <state_dir>/node.key` prints it).
    #[arg(long)]
    peer_id: String,
    /// How long the admission lasts: a number with s, m, h or d (e.g. 12h, 30d).
    #[arg(long, default_value = "30d", value_parser = parse_valid_for)]
    valid_for: Duration,
    /// Write the token file here (refuses to overwrite); without it, print it to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Parses `30d`, `12h`, `90m`, `3600s` (a bare number is seconds).
fn parse_valid_for(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30d or 12h"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("`{s}` is not a duration like 30d or 12h"))?;
    let d = Duration::from_secs(secs);
    if d.is_zero() || d > MAX_VALID_FOR {
        return Err(format!("`{s}` must be more than 0 and at most 3650d"));
    }
    Ok(d)
}

/// Runs `gpumesh admit`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let peer = admission::parse_peer_id(&args.peer_id)
        .map_err(|_| UsageError(format!("--peer-id `{}` is not a peer id", args.peer_id)))?;
    if let Some(out) = &args.out
        && out.exists()
    {
        return Err(UsageError(format!(
            "{} exists; refusing to overwrite an admission token",
            out.display()
        ))
        .into());
    }
    let key = identity::read_keypair(&args.operator_key)
        .map_err(|e| UsageError(format!("operator key: {e}")))?;
    let now = unix_ms();
    let not_after = now.saturating_add(args.valid_for.as_millis() as u64);
    let token = AdmissionToken::issue(&key, peer, now, not_after)
        .map_err(|e| UsageError(format!("operator key {}: {e}", args.operator_key.display())))?;
    eprintln!(
        "admitted {peer} for {:?} (not_after_ms {not_after}) by operator {}",
        args.valid_for,
        token.operator()
    );
    match &args.out {
        Some(out) => {
            admission::write_token(out, &token)?;
            eprintln!("wrote {}", out.display());
        }
        // stdout carries only the token file, so `gpumesh admit … > w1.admission` works.
        None => print!("{}", token.to_file_text()),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_for_parses_units_and_refuses_nonsense() {
        assert_eq!(parse_valid_for("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_valid_for("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_valid_for("90"), Ok(Duration::from_secs(90)));
        for bad in [
            "",
            "0d",
            "d",
            "3y",
            "-1d",
            "99999d",
            "18446744073709551615d",
        ] {
            assert!(parse_valid_for(bad).is_err(), "{bad}");
        }
    }
}
