//! One pod on this node, from its sandbox to its last container: kubelet's pod worker.
//!
//! Each pod bound to the node gets one task running [`PodWorker::run`]. It is level-triggered:
//! every wake-up (the pod object changed, a container exited, a probe flipped, a back-off ran
//! out) runs [`PodWorker::sync`], which compares what should run with what runs and closes the
//! gap one step at a time, then posts the status if the API server's differs. Everything it starts is named
//! after the pod's uid, the container's name and its attempt number, so a restarted agent
//! finds its containers again ([`PodWorker::adopt`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_runtime::{ContainerConfig, ContainerState, Mount, MountKind};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{mpsc, watch};

use crate::Context;
use crate::backoff::{self, Backoff, Decision};
use crate::probe::{self, ContainerProbes, ProbeEvent, ProbeKind};
use crate::rootfs;
use crate::sandbox::{self, PodDir, container_id, parse_container_id};
use crate::status::{self, ContainerView, PodFacts, State, Termination};
use crate::volumes;
use crate::volumes::PreparedVolume;

/// How often running containers are checked for an exit.
const EXIT_POLL: Duration = Duration::from_millis(100);
/// How long to wait before retrying a step that failed for a reason outside the container
/// (a missing ConfigMap, a volume that could not be set up).
const RETRY: Duration = Duration::from_secs(2);
/// How often a running pod is synced with nothing else happening, so configMap and secret
/// changes reach its volumes (kubelet's resync period is a minute, too).
const RESYNC: Duration = Duration::from_secs(60);
/// How often the disk use of size-limited emptyDirs is measured (kubelet's eviction
/// monitoring period).
const USAGE_CHECK: Duration = Duration::from_secs(10);
/// kubelet's minimum grace when the pod object is already gone (force deletion).
const MINIMUM_GRACE: Duration = Duration::from_secs(2);
/// How much of a termination message is kept (kubelet's limit).
const TERMINATION_MESSAGE_LIMIT: u64 = 4096;

/// The pod as the worker sees it: `None` once it is gone from the API.
pub type PodUpdate = Option<Arc<Pod>>;

/// One container slot of the pod (init or app) and its history.
struct Slot {
    spec: Container,
    view: ContainerView,
    /// The attempt number of the current (or last) container; also its restart count.
    attempt: u32,
    /// The runtime id of the container started last, running or exited.
    id: Option<String>,
    running: bool,
    backoff: Backoff,
    /// How the container of `attempt` ended, once it has.
    exit: Option<Termination>,
    image_backoff: Backoff,
    /// When the container may be tried again after a failure that was not its own exit.
    retry_at: Option<Instant>,
    /// The task forwarding this container's probe results; aborting it stops the probes.
    probes: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stop_probes();
    }
}

impl Slot {
    fn new(spec: &Container, waiting_reason: &str) -> Slot {
        let image = spec.image.clone().unwrap_or_default();
        Slot {
            view: ContainerView::new(&spec.name, &image, waiting_reason),
            spec: spec.clone(),
            attempt: 0,
            id: None,
            running: false,
            backoff: Backoff::default(),
            exit: None,
            image_backoff: Backoff::default(),
            retry_at: None,
            probes: None,
        }
    }

    fn stop_probes(&mut self) {
        if let Some(task) = self.probes.take() {
            task.abort();
        }
    }

    fn field_path(&self, init: bool) -> String {
        let list = if init { "initContainers" } else { "containers" };
        format!("spec.{list}{{{}}}", self.spec.name)
    }
}

pub struct PodWorker {
    ctx: Arc<Context>,
    uid: String,
    dir: PodDir,
    pod_rx: watch::Receiver<PodUpdate>,
    /// The last pod seen, kept after it disappears from the API to finish cleaning up.
    pod: Option<Arc<Pod>>,
    init: Vec<Slot>,
    app: Vec<Slot>,
    sandbox_ready: bool,
    start_time: Option<Timestamp>,
    posted: Posted,
    /// A phase decided for the pod as a whole (Failed because an init container failed).
    phase_override: Option<&'static str>,
    /// Why the pod was evicted (an emptyDir over its sizeLimit): the status message.
    evicted: Option<String>,
    /// The pod's address once its sandbox is up: its own on the pod network, or the node's
    /// for hostNetwork pods (and when berth runs without a pod network).
    pod_ip: Option<String>,
    /// The pod's network namespace, when it has its own.
    netns: Option<std::path::PathBuf>,
    /// Containers of this pod the spec does not name (left by an earlier agent); stopped.
    orphans: Vec<String>,
    /// The pod's volumes once set up, by name.
    volumes: Option<BTreeMap<String, PreparedVolume>>,
    probe_tx: mpsc::UnboundedSender<(String, u32, ProbeEvent)>,
    probe_rx: mpsc::UnboundedReceiver<(String, u32, ProbeEvent)>,
    done: mpsc::UnboundedSender<String>,
}

impl PodWorker {
    pub fn new(
        ctx: Arc<Context>,
        uid: String,
        pod_rx: watch::Receiver<PodUpdate>,
        done: mpsc::UnboundedSender<String>,
    ) -> PodWorker {
        let dir = PodDir::new(&ctx.pods_root, &uid);
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        PodWorker {
            ctx,
            uid,
            dir,
            pod_rx,
            pod: None,
            init: Vec::new(),
            app: Vec::new(),
            sandbox_ready: false,
            start_time: None,
            posted: Posted::default(),
            phase_override: None,
            evicted: None,
            pod_ip: None,
            netns: None,
            orphans: Vec::new(),
            volumes: None,
            probe_tx,
            probe_rx,
            done,
        }
    }

