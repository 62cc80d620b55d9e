//! The seed system's environment names, `DHT_ENABLED` and `DHT_PORT`, read one strict way by
//! both `gpumesh agent` and `gpumesh gateway`: a flag (or its `GPUMESH_*` variable) wins; an
//! unset or empty legacy variable means the default; anything else must parse, or the command
//! exits 64 naming the variable. A lenient reading would turn a typo such as
//! `DHT_ENABLED=flase` into the opposite of what the operator meant.

use super::UsageError;

/// The spellings of a boolean the seed system's scripts used.
const BOOLISH: [(&str, bool); 8] = [
    ("true", true),
    ("1", true),
    ("yes", true),
    ("on", true),
    ("false", false),
    ("0", false),
    ("no", false),
    ("off", false),
];

/// A set, non-empty environment variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether to use the DHT: `flag`, else `DHT_ENABLED`, else `true`.
///
/// # Errors
/// `DHT_ENABLED` is set to something that is not a boolean.
pub fn dht_enabled(flag: Option<bool>) -> Result<bool, UsageError> {
    match flag {
        Some(b) => Ok(b),
        None => parse_dht_enabled(var("DHT_ENABLED").as_deref()),
    }
}

/// The DHT's TCP port: `flag`, else `DHT_PORT`, else `default`.
///
/// # Errors
/// `DHT_PORT` is set to something that is not a port number.
pub fn dht_port(flag: Option<u16>, default: u16) -> Result<u16, UsageError> {
    match flag {
        Some(p) => Ok(p),
        None => parse_dht_port(var("DHT_PORT").as_deref(), default),
    }
}

fn parse_dht_enabled(value: Option<&str>) -> Result<bool, UsageError> {
    let Some(v) = value else { return Ok(true) };
    BOOLISH
        .iter()
        .find(|(s, _)| v.trim().eq_ignore_ascii_case(s))
        .map(|(_, b)| *b)
        .ok_or_else(|| {
            UsageError(format!(
                "DHT_ENABLED={v} is not a boolean (use true/false, 1/0, yes/no or on/off)"
            ))
        })
}

fn parse_dht_port(value: Option<&str>, default: u16) -> Result<u16, UsageError> {
    let Some(v) = value else { return Ok(default) };
    v.trim()
        .parse()
        .map_err(|_| UsageError(format!("DHT_PORT={v} is not a port (0-65535)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dht_enabled_is_strict_and_names_the_variable() {
        assert!(parse_dht_enabled(None).unwrap());
        assert!(!parse_dht_enabled(Some("false")).unwrap());
        assert!(!parse_dht_enabled(Some(" OFF ")).unwrap());
        assert!(parse_dht_enabled(Some("Yes")).unwrap());
        let e = parse_dht_enabled(Some("flase")).unwrap_err().to_string();
        assert!(e.contains("DHT_ENABLED=flase"), "{e}");
        assert!(parse_dht_enabled(Some("junk")).is_err());
        assert!(!dht_enabled(Some(false)).unwrap());
    }

    #[test]
    fn dht_port_is_strict_and_names_the_variable() {
        assert_eq!(parse_dht_port(None, 4001).unwrap(), 4001);
        assert_eq!(parse_dht_port(Some(" 4002 "), 0).unwrap(), 4002);
        let e = parse_dht_port(Some("70000"), 0).unwrap_err().to_string();
        assert!(e.contains("DHT_PORT=70000"), "{e}");
        assert_eq!(dht_port(Some(9), 0).unwrap(), 9);
    }
}
