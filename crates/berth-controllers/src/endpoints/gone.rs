//! Which Services have gone, from the Service watch: the Endpoints controller deletes their
//! Endpoints objects (nothing owns those, so the garbage collector does not).
//!
//! A Delete event says so directly. A Service deleted while the watch was down sends no
//! event: the watch lists afresh instead, and a Service known before that list and missing
//! from it has gone too (what client-go's informer reports as a "final state unknown"
//! deletion).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher;

use crate::runtime::ObjectKey;

/// The Services the watch has shown, to tell which ones a fresh list no longer has.
#[derive(Default)]
pub struct Gone {
    known: HashSet<ObjectKey>,
    /// The Services of a list in progress (between `Init` and `InitDone`).
    relisting: Option<HashSet<ObjectKey>>,
}

impl Gone {
    /// The Services one watch event shows to be gone.
    pub fn observe(&mut self, event: &watcher::Event<Service>) -> Vec<ObjectKey> {
        match event {
            watcher::Event::Apply(service) => {
                self.known.insert(key(service));
                Vec::new()
            }
            watcher::Event::Delete(service) => {
                let key = key(service);
                self.known.remove(&key);
                vec![key]
            }
            watcher::Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(service) => {
                self.relisting
                    .get_or_insert_with(HashSet::new)
                    .insert(key(service));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let mut gone: Vec<ObjectKey> = self.known.difference(&listed).cloned().collect();
                gone.sort();
                self.known = listed;
                gone
            }
        }
    }
}

fn key(service: &Service) -> ObjectKey {
    (
        service.metadata.namespace.clone(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::testing::service;

    fn names(keys: Vec<ObjectKey>) -> Vec<String> {
        keys.into_iter().map(|k| k.1).collect()
    }

    #[test]
    fn deletions_and_services_missing_from_a_relist_are_gone() {
        let mut gone = Gone::default();
        let (a, b, c) = (service("a", &[]), service("b", &[]), service("c", &[]));
        assert!(gone.observe(&watcher::Event::Init).is_empty());
        gone.observe(&watcher::Event::InitApply(a.clone()));
        gone.observe(&watcher::Event::InitApply(b.clone()));
        assert!(gone.observe(&watcher::Event::InitDone).is_empty());
        gone.observe(&watcher::Event::Apply(c.clone()));
        assert_eq!(
            names(gone.observe(&watcher::Event::Delete(a.clone()))),
            ["a"]
        );

        // The watch broke; b went meanwhile.
        gone.observe(&watcher::Event::Init);
        gone.observe(&watcher::Event::InitApply(c.clone()));
        assert_eq!(names(gone.observe(&watcher::Event::InitDone)), ["b"]);
        assert!(gone.observe(&watcher::Event::Init).is_empty());
        assert_eq!(names(gone.observe(&watcher::Event::InitDone)), ["c"]);
    }
}