    /// Runs until the pod is gone and everything it had on this machine is cleaned up.
    pub async fn run(mut self) {
        let mut first = true;
        let mut wake = None;
        let mut changed = true;
        loop {
            let update = self.pod_rx.borrow_and_update().clone();
            if let Some(pod) = &update {
                if first {
                    self.init_slots(pod);
                    self.adopt();
                    first = false;
                }
                self.pod = Some(pod.clone());
            }
            let gone = update.is_none();
            let deleting = self
                .pod
                .as_ref()
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some());
            if gone || deleting {
                if first {
                    // Never seen alive (an orphan found at start): adopt what is left.
                    self.adopt();
                }
                self.terminate(gone).await;
                break;
            }
            if changed {
                wake = self.sync().await;
            }
            let running = self.init.iter().chain(&self.app).any(|s| s.running);
            let poll = running.then(|| Instant::now() + EXIT_POLL);
            changed = true;
            tokio::select! {
                update = self.pod_rx.changed() => {
                    if update.is_err() {
                        // The agent is stopping: leave the containers running for the next one.
                        return;
                    }
                }
                _ = sleep_until(wake) => wake = None,
                // Checking for exits is cheap; a whole pass is only worth it when one happened.
                _ = sleep_until(poll) => changed = self.observe_exits(),
                Some((name, attempt, event)) = self.probe_rx.recv() => {
                    self.on_probe(&name, attempt, event).await;
                }
            }
        }
        self.ctx.forget_events(&self.uid);
        let _ = self.done.send(self.uid.clone());
    }

    fn init_slots(&mut self, pod: &Pod) {
        let Some(spec) = &pod.spec else { return };
        let init = spec.init_containers.clone().unwrap_or_default();
        self.init = init
            .iter()
            .map(|c| Slot::new(c, "PodInitializing"))
            .collect();
        let reason = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        self.app = spec
            .containers
            .iter()
            .map(|c| Slot::new(c, reason))
            .collect();
        self.start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0);
        // kubelet never runs a pod that has finished again, even when nothing of it is left
        // on the machine (after `berth down`, say): its containers stay as they ended.
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if let Some(terminal @ ("Succeeded" | "Failed")) = phase {
            self.phase_override = Some(if terminal == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            });
            for slot in self.init.iter_mut().chain(self.app.iter_mut()) {
                let ended = pod
                    .status
                    .as_ref()
                    .and_then(|s| {
                        s.container_statuses
                            .iter()
                            .flatten()
                            .chain(s.init_container_statuses.iter().flatten())
                            .find(|c| c.name == slot.spec.name)
                    })
                    .and_then(|c| c.state.as_ref()?.terminated.as_ref())
                    .map(termination_from_api);
                if let Some(t) = ended {
                    slot.exit = Some(t.clone());
                    slot.view.state = State::Terminated(t);
                }
            }
        }
    }

    /// Picks up containers a previous agent started for this pod: the highest attempt of each
    /// name is its current container; older attempts are removed.
    fn adopt(&mut self) {
        let mut found: HashMap<String, Vec<u32>> = HashMap::new();
        for id in self.ctx.runtime.list().unwrap_or_default() {
            if let Some((uid, name, attempt)) = parse_container_id(&id)
                && uid == self.uid
            {
                found.entry(name.to_string()).or_default().push(attempt);
            }
        }
        for (name, mut attempts) in found {
            attempts.sort_unstable();
            let Some(&latest) = attempts.last() else {
                continue;
            };
            for &old in &attempts[..attempts.len() - 1] {
                let _ = self
                    .ctx
                    .runtime
                    .remove(&container_id(&self.uid, &name, old));
            }
            let id = container_id(&self.uid, &name, latest);
            let slot = self
                .init
                .iter_mut()
                .chain(self.app.iter_mut())
                .find(|s| s.spec.name == name);
            let Some(slot) = slot else {
                // A container the pod no longer has (or an orphan pod): stop it.
                self.orphans.push(id);
                continue;
            };
            slot.attempt = latest;
            slot.view.restart_count = latest as i32;
            slot.id = Some(id.clone());
            let state = self.ctx.runtime.state(&id);
            tracing::debug!(pod = %self.uid, container = %name, ?state, "adopting");
            match state {
                Ok(ContainerState::Running { started_at, .. }) => {
                    slot.running = true;
                    slot.view.state = State::Running {
                        started_at: to_timestamp(started_at),
                        container_id: format!("berth://{id}"),
                    };
                    slot.view.started = true;
                }
                Ok(ContainerState::Exited { .. } | ContainerState::Created) => {
                    // Reported (and restarted per policy) by the next sync.
                    slot.running = true;
                }
                Ok(ContainerState::Abandoned) => {
                    // Never started: start it afresh, as the same attempt.
                    let _ = self.ctx.runtime.remove(&id);
                    slot.id = None;
                }
                _ => {}
            }
            if let Some(known) = self.pod.as_ref().and_then(|p| known_status(p, &name, &id)) {
                slot.view.ready = known.ready && slot.spec.readiness_probe.is_none();
                slot.view.last_terminated = known
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(termination_from_api);
            }
            tracing::info!(pod = %self.uid, container = %name, attempt = latest, "adopted container");
        }
    }
}

