//! spigot-engine: delivering the buffer, shared by the drainer Lambda,
//! `spigot relay` and `spigot dev`. No Lambda runtime, no SDK: it drives
//! core's ports.
//!
//! * [`run`] — the run loop: receive, deliver in order per group and
//!   concurrently across groups, delete, release.
//! * [`policy`] — what happens after a failure: backoff, circuit breaker, attempt cap.
//! * [`attempts`] — the engine's own count of delivery attempts per message.
//! * [`gate`] — whether a run may start: spigot state and target probe.
//!
//! The claim-check protocol (stow, open, dead letters) is
//! `spigot_core::claim`, shared with the receiver and the evaluator.

pub mod attempts;
pub mod config;
pub mod gate;
pub mod lease;
pub mod policy;
pub mod run;

pub use config::EngineConfig;
pub use gate::{SWITCH_CHECK_EVERY, Skipped, gate, watched};
pub use run::{Counters, Engine, Stop, Summary};
