//! DHT seeds: fetched from a gateway's `GET /api/dht/bootstrap`, cached on disk, reused.
//!
//! The fetch is the only central call a worker makes, so it is rare by construction: the agent
//! reads the cache at start, and calls the endpoint only when there is no usable cache or every
//! cached seed has failed. Every call is counted ([`Bootstrapper::calls`]).
//!
//! The wire shapes are [`gpumesh_dht::wire`]'s, which the gateway serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use gpumesh_dht::wire::{BootstrapResponse, Seed};
use tracing::{info, warn};

/// What can go wrong getting seeds.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The endpoint could not be reached or answered with an error.
    #[error("bootstrap request to {url} failed: {message}")]
    Request {
        /// The endpoint.
        url: String,
        /// Why.
        message: String,
    },
    /// The answer held no usable seed.
    #[error("bootstrap endpoint {url} returned no usable seed")]
    NoSeeds {
        /// The endpoint.
        url: String,
    },
    /// No `--bootstrap-url` is configured and there is no cache.
    #[error("no bootstrap URL configured and no cached seeds")]
    NotConfigured,
}

/// Keeps only well-formed seeds: a peer id and at least one multiaddr (`/…`).
pub fn usable(seeds: Vec<Seed>) -> Vec<Seed> {
    seeds
        .into_iter()
        .filter_map(|mut s| {
            s.multiaddrs.retain(|a| a.starts_with('/') && a.len() > 1);
            (!s.peer_id.trim().is_empty() && !s.multiaddrs.is_empty()).then_some(s)
        })
        .collect()
}

/// Seed source with an on-disk cache and a call counter.
#[derive(Debug, Clone)]
pub struct Bootstrapper {
    url: Option<String>,
    cache: Option<PathBuf>,
    client: reqwest::Client,
    calls: Arc<AtomicU64>,
}

impl Bootstrapper {
    /// `url` is the full endpoint (`https://gw/api/dht/bootstrap`); `cache` the cache file.
    pub fn new(url: Option<String>, cache: Option<PathBuf>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            url,
            cache,
            client,
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Calls made to the bootstrap endpoint so far (successful or not).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The cached seeds, if the cache file exists and holds any usable seed.
    pub fn cached(&self) -> Option<Vec<Seed>> {
        let path = self.cache.as_deref()?;
        let text = std::fs::read_to_string(path).ok()?;
        match serde_json::from_str::<BootstrapResponse>(&text) {
            Ok(r) => Some(usable(r.seeds)).filter(|s| !s.is_empty()),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "ignoring unreadable seed cache");
                None
            }
        }
    }

    /// Fetches seeds from the endpoint (one counted call) and caches them.
    pub async fn fetch(&self) -> Result<Vec<Seed>, BootstrapError> {
        let url = self.url.clone().ok_or(BootstrapError::NotConfigured)?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let err = |m: String| BootstrapError::Request {
            url: url.clone(),
            message: m,
        };
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| err(e.to_string()))?;
        let body: BootstrapResponse = resp.json().await.map_err(|e| err(e.to_string()))?;
        let seeds = usable(body.seeds);
        if seeds.is_empty() {
            return Err(BootstrapError::NoSeeds { url });
        }
        info!(%url, seeds = seeds.len(), calls = self.calls(), "fetched DHT seeds");
        if let Some(path) = &self.cache
            && let Err(e) = write_cache(path, &seeds, body.ttl_secs)
        {
            warn!(path = %path.display(), error = %e, "cannot write seed cache");
        }
        Ok(seeds)
    }
}

fn write_cache(path: &Path, seeds: &[Seed], ttl_secs: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let body = BootstrapResponse {
        seeds: seeds.to_vec(),
        ttl_secs,
        count: seeds.len(),
    };
    // Write then rename, so a crash never leaves half a cache behind.
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&body).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_drops_malformed_seeds() {
        let seeds = vec![
            Seed {
                peer_id: "12D3KooA".into(),
                multiaddrs: vec!["/ip4/127.0.0.1/tcp/1/p2p/12D3KooA".into(), "junk".into()],
                role: "gateway".into(),
            },
            Seed {
                peer_id: "".into(),
                multiaddrs: vec!["/ip4/127.0.0.1/tcp/2".into()],
                role: "seed".into(),
            },
            Seed {
                peer_id: "12D3KooB".into(),
                multiaddrs: vec![],
                role: "seed".into(),
            },
        ];
        let ok = usable(seeds);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].multiaddrs.len(), 1);
    }
}
