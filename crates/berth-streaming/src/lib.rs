//! The wire protocols `kubectl exec`, `attach` and `port-forward` speak, as pure codecs.
//!
//! Nothing here does I/O or decides policy (timeouts, which process to run, which port to dial):
//! the node agent and the API server own that and feed these codecs bytes.
//!
//! - [`channel`]: the Kubernetes channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`) that
//!   exec and attach use over WebSocket binary messages, the exit-code `Status` kubectl expects,
//!   subprotocol negotiation, and the port prefix of kube-rs's WebSocket port-forward.
//! - [`spdy`]: a SPDY/3.1 framing codec with the zlib header compression, enough for
//!   `kubectl port-forward`, which tunnels SPDY through WebSocket messages.
//! - [`portforward`]: the server side of SPDY port-forward as a state machine: pairs the error and
//!   data streams of each forwarded connection and turns frames into events.

pub mod channel;
pub mod portforward;
pub mod spdy;
