//! Directory rules: source ownership, seq precedence, expiry, policy.

use std::time::{Duration, Instant};

use gpumesh_dht::record::{HostInfo, LoadInfo, WorkerRecord, WorkerState};
use prometheus_client::registry::Registry;

use super::{Directory, DirectoryEvent, Refused, Requirements, Source};
use crate::metrics::Metrics;
use crate::policy::UpstreamPolicy;

fn directory(allow_private: bool) -> Directory {
    Directory::new(
        UpstreamPolicy::new(allow_private),
        Metrics::register(&mut Registry::default()),
        7,
    )
}

fn record(id: &str, seq: u64, url: &str) -> WorkerRecord {
    WorkerRecord {
        peer_id: id.into(),
        seq,
        issued_at_ms: super::unix_ms(),
        expires_at_ms: super::unix_ms() + 60_000,
        state: WorkerState::Online,
        services: vec!["ocr".into()],
        capabilities: Vec::new(),
        tunnel_url: url.into(),
        gpus: Vec::new(),
        host: HostInfo::default(),
        load: LoadInfo::default(),
        agent_version: "t".into(),
        started_at_ms: 0,
    }
}

fn upsert(r: WorkerRecord, source: Source, expires_at: Option<Instant>) -> DirectoryEvent {
    DirectoryEvent::Upsert {
        record: Box::new(r),
        source,
        expires_at,
    }
}

#[test]
fn newer_seq_wins_and_sources_only_remove_their_own() {
    let d = directory(true);
    let now = Instant::now();
    d.apply(
        upsert(
            record("w1", 5, "http://127.0.0.1:1"),
            Source::Registry,
            None,
        ),
        now,
    )
    .unwrap();
    // An older DHT record does not replace it; a newer one does and takes ownership.
    assert!(matches!(
        d.apply(
            upsert(record("w1", 4, "http://127.0.0.1:2"), Source::Dht, None),
            now
        ),
        Err(Refused::Stale { got: 4, have: 5 })
    ));
    d.apply(
        upsert(record("w1", 6, "http://127.0.0.1:3"), Source::Dht, None),
        now,
    )
    .unwrap();
    assert_eq!(d.view("w1", now).unwrap().source, "dht");
    // The registry cannot remove what the DHT owns.
    assert!(d.deregister("w1").is_err());
    d.apply(
        DirectoryEvent::Remove {
            id: "w1".into(),
            source: Source::Registry,
        },
        now,
    )
    .unwrap();
    assert_eq!(d.len(), 1);
    d.apply(
        DirectoryEvent::Remove {
            id: "w1".into(),
            source: Source::Dht,
        },
        now,
    )
    .unwrap();
    assert!(d.is_empty());
}

#[test]
fn registry_reregistration_replaces_whatever_the_seq() {
    let d = directory(true);
    let now = Instant::now();
    d.apply(
        upsert(
            record("w1", 9, "http://127.0.0.1:1"),
            Source::Registry,
            None,
        ),
        now,
    )
    .unwrap();
    d.apply(
        upsert(
            record("w1", 1, "http://127.0.0.1:2"),
            Source::Registry,
            None,
        ),
        now,
    )
    .unwrap();
    assert_eq!(d.view("w1", now).unwrap().tunnel_url, "http://127.0.0.1:2");
}

#[test]
fn registry_entries_expire_and_picks_skip_nothing_left() {
    let d = directory(true);
    let now = Instant::now();
    let ttl = Some(now + Duration::from_secs(5));
    d.apply(
        upsert(record("w1", 1, "http://127.0.0.1:1"), Source::Registry, ttl),
        now,
    )
    .unwrap();
    let req = Requirements::new("ocr").unwrap();
    let picked = d.pick(&req, None, now).unwrap();
    assert_eq!(d.view("w1", now).unwrap().in_flight, 1);
    d.finish(
        &picked,
        super::Finish::Success,
        Duration::from_millis(5),
        now,
    );
    assert_eq!(d.view("w1", now).unwrap().in_flight, 0);
    assert_eq!(d.expire(now + Duration::from_secs(4)), 0);
    assert_eq!(d.expire(now + Duration::from_secs(6)), 1);
    assert!(d.pick(&req, None, now).is_err());
}

#[test]
fn invalid_and_refused_records_never_enter() {
    let d = directory(false);
    let now = Instant::now();
    for (r, what) in [
        (record("w1", 1, "http://93.184.216.34"), "plain http"),
        (record("w1", 1, "https://10.0.0.1"), "private"),
        (record("", 1, "https://w.example.com"), "empty id"),
        (record("w/1", 1, "https://w.example.com"), "bad id"),
    ] {
        assert!(
            d.apply(upsert(r, Source::Dht, None), now).is_err(),
            "{what}"
        );
    }
    let mut r = record("w1", 1, "https://w.example.com");
    r.services = vec!["has space".into()];
    assert!(matches!(
        d.apply(upsert(r, Source::Dht, None), now),
        Err(Refused::Invalid(_))
    ));
    assert!(d.is_empty());
}
