//! Operator-signed admission with real nodes: an admission-enforcing gateway discovers an
//! admitted worker, and refuses (and counts) workers without a token, with a token for another
//! peer, with an expired token, and with a token from an operator it does not trust. A second
//! gateway without a trusted key sees everyone (behaviour unchanged without a key).

mod support;

use gpumesh_dht::{
    AdmissionToken, DhtHandle, OperatorKey, RejectReason, Role, rules::unix_ms,
    testnet::fresh_identity,
};
use libp2p::{PeerId, identity::Keypair};
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

const DAY_MS: u64 = 86_400_000;

/// Builds a worker's token from its own peer id.
type MakeToken<'a> = Box<dyn FnOnce(PeerId) -> Option<AdmissionToken> + 'a>;

/// The not_admitted rejections a node counted, over all kinds.
fn not_admitted(node: &DhtHandle) -> u64 {
    ["record", "provider", "gossip"]
        .iter()
        .map(|k| node.metrics().rejected(k, RejectReason::NotAdmitted))
        .sum()
}

/// Starts a client-mode worker with `token` (built for the worker's own peer id by `make`) and
/// publishes its record.
async fn start_worker(
    net: &mut Testnet,
    make: impl FnOnce(PeerId) -> Option<AdmissionToken>,
) -> anyhow::Result<DhtHandle> {
    let (identity, key) = fresh_identity();
    let mut c = net.node_config(Role::Worker { reachable: false }, net.seeds.clone());
    c.identity = identity;
    c.admission.token = make(key.public().to_peer_id());
    let (w, _) = net.start_node(c).await?;
    let n = net.workers.len();
    net.workers.push(w.clone());
    // The open gateway acknowledges the put even when the enforcing one refuses it.
    w.publish_record(net.worker_record(n)).await?;
    Ok(w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admitted_workers_are_discovered_by_an_enforcing_gateway() -> anyhow::Result<()> {
    support::init_tracing();
    let operator = Keypair::generate_ed25519();
    let stranger = Keypair::generate_ed25519();
    let trusted = OperatorKey::of(&operator)?;
    let mut net = Testnet::new(TestnetConfig::default());
    let mut c = net.node_config(Role::Gateway, Vec::new());
    c.admission.trusted = vec![trusted];
    let enforcing = net.add_gateway_with(c).await?;
    let open = net.add_gateway().await?;

    let now = unix_ms();
    let admitted = start_worker(&mut net, |me| {
        AdmissionToken::issue(&operator, me, now, now + DAY_MS).ok()
    })
    .await?;
    assert!(
        wait_until(EVENTUALLY, || enforcing
            .registry()
            .contains(&admitted.peer_id()))
        .await,
        "the admitted worker was not discovered"
    );
    assert_eq!(
        not_admitted(&enforcing),
        0,
        "an admitted worker was counted"
    );

    let cases: [(&str, MakeToken<'_>); 4] = [
        ("no token", Box::new(|_| None)),
        (
            "token for another peer",
            Box::new(|_| {
                AdmissionToken::issue(&operator, PeerId::random(), now, now + DAY_MS).ok()
            }),
        ),
        (
            "expired token",
            Box::new(|me| AdmissionToken::issue(&operator, me, now - DAY_MS, now - 1).ok()),
        ),
        (
            "another operator",
            Box::new(|me| AdmissionToken::issue(&stranger, me, now, now + DAY_MS).ok()),
        ),
    ];
    let mut refused = Vec::new();
    for (case, make) in cases {
        let before = enforcing
            .metrics()
            .rejected("record", RejectReason::NotAdmitted)
            + enforcing
                .metrics()
                .rejected("gossip", RejectReason::NotAdmitted);
        let w = start_worker(&mut net, make).await?;
        // The open gateway sees it: without a trusted key nothing changes.
        assert!(
            wait_until(EVENTUALLY, || open.registry().contains(&w.peer_id())).await,
            "{case}: the open gateway did not see the worker"
        );
        assert!(
            wait_until(EVENTUALLY, || {
                enforcing
                    .metrics()
                    .rejected("record", RejectReason::NotAdmitted)
                    + enforcing
                        .metrics()
                        .rejected("gossip", RejectReason::NotAdmitted)
                    > before
            })
            .await,
            "{case}: the enforcing gateway did not count a refusal"
        );
        assert!(
            !enforcing.registry().contains(&w.peer_id()),
            "{case}: the enforcing gateway admitted the worker"
        );
        refused.push(w.peer_id());
    }

    // Heartbeats and provider records of refused workers are refused and counted too.
    assert!(
        wait_until(EVENTUALLY, || enforcing
            .metrics()
            .rejected("gossip", RejectReason::NotAdmitted)
            > 0
            && enforcing
                .metrics()
                .rejected("provider", RejectReason::NotAdmitted)
                > 0)
        .await,
        "gossip/provider refusals were not counted"
    );

    // A DHT lookup from the enforcing gateway (providers, then records) returns only the
    // admitted worker, even though the open gateway holds everyone's records.
    let found = enforcing.find_workers("ocr").await?;
    let ids: Vec<PeerId> = found.iter().map(|w| w.peer_id).collect();
    assert!(
        ids.contains(&admitted.peer_id()),
        "lookup lost the admitted worker"
    );
    for p in &refused {
        assert!(!ids.contains(p), "lookup returned refused worker {p}");
        assert!(!enforcing.registry().contains(p));
    }
    assert!(refused.iter().all(|p| open.registry().contains(p)));
    net.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_leaves_the_view_when_its_token_expires() -> anyhow::Result<()> {
    support::init_tracing();
    let operator = Keypair::generate_ed25519();
    let mut net = Testnet::new(TestnetConfig::default());
    let mut c = net.node_config(Role::Gateway, Vec::new());
    c.admission.trusted = vec![OperatorKey::of(&operator)?];
    let gateway = net.add_gateway_with(c).await?;
    // Long enough to be admitted on a loaded machine, short enough to watch it run out.
    let now = unix_ms();
    let not_after = now + 6_000;
    let w = start_worker(&mut net, |me| {
        AdmissionToken::issue(&operator, me, now, not_after).ok()
    })
    .await?;
    let seen = wait_until(EVENTUALLY, || gateway.registry().contains(&w.peer_id())).await;
    if unix_ms() < not_after {
        assert!(seen, "the worker was not admitted before its token expired");
    }
    assert!(
        wait_until(EVENTUALLY, || unix_ms() > not_after
            && !gateway.registry().contains(&w.peer_id()))
        .await,
        "the worker stayed in the view after its token expired"
    );
    // It keeps refreshing; every refresh is refused now.
    let before = not_admitted(&gateway);
    assert!(wait_until(EVENTUALLY, || not_admitted(&gateway) > before).await);
    assert!(!gateway.registry().contains(&w.peer_id()));
    net.shutdown().await;
    Ok(())
}
