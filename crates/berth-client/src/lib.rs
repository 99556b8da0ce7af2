//! What every in-cluster client of berth (the scheduler, the node agent, the controllers)
//! shares: [`events`], core/v1 Events written as client-go's recorder writes them, and
//! [`quantity`], resource quantities as the integers schedulers and kubelets compare.

pub mod events;
pub mod quantity;

pub use events::{EventError, Recorder, pod_reference};
