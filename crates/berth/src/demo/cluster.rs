//! The demo's view of the cluster, through the Kubernetes API only (kube-rs, as any client):
//! applying the story's manifests, waiting for rollouts and pods, and asking the cluster DNS
//! what a stable name points at, as a pod would.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde::Deserialize;
use serde_json::Value;

/// How long a rollout or a pod may take to become ready on a busy two-core machine.
pub const READY_WITHIN: Duration = Duration::from_secs(240);

pub struct Cluster {
    client: kube::Client,
    namespace: String,
}

/// A pod as the story looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub uid: String,
    pub ip: String,
    pub ready: bool,
}

impl Cluster {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Cluster {
            client,
            namespace: namespace.to_string(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Server-side applies every document of `manifest` (as `kubectl apply --server-side`)
    /// after `tweak` adjusts it; returns what was applied, as `kind/name`.
    pub async fn apply(
        &self,
        manifest: &str,
        tweak: impl Fn(&mut Value),
    ) -> anyhow::Result<Vec<String>> {
        let mut applied = Vec::new();
        for document in serde_yaml::Deserializer::from_str(manifest) {
            let yaml = serde_yaml::Value::deserialize(document).context("a manifest document")?;
            if yaml.is_null() {
                continue;
            }
            let mut object = serde_json::to_value(yaml).context("a manifest document")?;
            tweak(&mut object);
            let object: DynamicObject =
                serde_json::from_value(object).context("a manifest object")?;
            let types = object
                .types
                .clone()
                .context("a manifest object without apiVersion and kind")?;
            let gvk = GroupVersionKind::try_from(&types)?;
            let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .with_context(|| format!("the cluster does not serve {}", types.kind))?;
            let name = object
                .metadata
                .name
                .clone()
                .context("a manifest object without a name")?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
            api.patch(
                &name,
                &PatchParams::apply("berth-demo").force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("cannot apply {}/{name}", types.kind))?;
            applied.push(format!("{}/{name}", resource.plural));
        }
        Ok(applied)
    }

    /// Waits until Deployment `name` has rolled out and exactly `replicas` pods labelled
    /// app=`name` exist, all ready (the old ones gone); returns their names.
    pub async fn rolled_out(&self, name: &str, replicas: i32) -> anyhow::Result<BTreeSet<String>> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = ListParams::default().labels(&format!("app={name}"));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let deployment = deployments.get(name).await?;
            let generation = deployment.metadata.generation.unwrap_or(0);
            let status = deployment.status.unwrap_or_default();
            let settled = status.observed_generation.unwrap_or(0) >= generation
                && status.updated_replicas.unwrap_or(0) == replicas
                && status.ready_replicas.unwrap_or(0) == replicas;
            let listed = pods.list(&selector).await?.items;
            let ready: BTreeSet<String> = listed
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if settled && listed.len() == replicas as usize && ready.len() == listed.len() {
                return Ok(ready);
            }
            if Instant::now() > deadline {
                bail!(
                    "deployment {name} did not roll out {replicas} ready pods within {READY_WITHIN:?} \
                     ({} of {} pods ready; see `kubectl describe deploy {name}`)",
                    ready.len(),
                    listed.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn pod(&self, name: &str) -> anyhow::Result<Option<PodView>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(pods.get_opt(name).await?.map(|pod| PodView {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            ready: pod.metadata.deletion_timestamp.is_none() && is_ready(&pod),
        }))
    }

    /// Waits until pod `name` is ready and is not the pod with uid `not_uid`.
    pub async fn pod_ready(&self, name: &str, not_uid: Option<&str>) -> anyhow::Result<PodView> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(pod) = self.pod(name).await?
                && pod.ready
                && Some(pod.uid.as_str()) != not_uid
            {
                return Ok(pod);
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {name} was not ready within {READY_WITHIN:?} (see `kubectl describe pod {name}`)"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn delete_pod(&self, name: &str) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        pods.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// The claim `name`'s phase and the volume bound to it.
    pub async fn claim(&self, name: &str) -> anyhow::Result<(String, String)> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let claim = claims.get(name).await?;
        Ok((
            claim
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Pending".into()),
            claim.spec.and_then(|s| s.volume_name).unwrap_or_default(),
        ))
    }

    /// Service `name`'s load balancer: the address its status gives users, and the port.
    pub async fn load_balancer(&self, name: &str) -> anyhow::Result<(String, u16)> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let service = services.get(name).await?;
            let port = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .and_then(|ports| ports.first())
                .map(|p| p.port);
            let ingress = service
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|i| i.into_iter().find_map(|i| i.ip));
            if let (Some(ip), Some(port)) = (ingress, port) {
                let port = u16::try_from(port).context("a Service port out of range")?;
                return Ok((ip, port));
            }
            if Instant::now() > deadline {
                bail!("service {name} got no load balancer address (is the node Ready?)");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The cluster DNS's address: the kube-dns Service's cluster IP, which the service proxy
    /// forwards from this machine too.
    pub async fn dns_server(&self) -> anyhow::Result<SocketAddr> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), "kube-system");
        let service = services
            .get("kube-dns")
            .await
            .context("no kube-system/kube-dns Service: is cluster DNS running?")?;
        let ip: IpAddr = service
            .spec
            .and_then(|s| s.cluster_ip)
            .context("kube-dns has no cluster IP")?
            .parse()
            .context("kube-dns's cluster IP")?;
        Ok(SocketAddr::new(ip, 53))
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Asks `server` for `name`'s A records, as a pod's resolver would.
pub async fn resolve(server: SocketAddr, name: &str) -> anyhow::Result<Vec<IpAddr>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

    let mut query = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(
        Name::from_ascii(name).context("a DNS name")?,
        RecordType::A,
    ));
    let socket = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await?;
    socket.connect(server).await?;
    socket.send(&query.to_bytes()?).await?;
    let mut buffer = vec![0u8; 4096];
    let received = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer))
        .await
        .with_context(|| format!("no answer from the cluster DNS at {server}"))??;
    let answer = Message::from_bytes(&buffer[..received])?;
    Ok(answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect())
}

/// A query id that differs between runs (nothing here needs it unpredictable).
fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}