fn to_timestamp(t: std::time::SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// What the worker last posted, so that a pod the watch has not caught up with yet (it still
/// shows the status from before the post) does not make it post the same status again.
#[derive(Default)]
struct Posted {
    status: Option<serde_json::Value>,
    /// resourceVersions that are no newer than the last post: those of the agent's own recent
    /// posts and of the pods they were based on. Anyone else's write gives a version not here.
    versions: VecDeque<String>,
}

impl Posted {
    /// How many versions are remembered; the watch lags behind by a few at most.
    const VERSIONS: usize = 8;

    /// Whether `desired` must be posted for `pod` (the pod as the watch last delivered it):
    /// when the API server's status differs from it, unless the difference is only the watch
    /// lagging behind the agent's own post of this very status.
    fn needed(&self, pod: &Pod, desired: &serde_json::Value) -> bool {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_default();
        if !status::differs(&current, desired) {
            return false;
        }
        let stale = pod
            .metadata
            .resource_version
            .as_ref()
            .is_some_and(|v| self.versions.contains(v));
        !(stale && self.status.as_ref() == Some(desired))
    }

    /// Remembers that `status` was posted over `pod`, which gave `written`.
    fn record(&mut self, pod: &Pod, written: &Pod, status: serde_json::Value) {
        let versions = [&pod.metadata, &written.metadata]
            .into_iter()
            .filter_map(|m| m.resource_version.clone());
        for version in versions {
            if !self.versions.contains(&version) {
                self.versions.push_back(version);
            }
        }
        while self.versions.len() > Self::VERSIONS {
            self.versions.pop_front();
        }
        self.status = Some(status);
    }
}

/// Why a container could not be started; each maps to kubelet's waiting reason.
enum StartFailure {
    /// The image is not in the store (`ErrImagePull`, `ErrImageNeverPull`).
    Image {
        reason: &'static str,
        message: String,
    },
    /// The pod's configuration cannot be turned into a container (`CreateContainerConfigError`).
    Config(String),
    /// The runtime could not create or start it (`StartError`, exit code 128).
    Runtime(String),
}

impl PodWorker {
    /// One level-triggered pass; returns when to wake up next if nothing else happens.
    async fn sync(&mut self) -> Option<Instant> {
        let pod = self.pod.clone()?;
        let mut wake = None;
        for id in std::mem::take(&mut self.orphans) {
            self.stop_container_id(&id, Duration::ZERO, None).await;
            let _ = self.ctx.runtime.remove(&id);
        }
        self.observe_exits();
        self.probe_adopted();
        let mut terminal = self.phase_override.is_some()
            || matches!(self.current_phase(&pod), "Succeeded" | "Failed");
        if !terminal && self.evict_if_over_limits(&pod).await {
            terminal = true;
        }
        if !terminal {
            wake = earliest(self.advance(&pod).await, Some(Instant::now() + RESYNC));
            if volumes::has_sized_empty_dir(&pod) {
                wake = earliest(wake, Some(Instant::now() + USAGE_CHECK));
            }
        }
        if !self.post_status(&pod).await {
            wake = earliest(wake, Some(Instant::now() + RETRY));
        }
        wake
    }

    fn restart_policy(pod: &Pod) -> String {
        pod.spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn current_phase(&self, pod: &Pod) -> &'static str {
        let (init, app) = self.views();
        status::phase(&Self::restart_policy(pod), &init, &app)
    }

    /// What the status says about the init and app containers.
    fn views(&self) -> (Vec<ContainerView>, Vec<ContainerView>) {
        let views = |slots: &[Slot]| slots.iter().map(|s| s.view.clone()).collect();
        (views(&self.init), views(&self.app))
    }

    /// Sandbox, then init containers in order, then the app containers.
    async fn advance(&mut self, pod: &Arc<Pod>) -> Option<Instant> {
        let adopted = self.init.iter().chain(&self.app).any(|s| s.id.is_some());
        if !self.sandbox_ready && !adopted {
            // A new pod waits while an earlier pod of the same name still has anything here.
            let earlier = self.ctx.identities.others(pod, &self.uid);
            if !earlier.is_empty() {
                let message = format!(
                    "Waiting for the previous pod {} (uid {}) to stop on this node before starting",
                    crate::agent::Identities::key(pod),
                    earlier.join(", ")
                );
                self.event(pod, None, "Normal", "PreviousPodStopping", &message);
                return Some(Instant::now() + RETRY);
            }
        }
        if !self.sandbox_ready {
            if let Err(e) = self.ensure_sandbox(pod) {
                tracing::warn!(pod = %self.uid, error = %e, "cannot set up the pod sandbox");
                self.event(
                    pod,
                    None,
                    "Warning",
                    "FailedCreatePodSandBox",
                    &format!("Failed to create pod sandbox: {e}"),
                );
                return Some(Instant::now() + RETRY);
            }
            self.sandbox_ready = true;
            if self.start_time.is_none() {
                self.start_time = Some(Timestamp::now());
            }
        }
        if let Err(message) = self.ensure_volumes(pod) {
            self.event(pod, None, "Warning", "FailedMount", &message);
            return Some(Instant::now() + RETRY);
        }
        let policy = Self::restart_policy(pod);
        for index in 0..self.init.len() {
            let slot = &self.init[index];
            if slot.running {
                return None;
            }
            let failed = match &slot.exit {
                Some(t) if t.exit_code == 0 => continue,
                Some(_) => true,
                None => false,
            };
            if failed && policy == "Never" {
                self.phase_override = Some("Failed");
                return None;
            }
            return self.try_start(pod, true, index).await;
        }
        let mut wake = None;
        for index in 0..self.app.len() {
            let slot = &self.app[index];
            if slot.running {
                continue;
            }
            let start = match &slot.exit {
                None => true,
                Some(t) => match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => t.exit_code != 0,
                    _ => true,
                },
            };
            if start {
                wake = earliest(wake, self.try_start(pod, false, index).await);
            }
        }
        wake
    }

    fn slot_mut(&mut self, init: bool, index: usize) -> &mut Slot {
        if init {
            &mut self.init[index]
        } else {
            &mut self.app[index]
        }
    }

    /// Starts (or restarts, after its back-off) one container.
    async fn try_start(&mut self, pod: &Arc<Pod>, init: bool, index: usize) -> Option<Instant> {
        let now = Instant::now();
        let pod_label = pod_label(pod);
        let slot = self.slot_mut(init, index);
        if let Some(retry) = slot.retry_at
            && now < retry
        {
            return Some(retry);
        }
        let restarting = slot.exit.is_some();
        if restarting {
            match slot.backoff.decide(now) {
                Decision::Restart => {}
                Decision::Wait { delay, until } => {
                    let name = slot.spec.name.clone();
                    let message = format!(
                        "back-off {} restarting failed container={name} pod={pod_label}",
                        backoff::go_duration(delay)
                    );
                    slot.view.last_terminated = slot.exit.clone();
                    slot.view.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(message),
                    };
                    let field = slot.field_path(init);
                    self.event(
                        pod,
                        Some(field),
                        "Warning",
                        "BackOff",
                        &format!("Back-off restarting failed container {name} in pod {pod_label}"),
                    );
                    return Some(until);
                }
            }
        }
        let attempt = if slot.id.is_some() {
            slot.attempt + 1
        } else {
            slot.attempt
        };
        match self.start_container(pod, init, index, attempt).await {
            Ok(()) => None,
            Err(failure) => self.start_failed(pod, init, index, attempt, failure),
        }
    }

    fn start_failed(
        &mut self,
        pod: &Arc<Pod>,
        init: bool,
        index: usize,
        attempt: u32,
        failure: StartFailure,
    ) -> Option<Instant> {
        let now = Instant::now();
        let uid = self.uid.clone();
        let slot = self.slot_mut(init, index);
        let field = slot.field_path(init);
        let image = slot.view.image.clone();
        match failure {
            StartFailure::Image { reason, message } => {
                let (reason, wait) = match slot.image_backoff.decide(now) {
                    Decision::Restart => (reason, Duration::ZERO),
                    Decision::Wait { until, .. } => ("ImagePullBackOff", until - now),
                };
                let shown = if reason == "ImagePullBackOff" {
                    format!("Back-off pulling image \"{image}\"")
                } else {
                    message.clone()
                };
                slot.view.state = State::Waiting {
                    reason: reason.into(),
                    message: Some(shown),
                };
                let retry = now + wait.max(RETRY);
                slot.retry_at = Some(retry);
                if reason == "ImagePullBackOff" {
                    self.event(
                        pod,
                        Some(field),
                        "Normal",
                        "BackOff",
                        &format!("Back-off pulling image \"{image}\""),
                    );
                } else {
                    self.event(pod, Some(field.clone()), "Warning", "Failed", &message);
                    self.event(
                        pod,
                        Some(field),
                        "Warning",
                        "Failed",
                        &format!("Error: {reason}"),
                    );
                }
                Some(retry)
            }
            StartFailure::Config(message) => {
                slot.view.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(message.clone()),
                };
                let retry = now + RETRY;
                slot.retry_at = Some(retry);
                self.event(
                    pod,
                    Some(field),
                    "Warning",
                    "Failed",
                    &format!("Error: {message}"),
                );
                Some(retry)
            }
            StartFailure::Runtime(message) => {
                // As containerd reports it: the container exists, and ended at once with 128.
                let id = container_id(&uid, &slot.spec.name, attempt);
                let at = Timestamp::now();
                let termination = Termination {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(message.clone()),
                    started_at: Some(Timestamp::UNIX_EPOCH),
                    finished_at: Some(at),
                    container_id: Some(format!("berth://{id}")),
                };
                if slot.id.is_some() {
                    slot.view.restart_count = attempt as i32;
                }
                slot.attempt = attempt;
                slot.id = Some(id);
                slot.exit = Some(termination.clone());
                slot.view.state = State::Terminated(termination);
                self.event(
                    pod,
                    Some(field),
                    "Warning",
                    "Failed",
                    &format!("Error: {message}"),
                );
                // The restart policy decides on the next pass.
                Some(now)
            }
        }
    }

    async fn start_container(
        &mut self,
        pod: &Arc<Pod>,
        init: bool,
        index: usize,
        attempt: u32,
    ) -> Result<(), StartFailure> {
        let slot = if init {
            &self.init[index]
        } else {
            &self.app[index]
        };
        let spec = slot.spec.clone();
        let field = slot.field_path(init);
        let image = spec.image.clone().unwrap_or_default();
        let id = container_id(&self.uid, &spec.name, attempt);
        let dir = self.dir.container(&spec.name, attempt);
        let mounter = self.ctx.volumes.mounter().clone();
        // A leftover from an attempt that never started (the agent died half-way).
        let _ = self.ctx.runtime.remove(&id);
        rootfs::release(mounter.as_ref(), &dir)
            .map_err(|e| StartFailure::Runtime(e.to_string()))?;
        let root = match rootfs::prepare(&self.ctx.images, mounter.as_ref(), &image, &dir) {
            Ok(root) => root,
            Err(rootfs::RootError::NotFound(_)) => return Err(image_missing(&spec)),
            Err(rootfs::RootError::Other(e)) => return Err(StartFailure::Runtime(e.to_string())),
        };
        self.event(
            pod,
            Some(field.clone()),
            "Normal",
            "Pulled",
            &format!("Container image \"{image}\" already present on machine"),
        );
        let image_id = root.image_id.clone();
        let config = self
            .container_config(pod, &spec, &id, attempt, &dir, root)
            .map_err(StartFailure::Config)?;
        let started = self.ctx.runtime.start(&config).await;
        let ctx = self.ctx.clone();
        let probe_tx = self.probe_tx.clone();
        let pod_ip = self.pod_ip();
        let slot = if init {
            &mut self.init[index]
        } else {
            &mut self.app[index]
        };
        match started {
            Ok(started) => {
                if slot.id.is_some() {
                    slot.view.last_terminated = slot.exit.clone();
                    slot.view.restart_count = attempt as i32;
                }
                slot.attempt = attempt;
                slot.id = Some(id.clone());
                slot.exit = None;
                slot.retry_at = None;
                slot.running = true;
                slot.view.image_id = Some(image_id);
                slot.view.state = State::Running {
                    started_at: to_timestamp(started.started_at),
                    container_id: format!("berth://{id}"),
                };
                let probes = ContainerProbes::new(&spec);
                let initial = probes.status();
                slot.view.started = initial.started;
                slot.view.ready = initial.ready;
                slot.stop_probes();
                if !probes.is_empty() {
                    slot.probes = Some(spawn_probes(
                        probes,
                        &ctx,
                        pod_ip,
                        &id,
                        spec.name.clone(),
                        attempt,
                        probe_tx,
                    ));
                }
                let name = spec.name.clone();
                self.event(
                    pod,
                    Some(field.clone()),
                    "Normal",
                    "Created",
                    &format!("Created container: {name}"),
                );
                self.event(
                    pod,
                    Some(field),
                    "Normal",
                    "Started",
                    &format!("Started container {name}"),
                );
                Ok(())
            }
            Err(e) => {
                let _ = rootfs::release(mounter.as_ref(), &dir);
                Err(StartFailure::Runtime(e.to_string()))
            }
        }
    }

    /// Starts the probes of running containers that have none: containers a previous agent
    /// started, adopted without their probes. Their results start over, as after a kubelet
    /// restart (readiness is false until the first success).
    fn probe_adopted(&mut self) {
        let pod_ip = self.pod_ip();
        for slot in self.init.iter_mut().chain(self.app.iter_mut()) {
            if slot.probes.is_some() || !matches!(slot.view.state, State::Running { .. }) {
                continue;
            }
            let Some(id) = slot.id.clone() else { continue };
            let probes = ContainerProbes::new(&slot.spec);
            if probes.is_empty() {
                continue;
            }
            let initial = probes.status();
            slot.view.started = initial.started;
            slot.view.ready = initial.ready;
            slot.probes = Some(spawn_probes(
                probes,
                &self.ctx,
                pod_ip.clone(),
                &id,
                slot.spec.name.clone(),
                slot.attempt,
                self.probe_tx.clone(),
            ));
        }
    }

    /// Notices containers that exited since the last pass; true if any did.
    fn observe_exits(&mut self) -> bool {
        let runtime = self.ctx.runtime.clone();
        let mounter = self.ctx.volumes.mounter().clone();
        let mut any = false;
        for slot in self.init.iter_mut().chain(self.app.iter_mut()) {
            if !slot.running {
                continue;
            }
            let Some(id) = slot.id.clone() else { continue };
            let termination = match runtime.state(&id) {
                // Adopted while its shim was still creating it (an agent killed mid-start):
                // it is running now, and the status must say so.
                Ok(ContainerState::Running { started_at, .. })
                    if !matches!(slot.view.state, State::Running { .. }) =>
                {
                    slot.view.state = State::Running {
                        started_at: to_timestamp(started_at),
                        container_id: format!("berth://{id}"),
                    };
                    slot.view.started = true;
                    any = true;
                    continue;
                }
                Ok(ContainerState::Running { .. } | ContainerState::Created) => continue,
                // Its shim died before starting it: start it again, as the same attempt.
                Ok(ContainerState::Abandoned) => {
                    let _ = runtime.remove(&id);
                    slot.running = false;
                    slot.id = None;
                    any = true;
                    continue;
                }
                Ok(ContainerState::Exited {
                    exit_code,
                    signal,
                    reason,
                    message,
                    started_at,
                    finished_at,
                }) => Termination {
                    exit_code,
                    signal,
                    reason,
                    message,
                    started_at: Some(to_timestamp(started_at)),
                    finished_at: Some(to_timestamp(finished_at)),
                    container_id: Some(format!("berth://{id}")),
                },
                Ok(ContainerState::Gone) | Err(_) => Termination {
                    exit_code: 137,
                    signal: None,
                    reason: "ContainerStatusUnknown".into(),
                    message: Some(
                        "The container could not be located when the pod was terminated".into(),
                    ),
                    started_at: None,
                    finished_at: Some(Timestamp::now()),
                    container_id: Some(format!("berth://{id}")),
                },
            };
            let mut termination = termination;
            termination.message = termination.message.or_else(|| {
                read_termination_message(&slot.spec, &self.dir, slot.attempt, termination.exit_code)
            });
            any = true;
            tracing::debug!(pod = %self.uid, container = %slot.spec.name, code = termination.exit_code, "container exited");
            slot.running = false;
            slot.stop_probes();
            slot.view.ready = false;
            slot.view.started = false;
            slot.exit = Some(termination.clone());
            slot.view.state = State::Terminated(termination);
            let _ = rootfs::release(
                mounter.as_ref(),
                &self.dir.container(&slot.spec.name, slot.attempt),
            );
        }
        any
    }

    fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(), crate::Error> {
        let ns_dir = self.dir.namespaces();
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        // Pods started before berth had a pod network keep the host's (an IPC namespace
        // pinned without a network one).
        let legacy = self
            .ctx
            .volumes
            .mounter()
            .is_mount_point(&ns_dir.join("ipc"))
            .unwrap_or(false)
            && berth_runtime::PodNamespaces::network_of(&ns_dir).is_none();
        let own_network = self.ctx.network.is_some() && !host_network && !legacy;
        // Creating keeps namespaces already pinned: adopted containers are in them.
        tracing::debug!(pod = %self.uid, own_network, "setting up the sandbox");
        let namespaces = berth_runtime::PodNamespaces::create(&ns_dir, own_network)
            .map_err(|e| crate::Error::Runtime(e.to_string()))?;
        let pod_ip = match (&self.ctx.network, &namespaces.net) {
            (Some(network), Some(netns)) => network
                .attach(&self.uid, netns)
                .map_err(|e| crate::Error::Network(e.to_string()))?
                .to_string(),
            _ => self.ctx.node_ip.clone(),
        };
        tracing::debug!(pod = %self.uid, %pod_ip, "sandbox ready");
        sandbox::write_files(
            &self.dir,
            pod,
            &pod_ip,
            &self.ctx.cluster_domain,
            self.ctx.cluster_dns,
        )?;
        self.netns = namespaces.net;
        self.pod_ip = Some(pod_ip);
        Ok(())
    }

    /// The pod's address (the node's until its sandbox is up).
    fn pod_ip(&self) -> String {
        self.pod_ip
            .clone()
            .unwrap_or_else(|| self.ctx.node_ip.clone())
    }

    /// kubelet's local-storage eviction: a pod whose disk-backed emptyDir grew past its
    /// sizeLimit has its containers killed at once and fails with reason Evicted (the object
    /// stays, as kubelet leaves it). True when the pod was evicted.
    async fn evict_if_over_limits(&mut self, pod: &Pod) -> bool {
        let Some(prepared) = &self.volumes else {
            return false;
        };
        if !volumes::has_sized_empty_dir(pod) {
            return false;
        }
        let Some(message) = volumes::empty_dir_over_limit(pod, prepared, volumes::disk_usage)
        else {
            return false;
        };
        tracing::info!(pod = %self.uid, %message, "evicting the pod");
        self.event(pod, None, "Warning", "Evicted", &message);
        let ids: Vec<String> = self
            .init
            .iter()
            .chain(&self.app)
            .filter(|s| s.running)
            .filter_map(|s| s.id.clone())
            .collect();
        let stops = ids
            .iter()
            .map(|id| self.stop_container_id(id, Duration::ZERO, None));
        futures::future::join_all(stops).await;
        self.observe_exits();
        self.phase_override = Some("Failed");
        self.evicted = Some(message);
        true
    }

    /// Posts the status if it differs from the API server's (the watched pod's); false when
    /// posting failed.
    async fn post_status(&mut self, pod: &Pod) -> bool {
        let (init, app) = self.views();
        let facts = PodFacts {
            pod,
            host_ip: &self.ctx.node_ip,
            pod_ip: self.pod_ip.as_deref(),
            start_time: self.start_time,
            sandbox_ready: self.sandbox_ready,
            now: Timestamp::now(),
            phase_override: self.phase_override,
            reason: self.evicted.is_some().then(|| "Evicted".to_string()),
            message: self.evicted.clone(),
        };
        let status = status::pod_status(&facts, &init, &app);
        let Ok(value) = serde_json::to_value(&status) else {
            return true;
        };
        if !self.posted.needed(pod, &value) {
            return true;
        }
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return true;
        };
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), namespace);
        let patch = serde_json::json!({ "status": value });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(written) => {
                self.posted.record(pod, &written, value);
                true
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => true,
            Err(e) => {
                tracing::warn!(pod = %self.uid, error = %e, "cannot post the pod status");
                false
            }
        }
    }

    /// Stops every container (in parallel, each with the grace period), cleans up everything
    /// the pod had on this machine, and lets the API server forget the pod.
    async fn terminate(&mut self, gone: bool) {
        let pod = self.pod.clone();
        let grace = match (&pod, gone) {
            (Some(p), false) => grace_period(p, p.metadata.deletion_grace_period_seconds),
            _ => MINIMUM_GRACE,
        };
        let mut stops = Vec::new();
        for (slot, init) in self
            .init
            .iter()
            .map(|s| (s, true))
            .chain(self.app.iter().map(|s| (s, false)))
        {
            if let (true, Some(id)) = (slot.running, &slot.id) {
                if let Some(pod) = &pod {
                    self.event(
                        pod,
                        Some(slot.field_path(init)),
                        "Normal",
                        "Killing",
                        &format!("Stopping container {}", slot.spec.name),
                    );
                }
                stops.push((id.clone(), slot.spec.clone()));
            }
        }
        for id in std::mem::take(&mut self.orphans) {
            stops.push((id, Container::default()));
        }
        let this = &*self;
        futures::future::join_all(
            stops
                .iter()
                .map(|(id, spec)| this.stop_container_id(id, grace, Some(spec))),
        )
        .await;
        self.observe_exits();
        if let Some(pod) = &pod
            && !gone
        {
            // Running containers are now terminated in the status kubectl last sees.
            self.post_status(pod).await;
        }
        self.clean_up();
        if let Some(pod) = &pod
            && !gone
        {
            self.forget(pod).await;
        }
    }

    /// SIGTERM (after the preStop hook), then SIGKILL once `grace` has passed.
    async fn stop_container_id(&self, id: &str, grace: Duration, spec: Option<&Container>) {
        let runtime = &self.ctx.runtime;
        let deadline = Instant::now() + grace;
        if let Some(spec) = spec
            && let Some(argv) = pre_stop_command(spec)
            && !grace.is_zero()
        {
            let _ = tokio::time::timeout(grace, crate::exec::run(runtime, id, argv)).await;
        }
        stop_container(
            runtime,
            id,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await;
    }

    /// Removes the pod's containers, roots, volumes, namespaces, cgroup and directory.
    fn clean_up(&mut self) {
        self.volumes = None;
        let network = self.ctx.network.as_deref();
        if let Err(e) = remove_pod(
            &self.ctx.runtime,
            &self.ctx.volumes,
            network,
            &self.dir,
            &self.uid,
        ) {
            tracing::warn!(pod = %self.uid, error = %e, "cannot clean up the pod");
        }
    }

    /// The final delete kubelet makes once nothing of the pod runs: grace 0, for this uid only.
    async fn forget(&self, pod: &Pod) {
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.uid, error = %e, "cannot delete the pod"),
        }
    }

    /// Sets up the pod's volumes (idempotent); the error is a FailedMount event's message.
    fn ensure_volumes(&mut self, pod: &Pod) -> Result<(), String> {
        let ips = [self.pod_ip()];
        let pod_ctx = self.ctx.pod_context(pod, &ips);
        if self.volumes.is_some() {
            // Set up already: bring configMap, secret and downward API files up to date with
            // the pod's labels and annotations and the objects, as kubelet's resync does.
            let report = self.ctx.volumes.refresh(&pod_ctx, self.dir.root());
            for error in report.errors {
                tracing::debug!(pod = %self.uid, error = %error, "volume refresh failed");
            }
            return Ok(());
        }
        let prepared = self
            .ctx
            .volumes
            .setup(&pod_ctx, self.dir.root())
            .map_err(|e| e.to_string())?;
        self.volumes = Some(prepared);
        Ok(())
    }

    fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        self.ctx.event(pod, field_path, type_, reason, message);
    }

    /// The runtime configuration of one container attempt.
    fn container_config(
        &self,
        pod: &Pod,
        spec: &Container,
        id: &str,
        attempt: u32,
        dir: &std::path::Path,
        root: rootfs::PreparedRoot,
    ) -> Result<ContainerConfig, String> {
        let empty = BTreeMap::new();
        let volumes = self.volumes.as_ref().unwrap_or(&empty);
        let resolved = crate::plan::resolve(
            &self.ctx,
            pod,
            spec,
            &root.defaults,
            volumes,
            &crate::plan::Placement {
                pod_dir: self.dir.root(),
                pod_ip: &self.pod_ip(),
                rootfs: &root.rootfs,
            },
        )?;
        let mut mounts = root.mounts;
        let bind = |destination: &str, source: PathBuf, readonly: bool| Mount {
            destination: PathBuf::from(destination),
            kind: MountKind::Bind { source, readonly },
        };
        mounts.push(bind("/etc/hosts", self.dir.hosts(), false));
        mounts.push(bind("/etc/hostname", self.dir.hostname(), false));
        mounts.push(bind("/etc/resolv.conf", self.dir.resolv_conf(), false));
        let termination_log = dir.join("termination-log");
        std::fs::write(&termination_log, b"").map_err(|e| e.to_string())?;
        let message_path = spec
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        mounts.push(bind(&message_path, termination_log, false));
        mounts.extend(resolved.mounts);
        let (hostname, _) = sandbox::hostname(pod, &self.ctx.cluster_domain);
        let log_path = self.dir.log(&spec.name, attempt);
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        Ok(ContainerConfig {
            id: id.to_string(),
            pod_uid: self.uid.clone(),
            rootfs: root.rootfs,
            readonly_rootfs: root.readonly
                || spec
                    .security_context
                    .as_ref()
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
            args: resolved.argv,
            env: resolved.env,
            cwd: resolved.cwd,
            uid: resolved.uid,
            gid: resolved.gid,
            additional_gids: resolved.additional_gids,
            hostname,
            mounts,
            ipc_namespace: Some(self.dir.namespaces().join("ipc")),
            net_namespace: self.netns.clone(),
            memory_limit_bytes: resolved.memory_limit,
            cpu_shares: resolved.cpu_shares,
            cpu_quota_us: resolved.cpu_quota,
            cpu_period_us: resolved.cpu_quota.map(|_| 100_000),
            pids_limit: Some(self.ctx.pids_limit),
            oom_score_adj: None,
            log_path,
            log_max_bytes: self.ctx.log_max_bytes,
            tty: spec.tty.unwrap_or(false),
            stdin: spec.stdin.unwrap_or(false),
        })
    }
}

