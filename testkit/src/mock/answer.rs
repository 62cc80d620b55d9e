//! Checkable answers: what a correct mock worker returns for a request body.
//!
//! Canaries and cross-checks need answers that a gateway can verify without running a model:
//! the mock's answer is a pure function of the request body, so any two honest mocks agree and
//! a test (or an operator's canary file) can compute the expected value in advance. A liar
//! ([`super::Fault::Garbage`]) returns [`wrong_answer_for`] and [`wrong_embedding_for`], which
//! differ from the right ones by construction, not merely with high probability.

use sha2::{Digest, Sha256};

/// Length of [`embedding_for`]'s vector.
pub const EMBEDDING_DIM: usize = 8;

/// The right answer for `body`: the lower-case hex SHA-256 of the bytes as sent.
///
/// ```
/// assert_eq!(
///     gpumesh_testkit::answer_for(b""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
/// );
/// ```
pub fn answer_for(body: &[u8]) -> String {
    hex(&digest(body))
}

/// The right embedding for `body`: [`EMBEDDING_DIM`] floats in [-1, 1] taken from the SHA-256
/// of the body (four bytes each), scaled to unit length so that a cosine check against it is a
/// plain dot product.
pub fn embedding_for(body: &[u8]) -> Vec<f32> {
    let d = digest(body);
    let raw: Vec<f32> = d
        .chunks_exact(4)
        .map(|c| {
            let x = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            // Centre on zero so that vectors of different bodies point in different directions.
            (f64::from(x) / f64::from(u32::MAX) * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        raw.iter().map(|x| x / norm).collect()
    } else {
        // Every component near zero: astronomically unlikely, but the vector must stay unit.
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[0] = 1.0;
        v
    }
}

/// A wrong answer of the right shape: the hex of the bitwise complement of the digest, so it
/// never equals [`answer_for`] of the same body.
pub(crate) fn wrong_answer_for(body: &[u8]) -> String {
    hex(&digest(body).map(|b| !b))
}

/// A wrong embedding of the right shape: [`embedding_for`] negated, a cosine of −1 against
/// the right one.
pub(crate) fn wrong_embedding_for(body: &[u8]) -> Vec<f32> {
    embedding_for(body).into_iter().map(|x| -x).collect()
}

fn digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn known_digest() {
        assert_eq!(
            answer_for(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn embedding_is_unit_length_deterministic_and_body_specific() {
        let a = embedding_for(br#"{"text":"hello"}"#);
        assert_eq!(a.len(), EMBEDDING_DIM);
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, embedding_for(br#"{"text":"hello"}"#));
        let b = embedding_for(br#"{"text":"hellp"}"#);
        assert!(dot(&a, &b) < 0.99, "different bodies, different directions");
    }

    #[test]
    fn wrong_answers_are_wrong() {
        for body in [&b""[..], b"x", br#"{"text":"hello"}"#] {
            assert_ne!(wrong_answer_for(body), answer_for(body));
            assert_eq!(wrong_answer_for(body).len(), 64);
            let cos = dot(&wrong_embedding_for(body), &embedding_for(body));
            assert!((cos + 1.0).abs() < 1e-5, "{cos}");
        }
    }
}
