//! Persistent node identity and the pre-shared network key, on disk.
//!
//! Identity files hold the protobuf encoding of a libp2p keypair (as go-libp2p and kubo write it);
//! network keys use the go-compatible `/key/swarm/psk/1.0.0/` text format.

use std::{io::Write, path::Path};

use libp2p::{identity::Keypair, pnet::PreSharedKey};
use rand::{RngCore, SeedableRng, rngs::StdRng};

use crate::DhtError;

/// Loads the keypair in `path`, or creates an Ed25519 one there (mode 0600) if it is missing.
pub fn load_or_create_keypair(path: &Path) -> Result<Keypair, DhtError> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| DhtError::BadKey {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            write_keypair(path, &key)?;
            Ok(key)
        }
        Err(source) => Err(DhtError::KeyFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Loads the keypair in `path`; a missing file is an error (operator keys are never created
/// implicitly: a typo must not mint a new operator).
pub fn read_keypair(path: &Path) -> Result<Keypair, DhtError> {
    let bytes = std::fs::read(path).map_err(|source| DhtError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| DhtError::BadKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `key` to `path` (mode 0600); refuses to overwrite an existing file.
pub fn write_keypair(path: &Path, key: &Keypair) -> Result<(), DhtError> {
    let bytes = key.to_protobuf_encoding().map_err(|e| DhtError::BadKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    write_new_private(path, &bytes)
}

/// A fresh random pre-shared network key.
pub fn generate_network_key() -> PreSharedKey {
    let mut bytes = [0u8; 32];
    StdRng::from_os_rng().fill_bytes(&mut bytes);
    PreSharedKey::new(bytes)
}

/// Reads a network key file (`/key/swarm/psk/1.0.0/` format).
pub fn load_network_key(path: &Path) -> Result<PreSharedKey, DhtError> {
    let text = std::fs::read_to_string(path).map_err(|source| DhtError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    // libp2p-pnet's parser slices the text by byte offsets and panics on a multi-byte
    // character (found by fuzzing); a key file is ASCII, so refuse anything else first.
    if !text.is_ascii() {
        return Err(DhtError::BadKey {
            path: path.to_owned(),
            reason: "a network key file is ASCII text".into(),
        });
    }
    text.trim_end()
        .parse()
        .or_else(|_| text.parse())
        .map_err(|e: libp2p::pnet::KeyParseError| DhtError::BadKey {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Writes a network key file (mode 0600); refuses to overwrite an existing file.
pub fn write_network_key(path: &Path, key: PreSharedKey) -> Result<(), DhtError> {
    write_new_private(path, key.to_key_file().as_bytes())
}

fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), DhtError> {
    let err = |source| DhtError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_and_network_key_round_trip() {
        let dir = std::env::temp_dir().join(format!(
            "gpumesh-id-{}-{}",
            std::process::id(),
            crate::rules::unix_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kp = dir.join("node.key");
        let a = load_or_create_keypair(&kp).unwrap();
        let b = load_or_create_keypair(&kp).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let psk = generate_network_key();
        let pp = dir.join("net.psk");
        write_network_key(&pp, psk).unwrap();
        assert_eq!(
            load_network_key(&pp).unwrap().fingerprint().to_string(),
            psk.fingerprint().to_string()
        );
        assert!(write_network_key(&pp, psk).is_err());
        std::fs::write(dir.join("bad.key"), b"nope").unwrap();
        assert!(load_or_create_keypair(&dir.join("bad.key")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
