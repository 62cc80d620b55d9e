//! Directory rules: source ownership, seq precedence, expiry, policy.

use std::time::{Duration, Instant};

use gpumesh_dht::record::{GpuInfo, HostInfo, LoadInfo, WorkerRecord, WorkerState};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use gpumesh_dht::rules::unix_ms;
use gpumesh_scheduler::Outcome;

use super::{Directory, Refused, Requirements};
use crate::metrics::{Metrics, RefusedLabels};
use crate::policy::UpstreamPolicy;
use crate::sources::{Change, Refresh, Source};

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
        issued_at_ms: unix_ms(),
        expires_at_ms: unix_ms() + 60_000,
        state: WorkerState::Online,
        services: vec!["ocr".parse().unwrap()],
        capabilities: Vec::new(),
        tunnel_url: url.into(),
        gpus: Vec::new(),
        host: HostInfo::default(),
        load: LoadInfo::default(),
        agent_version: "t".into(),
        started_at_ms: 0,
    }
}

fn upsert(r: WorkerRecord, source: Source, lease_until_ms: Option<u64>) -> Change {
    Change::Upsert {
        record: Box::new(r),
        source,
        lease_until_ms,
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
    // The registry cannot refresh or remove what the DHT owns.
    assert!(matches!(
        d.apply(
            Change::Refresh {
                id: "w1".into(),
                source: Source::Registry,
                refresh: Refresh::default(),
            },
            now
        ),
        Err(Refused::Unknown(_))
    ));
    d.apply(
        Change::Remove {
            id: "w1".into(),
            source: Source::Registry,
        },
        now,
    )
    .unwrap();
    assert_eq!(d.len(), 1);
    d.apply(
        Change::Remove {
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
    let now_ms = unix_ms();
    let ttl = Some(now_ms + 5_000);
    d.apply(
        upsert(record("w1", 1, "http://127.0.0.1:1"), Source::Registry, ttl),
        now,
    )
    .unwrap();
    let req = Requirements::new("ocr").unwrap();
    let picked = d.pick(&req, None, now).unwrap();
    assert_eq!(d.view("w1", now).unwrap().in_flight, 1);
    d.finish(&picked, Outcome::Success, Duration::from_millis(5), now);
    assert_eq!(d.view("w1", now).unwrap().in_flight, 0);
    assert_eq!(d.expire(now_ms + 4_000), 0);
    assert_eq!(d.expire(now_ms + 6_000), 1);
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
    r.services.clear();
    assert!(matches!(
        d.apply(upsert(r, Source::Dht, None), now),
        Err(Refused::Invalid(_))
    ));
    assert!(d.is_empty());
}

#[test]
fn an_unreachable_worker_leaves_rotation_at_once_and_its_attempt_log_outlives_it() {
    let d = directory(true);
    let now = Instant::now();
    for (id, port) in [("w1", 1), ("w2", 2)] {
        d.apply(
            upsert(
                record(id, 1, &format!("http://127.0.0.1:{port}")),
                Source::Dht,
                None,
            ),
            now,
        )
        .unwrap();
    }
    let req = Requirements::new("ocr").unwrap();
    let first = d.pick(&req, None, now).unwrap();
    d.finish(&first, Outcome::Failure, Duration::ZERO, now);
    let log = d.attempt_log(&first.id).expect("logged");
    assert_eq!(log.failures, 1);
    assert!(log.first_failure_ms.is_some() && log.last_attempt_ms.is_some());
    // The forwarder passes the unreachable worker as `avoid`: it is ejected, so later picks
    // (without `avoid`) never return it.
    let other = d.pick(&req, Some(first.key), now).unwrap();
    assert_ne!(other.id, first.id);
    d.finish(&other, Outcome::Success, Duration::ZERO, now);
    for _ in 0..50 {
        let p = d.pick(&req, None, now).unwrap();
        assert_ne!(p.id, first.id, "the unreachable worker is out of rotation");
        d.finish(&p, Outcome::Success, Duration::ZERO, now);
    }
    let view = d.view(&first.id, now).expect("still listed");
    assert_eq!(view.failures, 1);
    d.apply(
        Change::Remove {
            id: first.id.to_string(),
            source: Source::Dht,
        },
        now,
    )
    .unwrap();
    assert!(d.view(&first.id, now).is_none());
    assert_eq!(d.attempt_log(&first.id), Some(log), "kept after it left");
}

/// The `workers` and `workers_by_gpu` gauges, kept by moving one worker at a time, always
/// equal a recount of the view, through joins, state changes, GPU changes and departures.
#[test]
fn worker_gauges_match_a_recount_of_the_view() {
    use gpumesh_dht::record::GpuInfo;
    let mut registry = Registry::default();
    let d = Directory::new(
        UpstreamPolicy::new(true),
        Metrics::register(&mut registry),
        7,
    );
    let gpu = |model: &str| GpuInfo::new(model, "GPU-1", 16_000, 16_000);
    let models = ["NVIDIA H100 80GB HBM3", "Tesla T4", "Radeon RX 7900", ""];
    let now = Instant::now();
    let later = Some(unix_ms() + 600_000);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for step in 0..400u64 {
        let id = format!("w{}", next() % 12);
        let (source, expires) = if next() % 3 == 0 {
            (Source::Registry, later)
        } else {
            (Source::Dht, None)
        };
        let state = [
            WorkerState::Joining,
            WorkerState::Online,
            WorkerState::Draining,
        ][(next() % 3) as usize];
        match next() % 5 {
            0 | 1 => {
                let mut r = record(&id, step, &format!("http://127.0.0.1:{}", 9000 + step));
                r.state = state;
                let model = models[(next() % 4) as usize];
                if !model.is_empty() {
                    r.gpus = vec![gpu(model)];
                }
                let _ = d.apply(upsert(r, source, expires), now);
            }
            2 => {
                let refresh = Refresh {
                    load: Some(LoadInfo::default()),
                    state: Some(state),
                    at_ms: unix_ms(),
                    ..Refresh::default()
                };
                let _ = d.apply(
                    Change::Refresh {
                        id: id.clone(),
                        source,
                        refresh,
                    },
                    now,
                );
            }
            3 => {
                let refresh = Refresh {
                    state: Some(state),
                    gpus: Some(vec![gpu(models[(next() % 3) as usize])]),
                    at_ms: unix_ms(),
                    lease_until_ms: later,
                    ..Refresh::default()
                };
                let _ = d.apply(
                    Change::Refresh {
                        id: id.clone(),
                        source: Source::Registry,
                        refresh,
                    },
                    now,
                );
            }
            _ => {
                let _ = d.apply(Change::Remove { id, source }, now);
            }
        }
        // The recount: what the view holds now.
        let views = d.views(now);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let gauge = |name: &str, a: (&str, &str), b: (&str, &str)| -> i64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .find(|l| {
                    l.contains(&format!("{}=\"{}\"", a.0, a.1))
                        && l.contains(&format!("{}=\"{}\"", b.0, b.1))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(i64::MIN)
        };
        for st in [
            WorkerState::Joining,
            WorkerState::Online,
            WorkerState::Draining,
        ] {
            let st_name = super::state_name(st);
            for src in ["dht", "registry"] {
                let want = views
                    .iter()
                    .filter(|v| v.source == src && v.state == st)
                    .count() as i64;
                let got = gauge(
                    "gpumesh_gateway_workers",
                    ("source", src),
                    ("state", st_name),
                );
                assert_eq!(got, want, "step {step}: {src}/{st_name}");
            }
            for class in ["h100", "t4", "other", "none"] {
                let want = views
                    .iter()
                    .filter(|v| v.state == st)
                    .filter(|v| {
                        v.gpus
                            .first()
                            .map_or("none", |g| gpumesh_scheduler::gpu::gpu_class(&g.model))
                            == class
                    })
                    .count() as i64;
                let got = gauge(
                    "gpumesh_gateway_workers_by_gpu",
                    ("gpu", class),
                    ("state", st_name),
                );
                assert_eq!(got, want, "step {step}: {class}/{st_name}");
            }
        }
    }
}

/// A worker that failed a check and leaves cannot wash it off by joining again, and trust
/// saved by a previous gateway comes back when the worker arrives.
#[test]
fn trust_outlives_the_entry_and_saved_trust_returns_on_arrival() {
    use gpumesh_scheduler::{Evidence, TrustState};
    let d = directory(true);
    let now = Instant::now();
    let join = |id: &str| {
        d.apply(
            upsert(record(id, 1, "http://127.0.0.1:1"), Source::Registry, None),
            now,
        )
        .unwrap();
    };
    join("liar");
    let key = d.check_targets("ocr")[0].key;
    let reason = Some("canary failed: x".to_owned());
    let after = d
        .evidence(key, Evidence::CanaryFailed, reason, now)
        .unwrap();
    assert!(d.check_targets("ocr")[0].distrusted);
    d.apply(
        Change::Remove {
            id: "liar".into(),
            source: Source::Registry,
        },
        now,
    )
    .unwrap();
    assert_eq!(d.trust_of("liar"), Some(after), "remembered after it left");
    join("liar");
    assert!(
        d.check_targets("ocr")[0].distrusted,
        "still distrusted on return"
    );

    let saved = TrustState {
        score: 0.95,
        verified: 7,
        failed: 0,
    };
    d.restore_trust([("later".to_owned(), saved)]);
    join("later");
    let later = d.view("later", now).unwrap();
    assert_eq!((later.trust.score, later.trust.verified), (0.95, 7));
    assert!(
        d.trust_states()
            .iter()
            .any(|(id, t)| id == "liar" && t.failed == 1)
    );
}

#[test]
fn implausible_claims_are_refused_and_inflated_ones_clamped_for_every_source() {
    let d = directory(true);
    let now = Instant::now();
    type Counts = Family<RefusedLabels, Counter>;
    let count = |family: &Counts, source: &str, reason: &str| {
        family
            .get_or_create(&RefusedLabels {
                source: source.into(),
                reason: reason.into(),
            })
            .get()
    };
    let mut liar = record("w1", 1, "http://127.0.0.1:1");
    liar.gpus = vec![GpuInfo::new(
        "NVIDIA H100 80GB HBM3",
        "GPU-1",
        2_000_000,
        1_000,
    )];
    let refused = d.apply(upsert(liar, Source::Registry, None), now);
    assert!(
        matches!(refused, Err(Refused::Implausible(_))),
        "{refused:?}"
    );
    assert!(d.view("w1", now).is_none());
    assert_eq!(
        count(&d.metrics.records_refused, "registry", "vram_beyond_class"),
        1
    );

    let mut big = record("w2", 1, "http://127.0.0.1:2");
    big.load.max_concurrency = u32::MAX;
    d.apply(upsert(big, Source::Dht, None), now).unwrap();
    assert_eq!(d.view("w2", now).unwrap().load.max_concurrency, 64);
    let heartbeat = Refresh {
        load: Some(LoadInfo {
            max_concurrency: 4096,
            in_flight: u32::MAX,
            ..LoadInfo::default()
        }),
        at_ms: unix_ms(),
        ..Refresh::default()
    };
    d.apply(
        Change::Refresh {
            id: "w2".into(),
            source: Source::Dht,
            refresh: heartbeat,
        },
        now,
    )
    .unwrap();
    let load = d.view("w2", now).unwrap().load;
    assert_eq!(load.max_concurrency, 64);
    assert!(load.in_flight < u32::MAX, "{load:?}");
    assert_eq!(count(&d.metrics.records_clamped, "dht", "concurrency"), 2);
}
