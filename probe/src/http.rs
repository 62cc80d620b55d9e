//! Bounded reads of HTTP answers.
//!
//! The agent talks to gateways it was configured with, but a gateway (or whatever answers at
//! its address) can still send an endless body. Every answer the agent reads is capped, so a
//! bad peer costs at most the cap in memory, and a larger answer is an error, not a truncation.

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the cap (by its `Content-Length`, or as read).
    #[error("answer larger than {0} bytes")]
    TooBig(usize),
    /// The connection failed while reading.
    #[error("cannot read the answer: {0}")]
    Read(#[from] reqwest::Error),
}

/// Reads `resp`'s body, at most `max` bytes.
///
/// # Errors
/// [`BodyError::TooBig`] when the body is longer than `max`, [`BodyError::Read`] when the
/// connection fails.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooBig(max));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if bytes.len() + chunk.len() > max {
            return Err(BodyError::TooBig(max));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
