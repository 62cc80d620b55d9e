//! Service names: 1–64 bytes of `[a-z0-9._-]`.
//!
//! A service name becomes part of DHT keys (`/gpumesh/v1/svc/<service>/<shard>`), so it is
//! lower case only: `OCR` and `ocr` would otherwise be two indexes for one service. A
//! [`ServiceName`] can only be built through [`ServiceName::parse`] (or `FromStr`, `TryFrom`,
//! serde), so every record, flag and key that holds one holds a name every node accepts.

use std::{borrow::Borrow, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::limits::MAX_SERVICE_BYTES;

/// Most characters of a refused name shown in [`InvalidServiceName`]'s message: enough to
/// recognise a typo, never a megabyte of hostile input in a log line or an HTTP answer.
const SHOWN_CHARS: usize = 64;

/// A valid service name (1–64 bytes of `[a-z0-9._-]`). Serialises as a plain string; a string
/// that breaks the rule does not deserialise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

/// A string that is not a valid [`ServiceName`]. Its message is the one every edge (flags,
/// HTTP, records) shows, with the refused name escaped and cut to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "service name `{shown}` is invalid: use 1-{MAX_SERVICE_BYTES} characters of a-z, 0-9, '.', \
     '_' or '-'"
)]
pub struct InvalidServiceName {
    shown: String,
}

impl InvalidServiceName {
    fn new(raw: &str) -> Self {
        let mut shown: String = raw
            .chars()
            .take(SHOWN_CHARS)
            .flat_map(char::escape_default)
            .collect();
        if raw.chars().nth(SHOWN_CHARS).is_some() {
            shown.push('…');
        }
        Self { shown }
    }

    /// The refused name as the message shows it (escaped, at most 64 characters).
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// The rule itself.
fn is_valid(name: &str) -> bool {
    (1..=MAX_SERVICE_BYTES).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

impl ServiceName {
    /// The rule as a regular expression, for schemas (OpenAPI) that other tools check.
    pub const PATTERN: &'static str = "^[a-z0-9._-]{1,64}$";

    /// Checks `name` against the rule.
    ///
    /// # Errors
    /// [`InvalidServiceName`] when `name` is empty, longer than 64 bytes, or holds anything but
    /// `a-z`, `0-9`, `.`, `_` and `-`.
    pub fn parse(name: &str) -> Result<Self, InvalidServiceName> {
        if is_valid(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidServiceName::new(name))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = InvalidServiceName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidServiceName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        // Keeps the allocation: records carry these by the thousand.
        if is_valid(&s) {
            Ok(Self(s))
        } else {
            Err(InvalidServiceName::new(&s))
        }
    }
}

impl TryFrom<&str> for ServiceName {
    type Error = InvalidServiceName;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<ServiceName> for String {
    fn from(name: ServiceName) -> Self {
        name.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ServiceName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ServiceName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lower_case_digits_and_punctuation() {
        for ok in ["ocr", "llama-3.1_8b", "a", "0", "._-", &"x".repeat(64)] {
            let name = ServiceName::parse(ok).unwrap();
            assert_eq!(name.as_str(), ok);
            assert_eq!(name.to_string(), ok);
            assert_eq!(ok.parse::<ServiceName>().unwrap(), name);
            assert_eq!(ServiceName::try_from(ok.to_owned()).unwrap(), name);
        }
    }

    #[test]
    fn refuses_upper_case_empty_long_and_other_bytes() {
        for bad in [
            "OCR",
            "Ocr",
            "",
            "has space",
            "a/b",
            "ocr\n",
            "é",
            &"x".repeat(65),
        ] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} accepted");
            assert!(ServiceName::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_message_names_the_name_and_the_rule() {
        let e = ServiceName::parse("OCR").unwrap_err();
        assert_eq!(
            e.to_string(),
            "service name `OCR` is invalid: use 1-64 characters of a-z, 0-9, '.', '_' or '-'"
        );
    }

    #[test]
    fn a_hostile_name_is_escaped_and_cut_in_the_message() {
        let e = ServiceName::parse(&format!("\u{1b}[31m{}", "A".repeat(10_000))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.len() < 300, "{} bytes", msg.len());
        assert!(!msg.contains('\u{1b}'), "{msg}");
        assert!(e.shown().ends_with('…'));
    }

    #[test]
    fn serde_is_a_plain_string_checked_on_the_way_in() {
        let name = ServiceName::parse("embed").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"embed\"");
        let back: ServiceName = serde_json::from_str("\"embed\"").unwrap();
        assert_eq!(back, name);
        let err = serde_json::from_str::<ServiceName>("\"Embed\"").unwrap_err();
        assert!(
            err.to_string().contains("service name `Embed` is invalid"),
            "{err}"
        );
    }

    #[test]
    fn borrows_as_str_for_lookups() {
        let set: std::collections::BTreeSet<ServiceName> = ["ocr", "embed"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(set.contains("ocr"));
        assert!(!set.contains("OCR"));
        assert!(ServiceName::parse("ocr").unwrap() == "ocr");
    }
}
