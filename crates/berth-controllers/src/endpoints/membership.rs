//! Which Services a pod's change concerns, for both endpoint controllers.
//!
//! A pod belongs to every Service of its namespace whose selector matches its labels (the
//! pod has no reference to them). A pod event wakes the Services selecting it now and the
//! ones that selected it before — a pod relabelled out of a selector must leave that
//! Service's endpoints, and the watch only shows the pod as it is now. Upstream's handlers
//! get the old object with each update; here [`Memberships`] remembers, per pod, the
//! Services the last event mapped it to. After the pod watch lists afresh (a pod deleted
//! while the watch was down sends no event), every managed Service is woken.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::controller::ReconcileRequest;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::addresses;
use crate::runtime::Triggers;

/// An object's namespace and name.
type Key = (String, String);
type PodKey = Key;

/// The Services each pod was last found in.
#[derive(Default)]
pub struct Memberships {
    last: HashMap<PodKey, BTreeSet<Key>>,
    /// The pods of a list in progress (between `Init` and `InitDone`).
    relisting: Option<HashSet<PodKey>>,
}

impl Memberships {
    /// The Services to reconcile for one pod watch event, with `services` as they are now.
    pub fn observe(
        &mut self,
        event: &watcher::Event<Pod>,
        services: &[Arc<Service>],
    ) -> Vec<ObjectRef<Service>> {
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let Some(key) = key(pod) else {
                    return Vec::new();
                };
                if matches!(event, watcher::Event::InitApply(_))
                    && let Some(relisting) = self.relisting.as_mut()
                {
                    relisting.insert(key.clone());
                }
                let now = selecting(pod, services);
                let before = if now.is_empty() {
                    self.last.remove(&key)
                } else {
                    self.last.insert(key, now.clone())
                };
                refs(now.into_iter().chain(before.into_iter().flatten()))
            }
            watcher::Event::Delete(pod) => {
                let before = key(pod).and_then(|k| self.last.remove(&k));
                refs(
                    selecting(pod, services)
                        .into_iter()
                        .chain(before.into_iter().flatten()),
                )
            }
            watcher::Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.last.retain(|k, _| listed.contains(k));
                }
                services
                    .iter()
                    .filter(|s| addresses::managed_selector(s).is_some())
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect()
            }
        }
    }
}

fn key(pod: &Pod) -> Option<PodKey> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}

/// The Services selecting the pod.
fn selecting(pod: &Pod, services: &[Arc<Service>]) -> BTreeSet<Key> {
    services
        .iter()
        .filter(|s| addresses::selects(s, pod))
        .filter_map(|s| Some((s.metadata.namespace.clone()?, s.metadata.name.clone()?)))
        .collect()
}

/// References to the Services named, each once, in order.
fn refs(keys: impl Iterator<Item = Key>) -> Vec<ObjectRef<Service>> {
    keys.collect::<BTreeSet<Key>>()
        .into_iter()
        .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// Reconcile requests for the Services each pod watch event concerns (see the module docs);
/// `services` is the controller's Service cache.
pub fn pod_triggers(
    events: impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static,
    services: Store<Service>,
) -> Triggers<Service> {
    let mut memberships = Memberships::default();
    events
        .flat_map(move |event| {
            let requests: Vec<Result<ReconcileRequest<Service>, watcher::Error>> = match event {
                Err(e) => vec![Err(e)],
                Ok(event) => memberships
                    .observe(&event, &services.state())
                    .into_iter()
                    .map(|r| Ok(ReconcileRequest::from(r)))
                    .collect(),
            };
            futures::stream::iter(requests)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::testing::{labels, pod, service};

    fn names(refs: Vec<ObjectRef<Service>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_relabelled_pod_wakes_the_service_it_left() {
        let services: Vec<Arc<Service>> = vec![
            Arc::new(service("web", &[("app", "web")])),
            Arc::new(service("db", &[("app", "db")])),
        ];
        let mut memberships = Memberships::default();
        let mut p = pod("a", true);
        let woken = memberships.observe(&watcher::Event::Apply(p.clone()), &services);
        assert_eq!(names(woken), ["web"]);

        p.metadata.labels = Some(labels(&[("app", "db")]));
        let woken = memberships.observe(&watcher::Event::Apply(p.clone()), &services);
        assert_eq!(names(woken), ["db", "web"]);
        let woken = memberships.observe(&watcher::Event::Apply(p.clone()), &services);
        assert_eq!(names(woken), ["db"]);

        p.metadata.labels = None;
        let woken = memberships.observe(&watcher::Event::Apply(p.clone()), &services);
        assert_eq!(names(woken), ["db"]);
        assert!(
            memberships.last.is_empty(),
            "pods in no Service are not remembered"
        );
        let woken = memberships.observe(&watcher::Event::Delete(p), &services);
        assert!(woken.is_empty());
    }

    #[test]
    fn a_relist_forgets_vanished_pods_and_wakes_every_managed_service() {
        let mut selectorless = service("external", &[]);
        selectorless.spec.as_mut().unwrap().selector = None;
        let services: Vec<Arc<Service>> = vec![
            Arc::new(service("web", &[("app", "web")])),
            Arc::new(selectorless),
        ];
        let mut memberships = Memberships::default();
        memberships.observe(&watcher::Event::Apply(pod("a", true)), &services);
        memberships.observe(&watcher::Event::Apply(pod("b", true)), &services);
        memberships.observe(&watcher::Event::Init, &services);
        memberships.observe(&watcher::Event::InitApply(pod("b", true)), &services);
        let woken = memberships.observe(&watcher::Event::InitDone, &services);
        assert_eq!(names(woken), ["web"]);
        let remembered: Vec<&str> = memberships.last.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(remembered, ["b"]);
    }
}
