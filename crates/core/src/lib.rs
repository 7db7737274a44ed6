//! spigot-core: the domain of Spigot, free of I/O.
//!
//! One module a concept, each with its own error type. The ports (traits the
//! adapters in `spigot-aws` implement) live in [`ports`].

pub mod archive;
pub mod cfn;
pub mod claim;
pub mod coalesce;
pub mod config;
pub mod delivery;
pub mod duration;
pub mod edge;
pub mod envelope;
pub mod filter;
pub mod layout;
pub mod metrics;
pub mod ports;
pub mod push;
pub mod reconcile;
pub mod resources;
pub mod signature;
pub mod spigot;
pub mod text;
pub mod time;
pub mod trigger;
pub mod webhook;

pub use delivery::{Delivery, Failure};
pub use envelope::{Body, Envelope};
pub use signature::{Keyring, Secrets, Verifier};
pub use spigot::State;
pub use webhook::Hook;
