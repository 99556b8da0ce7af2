//! Leader election through a Lease: `berth up` holds the controller lease, and candidates on
//! one API server never lead at the same time — not when one stops cleanly, not when one
//! vanishes without a word.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_controllers::leader::{LEASE_DURATION, LeaderElection};
use common::Berth;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::{oneshot, watch};

/// How many candidates lead right now, and the most that ever did at once.
#[derive(Default)]
struct Leaders {
    now: AtomicUsize,
    most: AtomicUsize,
    /// Which candidate led last (1-based), for the test to wait on.
    last: AtomicUsize,
}

/// Starts candidate `n` on the test's lease; it leads until it loses the lease, then counts
/// itself out. Dropping the returned sender stops it cleanly (releasing the lease).
fn candidate(
    client: kube::Client,
    leaders: Arc<Leaders>,
    n: usize,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let election =
        LeaderElection::for_lease(client, "default", "test-election", format!("candidate-{n}"));
    let task = tokio::spawn(async move {
        election
            .run(
                async {
                    let _ = stop_rx.await;
                },
                move |mut lost: watch::Receiver<bool>| {
                    let leaders = leaders.clone();
                    async move {
                        let now = leaders.now.fetch_add(1, Ordering::SeqCst) + 1;
                        leaders.most.fetch_max(now, Ordering::SeqCst);
                        leaders.last.store(n, Ordering::SeqCst);
                        let _ = lost.wait_for(|lost| *lost).await;
                        leaders.now.fetch_sub(1, Ordering::SeqCst);
                    }
                },
            )
            .await;
    });
    (stop_tx, task)
}

async fn wait_for_leader(leaders: &Leaders, n: usize, within: Duration) -> Duration {
    let started = Instant::now();
    while leaders.last.load(Ordering::SeqCst) != n || leaders.now.load(Ordering::SeqCst) != 1 {
        assert!(
            started.elapsed() < within,
            "candidate {n} did not lead within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_holds_the_controller_lease_and_candidates_never_lead_together() {
    let berth = Berth::start_with(&["--disable-agent"]);
    let client = berth.client().await;

    // berth up's own controllers lead through kube-system/berth-controller-manager.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let started = Instant::now();
    let holder = loop {
        let holder = leases
            .get_opt("berth-controller-manager")
            .await
            .expect("get lease")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if let Some(holder) = holder {
            break holder;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no controller lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!holder.is_empty());

    let leaders = Arc::new(Leaders::default());
    let (stop_1, task_1) = candidate(client.clone(), leaders.clone(), 1);
    wait_for_leader(&leaders, 1, Duration::from_secs(10)).await;
    let (stop_2, task_2) = candidate(client.clone(), leaders.clone(), 2);
    // Candidate 2 keeps trying and keeps failing while 1 renews.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(leaders.last.load(Ordering::SeqCst), 1);

    // A clean stop releases the lease: 2 takes over at its next attempt, not after expiry.
    drop(stop_1);
    task_1.await.expect("candidate 1");
    let took = wait_for_leader(&leaders, 2, Duration::from_secs(10)).await;
    assert!(
        took < LEASE_DURATION,
        "took {took:?}: the lease was not released"
    );

    // A candidate that vanishes (no release) holds others off until its lease expires.
    task_2.abort();
    let _ = task_2.await;
    drop(stop_2);
    // Its lead future sees the election gone and counts itself out.
    let counted_out = Instant::now();
    while leaders.now.load(Ordering::SeqCst) != 0 {
        assert!(counted_out.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let vanished = Instant::now();
    let (stop_3, task_3) = candidate(client.clone(), leaders.clone(), 3);
    wait_for_leader(&leaders, 3, LEASE_DURATION + Duration::from_secs(10)).await;
    assert!(
        vanished.elapsed() >= LEASE_DURATION - Duration::from_secs(3),
        "took over after {:?}, before the lease could expire",
        vanished.elapsed()
    );
    assert_eq!(
        leaders.most.load(Ordering::SeqCst),
        1,
        "two leaders at once"
    );
    drop(stop_3);
    task_3.await.expect("candidate 3");
}
