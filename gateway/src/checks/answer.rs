//! The checks a canary's answer must pass, and the value a cross-check compares.
//!
//! A failed check says what was wrong in a short string that is safe to show on
//! `/api/workers` (values are truncated and escaped, never the whole body).

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// The longest regex accepted (its compiled size is bounded by the `regex` crate's limit too).
pub const MAX_REGEX_BYTES: usize = 4096;
/// Compiled regex size limit: a hostile or careless pattern cannot eat the gateway's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Characters of a value shown in a failure reason.
const SHOWN: usize = 24;

/// The file's form of a check (one key: the kind).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum CheckSpec {
    Exact(String),
    Json {
        pointer: String,
        equals: Value,
    },
    Regex(String),
    Cosine {
        pointer: String,
        reference: Vec<f64>,
        min: f64,
    },
}

/// What a canary's answer must satisfy (always also a 2xx status).
#[derive(Debug, Clone)]
pub enum Check {
    /// The whole body equals this text.
    Exact(String),
    /// The JSON value at `pointer` equals `equals`.
    Json {
        /// JSON pointer (RFC 6901), e.g. `/answer`.
        pointer: String,
        /// The expected value.
        equals: Value,
    },
    /// The body, as text, matches this regex.
    Regex(regex::Regex),
    /// The float array at `pointer` has the reference's length and a cosine similarity to
    /// it of at least `min` (embeddings differ in the last bits across GPUs).
    Cosine {
        /// JSON pointer of the array.
        pointer: String,
        /// The expected vector (non-zero).
        reference: Vec<f64>,
        /// The least cosine similarity accepted, in [-1, 1].
        min: f64,
    },
}

impl Check {
    pub(super) fn from_spec(spec: CheckSpec) -> Result<Self, String> {
        let pointer_ok = |p: &str| {
            if p.is_empty() || p.starts_with('/') {
                Ok(())
            } else {
                Err(format!("pointer {p:?} is not a JSON pointer (\"/answer\")"))
            }
        };
        Ok(match spec {
            CheckSpec::Exact(text) => Check::Exact(text),
            CheckSpec::Json { pointer, equals } => {
                pointer_ok(&pointer)?;
                Check::Json { pointer, equals }
            }
            CheckSpec::Regex(pattern) => {
                if pattern.len() > MAX_REGEX_BYTES {
                    return Err(format!("regex longer than {MAX_REGEX_BYTES} bytes"));
                }
                let re = regex::RegexBuilder::new(&pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("bad regex: {e}"))?;
                Check::Regex(re)
            }
            CheckSpec::Cosine {
                pointer,
                reference,
                min,
            } => {
                pointer_ok(&pointer)?;
                let norm = reference.iter().map(|x| x * x).sum::<f64>().sqrt();
                if reference.is_empty() || !norm.is_normal() {
                    return Err("cosine reference must be a non-zero vector".into());
                }
                if !(-1.0..=1.0).contains(&min) {
                    return Err(format!("cosine min {min} is outside [-1, 1]"));
                }
                Check::Cosine {
                    pointer,
                    reference,
                    min,
                }
            }
        })
    }

    /// Whether an answer passes; `Err` says why not, shortly and safely.
    ///
    /// # Errors
    /// The reason the answer is wrong.
    pub fn verify(&self, status: StatusCode, body: &[u8]) -> Result<(), String> {
        if !status.is_success() {
            return Err(format!("status {}", status.as_u16()));
        }
        match self {
            Check::Exact(expected) => {
                if body == expected.as_bytes() {
                    Ok(())
                } else {
                    Err(format!(
                        "body was {}, expected {}",
                        shown(&String::from_utf8_lossy(body)),
                        shown(expected)
                    ))
                }
            }
            Check::Json { pointer, equals } => {
                let got = at_pointer(body, pointer)?;
                if &got == equals {
                    Ok(())
                } else {
                    Err(format!(
                        "{pointer} was {}, expected {}",
                        shown_value(&got),
                        shown_value(equals)
                    ))
                }
            }
            Check::Regex(re) => {
                let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
                if re.is_match(text) {
                    Ok(())
                } else {
                    Err(format!("body {} does not match the regex", shown(text)))
                }
            }
            Check::Cosine {
                pointer,
                reference,
                min,
            } => {
                let got = at_pointer(body, pointer)?;
                let vector =
                    floats(&got).ok_or_else(|| format!("{pointer} is not a number array"))?;
                if vector.len() != reference.len() {
                    return Err(format!(
                        "{pointer} has {} numbers, expected {}",
                        vector.len(),
                        reference.len()
                    ));
                }
                let similarity = cosine(&vector, reference);
                if similarity >= *min {
                    Ok(())
                } else {
                    Err(format!("{pointer} cosine {similarity:.4} < {min}"))
                }
            }
        }
    }
}

/// What a cross-check compares: the JSON value at `pointer` (serialised), or the whole body.
/// `None` when the pointer does not resolve (the answer cannot be compared).
pub fn compare_value(body: &[u8], pointer: Option<&str>) -> Option<Vec<u8>> {
    match pointer {
        None => Some(body.to_vec()),
        Some(p) => at_pointer(body, p)
            .ok()
            .and_then(|v| serde_json::to_vec(&v).ok()),
    }
}

fn at_pointer(body: &[u8], pointer: &str) -> Result<Value, String> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|_| "body is not JSON".to_owned())?;
    doc.pointer_mut(pointer)
        .map(Value::take)
        .ok_or_else(|| format!("{pointer} is missing"))
}

fn floats(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(Value::as_f64).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

/// A JSON value as [`shown`] shows it: strings quoted once, other values as JSON.
fn shown_value(v: &Value) -> String {
    match v {
        Value::String(s) => shown(s),
        other => {
            let text = other.to_string();
            let mut cut: String = text.chars().take(SHOWN).collect();
            if text.chars().count() > SHOWN {
                cut.push('…');
            }
            cut
        }
    }
}

/// A value cut to [`SHOWN`] characters and escaped (control characters never reach a page).
fn shown(s: &str) -> String {
    let mut cut: String = s.chars().take(SHOWN).collect();
    if s.chars().count() > SHOWN {
        cut.push('…');
    }
    format!("{cut:?}")
}
