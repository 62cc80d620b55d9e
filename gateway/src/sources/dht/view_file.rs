//! The saved worker view: the signed record envelopes the gateway's DHT node holds, written to
//! a file every few seconds and at shutdown, and read back at start.
//!
//! Why: a restarted gateway otherwise starts blind and refills its view only as workers
//! re-announce themselves (measured 9 s at 100 workers, with `no_eligible_worker` errors all
//! the while). The file holds only what the workers signed; every envelope is verified again
//! on load ([`gpumesh_dht::DhtHandle::import_records`]), so a stale or edited file cannot
//! inject a worker: expired records are refused, forged ones fail their signature.
//!
//! The file also keeps the gateway's trust in each worker (live or departed): a restart must
//! not forgive a worker that failed its canaries. Trust is the gateway's own judgement, not
//! signed by anyone; an operator forgives workers by deleting the file.
//!
//! Format: the magic `GPMVIEW2`, a little-endian `u32` length and that many bytes of JSON
//! (`[[worker id, trust state], …]`), then per record a little-endian `u32` length and the
//! envelope bytes. Files of the previous format (`GPMVIEW1`: records only) are still read.
//! Written to a temporary file and renamed, so a crash mid-write leaves the previous file
//! whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use gpumesh_dht::DhtHandle;
use gpumesh_scheduler::TrustState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::directory::Directory;

const MAGIC: &[u8; 8] = b"GPMVIEW2";
/// The records-only format, still read.
const MAGIC_V1: &[u8; 8] = b"GPMVIEW1";
/// Largest trust section accepted (about 100 bytes per worker).
const MAX_TRUST_BYTES: usize = 64 * 1024 * 1024;

/// Saved trust: worker id and state.
pub type SavedTrust = Vec<(String, TrustState)>;
/// Largest envelope accepted from the file (records are capped at a few KiB).
const MAX_ENVELOPE: usize = 64 * 1024;
/// Most records read from one file.
const MAX_RECORDS: usize = 100_000;
/// How often the view is saved while the gateway runs.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// Why a view file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ViewFileError {
    /// Reading or writing failed.
    #[error("view file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a view file, or cut short.
    #[error("view file {0}: not a gpumesh view file or truncated")]
    Format(PathBuf),
}

/// Encodes trust states and envelopes into the file format.
pub fn encode<'a>(
    trust: &[(String, TrustState)],
    envelopes: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let json = serde_json::to_vec(trust).unwrap_or_else(|_| b"[]".to_vec());
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(0).to_le_bytes());
    if u32::try_from(json.len()).is_ok() {
        out.extend_from_slice(&json);
    }
    for e in envelopes {
        let Ok(len) = u32::try_from(e.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Decodes the file format (trust states and envelopes); `None` when the bytes are not a
/// whole view file.
pub fn decode(bytes: &[u8]) -> Option<(SavedTrust, Vec<Vec<u8>>)> {
    let (trust, rest) = match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(rest) => {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            if len > MAX_TRUST_BYTES || len > tail.len() {
                return None;
            }
            let trust: SavedTrust = serde_json::from_slice(&tail[..len]).ok()?;
            (trust, &tail[len..])
        }
        None => (Vec::new(), bytes.strip_prefix(MAGIC_V1.as_slice())?),
    };
    Some((trust, decode_envelopes(rest)?))
}

fn decode_envelopes(mut rest: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        if out.len() >= MAX_RECORDS {
            return None;
        }
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_ENVELOPE || len > tail.len() {
            return None;
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Some(out)
}

/// Writes the node's current view and the directory's trust states to `path` (atomically:
/// temporary file, then rename).
///
/// # Errors
/// [`ViewFileError::Io`] when the file cannot be written.
pub async fn save(
    handle: &DhtHandle,
    directory: &Directory,
    path: &Path,
) -> Result<usize, ViewFileError> {
    let workers = handle.registry().workers();
    let bytes = encode(
        &directory.trust_states(),
        workers.iter().map(|w| &*w.envelope),
    );
    let io = |source| ViewFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
    tokio::fs::rename(&tmp, path).await.map_err(io)?;
    Ok(workers.len())
}

/// Reads `path` and imports its records into the node (verified again there); returns the
/// saved trust states for the directory. A missing file is a fresh start, not an error.
///
/// # Errors
/// [`ViewFileError`] when the file exists but cannot be read or is not a view file.
pub async fn load(handle: &DhtHandle, path: &Path) -> Result<SavedTrust, ViewFileError> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ViewFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let (trust, envelopes) =
        decode(&bytes).ok_or_else(|| ViewFileError::Format(path.to_owned()))?;
    let read = envelopes.len();
    match handle.import_records(envelopes).await {
        Ok(summary) => {
            info!(
                path = %path.display(),
                read,
                imported = summary.imported,
                rejected = summary.rejected,
                trust = trust.len(),
                "saved worker view loaded"
            );
        }
        Err(e) => warn!(error = %e, "saved worker view not imported"),
    }
    Ok(trust)
}

/// Saves the view every [`SAVE_EVERY`] and once more at shutdown (the gateway loads the saved
/// view with [`load`] before it serves).
pub async fn keep(
    handle: DhtHandle,
    directory: Arc<Directory>,
    path: PathBuf,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match save(&handle, &directory, &path).await {
            Ok(n) => debug!(records = n, "worker view saved"),
            Err(e) => warn!(error = %e, "worker view not saved"),
        }
    }
    match save(&handle, &directory, &path).await {
        Ok(n) => info!(records = n, path = %path.display(), "worker view saved at shutdown"),
        Err(e) => warn!(error = %e, "worker view not saved at shutdown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damaged_files() {
        let a = vec![1u8, 2, 3];
        let b = vec![9u8; 300];
        let trust = vec![(
            "w1".to_owned(),
            TrustState {
                score: 0.05,
                verified: 1,
                failed: 2,
            },
        )];
        let bytes = encode(&trust, [a.as_slice(), b.as_slice()]);
        assert_eq!(decode(&bytes), Some((trust, vec![a.clone(), b.clone()])));
        assert_eq!(decode(&encode(&[], [])), Some((vec![], vec![])));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None, "truncated");
        assert_eq!(decode(b"NOTVIEW1"), None, "wrong magic");
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(&3u32.to_le_bytes());
        v1.extend_from_slice(&a);
        assert_eq!(
            decode(&v1),
            Some((vec![], vec![a])),
            "the records-only format"
        );
        let mut huge = MAGIC_V1.to_vec();
        huge.extend_from_slice(&(MAX_ENVELOPE as u32 + 1).to_le_bytes());
        huge.extend(std::iter::repeat_n(0u8, MAX_ENVELOPE + 1));
        assert_eq!(decode(&huge), None, "oversized envelope");
    }
}
