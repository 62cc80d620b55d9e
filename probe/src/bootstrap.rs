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

/// Largest bootstrap answer or seed cache read, in bytes. A seed list is a few hundred bytes
/// per seed; anything near this is not one, and is refused before it is buffered whole.
pub const MAX_BOOTSTRAP_BYTES: usize = 256 * 1024;

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
        // One call per start: keeping its connection open idle would only hold a file
        // descriptor (and a gateway socket) for the pool's 90 s.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
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
        let text = match read_capped(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "ignoring unreadable seed cache");
                return None;
            }
        };
        match serde_json::from_slice::<BootstrapResponse>(&text) {
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
        let bytes = crate::http::read_capped(resp, MAX_BOOTSTRAP_BYTES)
            .await
            .map_err(|e| err(e.to_string()))?;
        let body: BootstrapResponse =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("not a seed list: {e}")))?;
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

/// Reads at most [`MAX_BOOTSTRAP_BYTES`] of `path`; a longer file is an error.
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BOOTSTRAP_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_BOOTSTRAP_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_BOOTSTRAP_BYTES} bytes"
        )));
    }
    Ok(bytes)
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

    fn temp_cache(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gpumesh-bootstrap-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("seeds.json")
    }

    #[test]
    fn an_oversized_seed_cache_is_ignored_not_buffered() {
        let path = temp_cache("big");
        let seed = r#"{"peer_id":"12D3KooA","multiaddrs":["/ip4/127.0.0.1/tcp/1"],"role":"seed"},"#;
        let mut text = String::from(r#"{"ttl_secs":60,"count":1,"seeds":["#);
        while text.len() <= MAX_BOOTSTRAP_BYTES {
            text.push_str(seed);
        }
        text.push_str(&seed[..seed.len() - 1]);
        text.push_str("]}");
        std::fs::write(&path, &text).unwrap();
        let b = Bootstrapper::new(None, Some(path.clone())).unwrap();
        assert!(b.cached().is_none(), "a cache over the cap is not used");
        // The same shape under the cap is used.
        let small = format!(
            r#"{{"ttl_secs":60,"count":1,"seeds":[{}]}}"#,
            &seed[..seed.len() - 1]
        );
        std::fs::write(&path, small).unwrap();
        assert_eq!(b.cached().map(|s| s.len()), Some(1));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn an_oversized_bootstrap_answer_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            // No Content-Length: the size is only known by reading to the end.
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                .await;
            let _ = socket.write_all(&vec![b' '; 2 * MAX_BOOTSTRAP_BYTES]).await;
        });
        let b = Bootstrapper::new(Some(format!("http://{addr}/api/dht/bootstrap")), None).unwrap();
        let err = b.fetch().await.unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert_eq!(b.calls(), 1);
    }
}