/// The waiting reason and message of a container whose image is not in the store.
fn image_missing(spec: &Container) -> StartFailure {
    let image = spec.image.as_deref().unwrap_or_default();
    if spec.image_pull_policy.as_deref() == Some("Never") {
        return StartFailure::Image {
            reason: "ErrImageNeverPull",
            message: format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            ),
        };
    }
    StartFailure::Image {
        reason: "ErrImagePull",
        message: format!(
            "Failed to pull image \"{image}\": berth pulls from no registry and the image is \
             not in its store; load it with `berth image import`"
        ),
    }
}

/// `name_namespace(uid)` as kubelet names a pod in its messages.
fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The grace a container gets to stop: `deletion` (the delete's own), else the pod's
/// terminationGracePeriodSeconds, else Kubernetes' default of 30 s.
fn grace_period(pod: &Pod, deletion: Option<i64>) -> Duration {
    let seconds = deletion
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn pre_stop_command(spec: &Container) -> Option<Vec<String>> {
    spec.lifecycle
        .as_ref()?
        .pre_stop
        .as_ref()?
        .exec
        .as_ref()?
        .command
        .clone()
}

/// The termination message: the file the container wrote, else (with
/// `FallbackToLogsOnError` and a failure) the tail of its log.
fn read_termination_message(
    spec: &Container,
    dir: &PodDir,
    attempt: u32,
    exit_code: i32,
) -> Option<String> {
    use std::io::Read;
    let path = dir.container(&spec.name, attempt).join("termination-log");
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(&path) {
        let _ = file
            .take(TERMINATION_MESSAGE_LIMIT)
            .read_to_string(&mut text);
    }
    if !text.is_empty() {
        return Some(text);
    }
    let fallback = spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if fallback && exit_code != 0 {
        return log_tail(&dir.log(&spec.name, attempt), 80, 2048);
    }
    None
}

/// The last `lines` lines (at most `bytes` bytes) of a container's log, as kubectl would
/// print them (newlines kept, as kubelet keeps them).
fn log_tail(path: &std::path::Path, lines: usize, bytes: usize) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let mut joiner = crate::logs::Joiner::default();
    let mut all = joiner.push_bytes(&data);
    all.extend(joiner.flush());
    let start = all.len().saturating_sub(lines);
    let text: Vec<u8> = all[start..]
        .iter()
        .flat_map(|l| l.content.clone())
        .collect();
    let cut = text.len().saturating_sub(bytes);
    let text = String::from_utf8_lossy(&text[cut..]).into_owned();
    (!text.is_empty()).then_some(text)
}

/// Stops container `id`: SIGTERM, then SIGKILL once `grace` has passed (at once for zero),
/// then waits (at most 10 s) for it to be gone.
pub async fn stop_container(runtime: &berth_runtime::Runtime, id: &str, grace: Duration) {
    use rustix::process::Signal;
    let running = |id: &str| matches!(runtime.state(id), Ok(ContainerState::Running { .. }));
    if !grace.is_zero() && running(id) {
        let deadline = Instant::now() + grace;
        let _ = runtime.signal(id, Signal::TERM.as_raw()).await;
        while Instant::now() < deadline && running(id) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if running(id) {
        let _ = runtime.signal(id, Signal::KILL.as_raw()).await;
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && running(id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts `probes` for container attempt `id` and forwards their events, tagged, to the pod
/// worker; aborting the returned task stops the probes.
fn spawn_probes(
    probes: ContainerProbes,
    ctx: &Arc<Context>,
    pod_ip: String,
    id: &str,
    name: String,
    attempt: u32,
    tx: mpsc::UnboundedSender<(String, u32, ProbeEvent)>,
) -> tokio::task::JoinHandle<()> {
    let prober = Arc::new(crate::exec::RuntimeProber {
        runtime: ctx.runtime.clone(),
        id: id.to_string(),
    });
    let mut runner = probe::spawn_probes(probes, tokio::time::Instant::now(), pod_ip, prober);
    tokio::spawn(async move {
        while let Some(event) = runner.events.recv().await {
            if tx.send((name.clone(), attempt, event)).is_err() {
                return;
            }
        }
    })
}

/// The status the API has for container `name` if it describes runtime container `id`.
fn known_status<'a>(
    pod: &'a Pod,
    name: &str,
    id: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == name && c.container_id.as_deref() == Some(&format!("berth://{id}")))
}

fn termination_from_api(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> Termination {
    Termination {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone(),
        started_at: t.started_at.as_ref().map(|t| t.0),
        finished_at: t.finished_at.as_ref().map(|t| t.0),
        container_id: t.container_id.clone(),
    }
}

impl PodWorker {
    /// A probe of container `name` reported; stale reports (an earlier attempt) are dropped.
    async fn on_probe(&mut self, name: &str, attempt: u32, event: ProbeEvent) {
        let Some(pod) = self.pod.clone() else { return };
        let Some((index, init)) = self
            .app
            .iter()
            .position(|s| s.spec.name == name)
            .map(|i| (i, false))
            .or_else(|| {
                self.init
                    .iter()
                    .position(|s| s.spec.name == name)
                    .map(|i| (i, true))
            })
        else {
            return;
        };
        let slot = self.slot_mut(init, index);
        if slot.attempt != attempt || !slot.running {
            return;
        }
        let field = slot.field_path(init);
        match event {
            ProbeEvent::Unhealthy { message, .. } => {
                self.event(&pod, Some(field), "Warning", "Unhealthy", &message);
            }
            ProbeEvent::Warning { message, .. } => {
                self.event(&pod, Some(field), "Warning", "ProbeWarning", &message);
            }
            ProbeEvent::Changed { status, .. } => {
                slot.view.ready = status.ready;
                slot.view.started = status.started;
                if let (Some(kind), Some(id)) = (status.restart, slot.id.clone()) {
                    let what = match kind {
                        ProbeKind::Startup => "startup",
                        ProbeKind::Readiness => "readiness",
                        ProbeKind::Liveness => "liveness",
                    };
                    let spec = slot.spec.clone();
                    slot.stop_probes();
                    slot.view.ready = false;
                    self.event(
                        &pod,
                        Some(field),
                        "Normal",
                        "Killing",
                        &format!("Container {name} failed {what} probe, will be restarted"),
                    );
                    self.stop_container_id(&id, grace_period(&pod, None), Some(&spec))
                        .await;
                }
            }
        }
    }
}

/// Removes everything pod `uid` has on this machine once its containers have stopped: the
/// runtime's containers, container roots, volumes, pinned namespaces, cgroup and directory.
/// The directory stays (and the error says why) if a volume cannot be torn down, so nothing
/// is ever deleted through a mount.
pub fn remove_pod(
    runtime: &berth_runtime::Runtime,
    volumes: &crate::volumes::VolumeManager,
    network: Option<&berth_net::PodNetwork>,
    dir: &PodDir,
    uid: &str,
) -> Result<(), String> {
    for id in runtime.list().unwrap_or_default() {
        if parse_container_id(&id).is_some_and(|(owner, ..)| owner == uid)
            && let Err(e) = runtime.remove(&id)
        {
            tracing::warn!(container = %id, error = %e, "cannot remove container");
        }
    }
    let containers = dir.root().join("containers");
    for name in std::fs::read_dir(&containers)
        .into_iter()
        .flatten()
        .flatten()
    {
        for attempt in std::fs::read_dir(name.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = rootfs::release(volumes.mounter().as_ref(), &attempt.path());
        }
    }
    volumes
        .teardown(dir.root())
        .map_err(|e| format!("cannot tear down volumes; keeping the pod directory: {e}"))?;
    // The link goes before the namespace it leads into; then the address is free.
    if let Some(network) = network
        && let Err(e) = network.detach(uid)
    {
        tracing::warn!(pod = %uid, error = %e, "cannot detach the pod from the network");
    }
    let _ = berth_runtime::PodNamespaces::remove(&dir.namespaces());
    let _ = runtime.remove_pod_cgroup(uid);
    match std::fs::remove_dir_all(dir.root()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove the pod directory: {e}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(version: &str, ready: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "resourceVersion": version},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    fn status(ready: &str) -> serde_json::Value {
        json!({"conditions": [{"type": "Ready", "status": ready}]})
    }

    #[test]
    fn the_status_is_posted_when_the_servers_differs_not_when_the_agents_own_post_does() {
        let mut posted = Posted::default();
        // The server already says it: nothing to post, even never having posted.
        assert!(!posted.needed(&pod("1", "True"), &status("True")));
        assert!(posted.needed(&pod("1", "False"), &status("True")));
        posted.record(&pod("1", "False"), &pod("2", "True"), status("True"));
        // The watch has not caught up with the post yet: no second post of the same status.
        assert!(!posted.needed(&pod("1", "False"), &status("True")));
        assert!(!posted.needed(&pod("2", "True"), &status("True")));
        // But a new status is posted whatever the version.
        assert!(posted.needed(&pod("2", "True"), &status("False")));
        // Someone else wrote Ready=False over the agent's post (the node lifecycle
        // controller): the agent puts its status back although it posted it already.
        assert!(posted.needed(&pod("3", "False"), &status("True")));
        posted.record(&pod("3", "False"), &pod("4", "True"), status("True"));
        assert!(!posted.needed(&pod("4", "True"), &status("True")));
        // Only a few versions are remembered.
        for v in 5..20 {
            posted.record(
                &pod(&v.to_string(), "True"),
                &pod("x", "True"),
                status("True"),
            );
        }
        assert!(posted.needed(&pod("1", "False"), &status("True")));
    }
}
