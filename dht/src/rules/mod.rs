//! The rulebook: every rule about worker records that more than one crate applies.
//!
//! The probe, the DHT node, the gateway's registry and its request path all call these; none
//! re-implements them, so a name or record the agent accepts is one every DHT node and gateway
//! accepts too.
//!
//! It is a module of `gpumesh-dht` rather than a crate of its own because every crate that
//! applies the rules (the probe, the DHT node, the gateway's registry and request path) already
//! depends on `gpumesh-dht`, and records are signed with libp2p keys: a separate crate would
//! still need libp2p-identity and would make no dependency graph lighter.
//!
//! Layout:
//! - [`record`]: the wire schema ([`record::WorkerRecord`] and its parts).
//! - [`service`]: [`ServiceName`], the one rule for service names.
//! - [`limits`]: sizes and counts a record may reach ([`RecordLimits`], the `MAX_*`), and
//!   [`check_schema`], which applies them.
//! - [`plausible`]: what a record may claim about its hardware and load: refusals
//!   ([`check_claims`]) and clamps ([`clamp_claims`], [`clamp_load`]) under [`ClaimLimits`].
//! - [`stamp`]: who stamps `seq` and expiry ([`Stamper`]), and the one TTL rule
//!   ([`record_ttl`]).
//! - [`change`]: when a record changed enough to be published again
//!   ([`is_material_change`]).
//! - [`seed`]: seed multiaddrs ([`parse_seed`], [`peer_of`]).
//! - [`clock`]: the one wall clock (ms since the Unix epoch) records are stamped and checked
//!   with.
//!
//! `service`, `seed` and `clock` depend on nothing else in the crate; `limits`, `plausible`,
//! `stamp` and `change` read the record schema ([`record`]), which itself only uses `service`.

pub mod change;
pub mod clock;
pub mod limits;
pub mod plausible;
pub mod record;
pub mod seed;
pub mod service;
pub mod stamp;

pub use change::{DEFAULT_VRAM_STEP_MIB, is_material_change};
pub use clock::unix_ms;
pub use limits::{
    MAX_GPUS, MAX_ID_LEN, MAX_PROVIDER_ADDRS, MAX_RECORD_TTL, MAX_SERVICE_BYTES, MAX_SERVICES,
    MAX_TEXT, MAX_URL, RecordLimits, check_gpus, check_schema,
};
pub use plausible::{
    ClaimLimits, Clamp, GPU_CLASSES, GpuClass, Implausible, check_claims, clamp_claims, clamp_load,
    gpu_class,
};
pub use seed::{InvalidSeed, parse_seed, peer_of};
pub use service::{InvalidServiceName, ServiceName};
pub use stamp::{Stamp, Stamper, record_ttl};
