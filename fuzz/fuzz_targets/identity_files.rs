#![no_main]
//! The key files a node reads at start (`dht/src/identity.rs`): the protobuf keypair file and
//! the `/key/swarm/psk/1.0.0/` network key file, through the real loaders and a real file.
//!
//! Found (fixed): a network key file with a multi-byte character in the key line panicked inside
//! libp2p-pnet's parser (it slices the text by byte index); `load_network_key` now refuses
//! non-ASCII text first.

use std::{path::PathBuf, sync::LazyLock};

use gpumesh_dht::identity::{load_network_key, load_or_create_keypair};
use libfuzzer_sys::fuzz_target;

/// One scratch file per fuzzing process (tmpfs when there is one).
static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("gpumesh-fuzz-identity-{}", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).expect("scratch file");
    if let Ok(key) = load_or_create_keypair(&PATH) {
        // A key that loads writes back to bytes that load as the same identity.
        let bytes = key.to_protobuf_encoding().expect("encodable");
        let again = libp2p::identity::Keypair::from_protobuf_encoding(&bytes).expect("decodes");
        assert_eq!(again.public().to_peer_id(), key.public().to_peer_id());
    }
    if let Ok(psk) = load_network_key(&PATH) {
        // ... and a network key writes back to a file that reads as the same key.
        let again: libp2p::pnet::PreSharedKey = psk.to_key_file().parse().expect("parses");
        assert_eq!(
            again.fingerprint().to_string(),
            psk.fingerprint().to_string()
        );
    }
});
