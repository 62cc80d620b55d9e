//! Per-client token buckets for the endpoints anyone can call (bootstrap, registration).
//!
//! Each client IP gets a bucket of `per_minute` tokens refilled continuously. The map is
//! bounded: when it grows past [`MAX_CLIENTS`], full (idle) buckets are dropped first, and if
//! that is not enough the whole map is reset, which only ever errs towards admitting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client buckets kept at once.
pub const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A keyed token-bucket rate limiter.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl RateLimiter {
    /// A limiter admitting `per_minute` requests per client per minute, in bursts of as many.
    pub fn per_minute(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_sec: capacity / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client` (`None`: unknown peer, e.g. in-process tests).
    ///
    /// # Errors
    /// The wait until the next token, when the bucket is empty.
    pub fn check(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let (capacity, per_sec) = (self.capacity, self.per_sec);
            buckets.retain(|_, b| refill(*b, now, capacity, per_sec) < capacity);
            if buckets.len() >= MAX_CLIENTS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let tokens = refill(*bucket, now, self.capacity, self.per_sec);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }
}

fn refill(bucket: Bucket, now: Instant, capacity: f64, per_sec: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_sec).min(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let limiter = RateLimiter::per_minute(3);
        let ip = Some(IpAddr::from([203, 0, 113, 1]));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
        }
        let wait = limiter.check(ip, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(20) && wait > Duration::from_secs(19));
        // Other clients are unaffected.
        assert!(
            limiter
                .check(Some(IpAddr::from([203, 0, 113, 2])), t0)
                .is_ok()
        );
        assert!(limiter.check(ip, t0 + Duration::from_secs(20)).is_ok());
    }
}
