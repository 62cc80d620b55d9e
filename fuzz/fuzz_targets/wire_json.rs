#![no_main]
//! The shared HTTP wire types (`dht/src/wire.rs`): the bootstrap seed list (also the agent's
//! on-disk seed cache), register / heartbeat bodies and answers. The first byte picks the type.

use gpumesh_dht::wire::{BootstrapResponse, HeartbeatRequest, RegisterResponse, Seed};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

/// Decodes; when that works, encodes and decodes again and expects the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        let again = serde_json::to_vec(&v).expect("serialisable");
        assert_eq!(serde_json::from_slice::<T>(&again).ok(), Some(v));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((tag, body)) = data.split_first() else {
        return;
    };
    match tag % 4 {
        0 => round_trip::<BootstrapResponse>(body),
        1 => round_trip::<Seed>(body),
        2 => round_trip::<RegisterResponse>(body),
        _ => {
            // GPU figures are floats: no equality (an out-of-range f32 reads back as `null`).
            if let Ok(v) = serde_json::from_slice::<HeartbeatRequest>(body) {
                let _ = serde_json::to_vec(&v);
            }
        }
    }
});
