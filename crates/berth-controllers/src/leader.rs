//! Leader election through a coordination.k8s.io Lease, as client-go's leaderelection does:
//! two berth servers on one store never both run the controllers.
//!
//! The lease (`kube-system/berth-controller-manager`) names its holder and when the holder
//! last renewed it. A candidate takes it when it is free, released, or not renewed for
//! `leaseDurationSeconds`; every write carries the resourceVersion it read, so two candidates
//! racing for an expired lease cannot both win. The holder renews every [`RENEW_EVERY`]; if it
//! cannot renew before its own lease would expire it stops leading *before* anyone else may
//! start. On a clean stop it releases the lease so a successor need not wait.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "berth-controller-manager";
/// How long a lease stays valid without renewal (client-go's default is 15 s).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and how often a candidate retries.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// This process's identity in the lease. It is stable across restarts of berth on one data
/// dir (the store lock already makes that one process at a time), so a berth restarted after a
/// crash takes its own lease back at once instead of waiting for it to expire; a server on
/// another data dir or host has another identity and waits.
pub fn identity(host: &str, data_dir: &std::path::Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in data_dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{host}_{hash:08x}")
}

/// One candidate for a lease (by default the controller lease).
pub struct LeaderElection {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
}

/// What one attempt to acquire or renew found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This candidate holds the lease until at least the renew time plus the lease duration.
    Holding,
    /// Someone else holds a valid lease.
    HeldByOther,
}

impl LeaderElection {
    pub fn new(client: Client, identity: String) -> LeaderElection {
        Self::for_lease(client, LEASE_NAMESPACE, LEASE_NAME, identity)
    }

    /// A candidate for another lease (tests elect over their own).
    pub fn for_lease(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
    ) -> LeaderElection {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            lease_name: name.to_string(),
            identity,
        }
    }

    /// Campaigns until `stop` resolves. While this candidate leads, `lead(lost)` runs; `lost`
    /// turns true when leadership ends (or berth stops), and the returned future must then
    /// finish. Leadership can be won again later, which calls `lead` again.
    pub async fn run<F, Fut>(self, stop: impl Future<Output = ()>, mut lead: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        tokio::pin!(stop);
        let mut leading: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            // Leading ended on its own (a controller panicked): step down and let the next
            // attempt lead afresh, rather than hold the lease with nothing running.
            if leading.as_ref().is_some_and(|(_, task)| task.is_finished()) {
                tracing::error!("the controllers stopped while leading; restarting them");
                stop_leading(&mut leading).await;
            }
            let attempt = self.try_acquire_or_renew().await;
            match (&attempt, leading.is_some()) {
                (Ok(Attempt::Holding), false) => {
                    tracing::info!(identity = %self.identity, "leading the controllers");
                    let (lost_tx, lost_rx) = watch::channel(false);
                    leading = Some((lost_tx, tokio::spawn(lead(lost_rx))));
                }
                (Ok(Attempt::HeldByOther), true) => {
                    tracing::warn!("another berth took the controller lease");
                    stop_leading(&mut leading).await;
                }
                (Err(e), true) if last_renewal.elapsed() + RENEW_EVERY >= LEASE_DURATION => {
                    // Stop before the lease can expire: past that point another server may
                    // lead, and two leaders is the one thing this module exists to prevent.
                    tracing::warn!(error = %e, "cannot renew the controller lease; stepping down");
                    stop_leading(&mut leading).await;
                }
                (Err(e), _) => tracing::debug!(error = %e, "controller lease attempt failed"),
                _ => {}
            }
            if matches!(attempt, Ok(Attempt::Holding)) {
                last_renewal = tokio::time::Instant::now();
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
        if leading.is_some() {
            stop_leading(&mut leading).await;
            self.release().await;
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(self.held_spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Holding),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Attempt::HeldByOther),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() && !expired(&spec, now) {
            return Ok(Attempt::HeldByOther);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = match (&spec.acquire_time, ours) {
            (Some(at), true) => at.0,
            _ => now,
        };
        lease.spec = Some(self.held_spec(acquired, now, transitions));
        // replace() sends the resourceVersion read above: a racing candidate gets a conflict.
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::HeldByOther),
            Err(e) => Err(e),
        }
    }

    fn held_spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the lease up (client-go's ReleaseOnCancel): no holder, so the next candidate
    /// takes it on its next attempt.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.lease_name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(error = %e, "could not release the controller lease");
        }
    }
}

/// The lease was not renewed within its duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed
        .0
        .saturating_add(duration)
        .is_ok_and(|until| until < now)
}

async fn stop_leading(leading: &mut Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>) {
    if let Some((lost, task)) = leading.take() {
        let _ = lost.send(true);
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration_without_renewal() {
        let renewed = Timestamp::from_second(1_000).expect("valid time");
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        let at = |s| Timestamp::from_second(s).expect("valid time");
        assert!(!expired(&spec, at(1_010)));
        assert!(!expired(&spec, at(1_015)));
        assert!(expired(&spec, at(1_016)));
        assert!(expired(&LeaseSpec::default(), at(0)));
    }

    #[test]
    fn identities_are_stable_per_data_dir() {
        let a = identity("host", std::path::Path::new("/var/lib/berth"));
        assert_eq!(a, identity("host", std::path::Path::new("/var/lib/berth")));
        assert_ne!(a, identity("host", std::path::Path::new("/srv/berth")));
        assert!(a.starts_with("host_"));
    }
}
