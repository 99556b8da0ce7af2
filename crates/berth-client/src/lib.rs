//! What every in-cluster client of berth (the scheduler, the node agent, the controllers,
//! the cluster DNS, the service proxy) shares: [`events`], core/v1 Events written as
//! client-go's recorder writes them; [`quantity`], resource quantities as the integers
//! schedulers and kubelets compare; [`cache`], watched caches that wake a rebuild;
//! [`node_affinity`], node selector terms against a node.

pub mod cache;
pub mod events;
pub mod node_affinity;
pub mod quantity;

pub use events::{EventError, EventQueue, Recorder, pod_reference};
