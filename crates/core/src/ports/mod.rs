//! Ports: the capabilities the handlers need, one trait a file, implemented by
//! `spigot-aws` for AWS and by [`memory`] (feature `memory`) for unit tests.

mod archive;
mod bucket;
mod buffer;
mod clock;
mod error;
mod eval;
mod filters;
mod github;
mod metrics;
mod pipelines;
mod stacks;
mod switch;
mod target;
mod triggers;

#[cfg(any(test, feature = "memory"))]
pub mod memory;

pub use archive::{Archive, Timeline};
pub use bucket::Bucket;
pub use buffer::{Buffer, DeadLetter, Received};
pub use clock::{Clock, SystemClock};
pub use error::{PortError, PortErrorKind};
pub use eval::{EvalLetters, EvalQueue, NoLetters};
pub use filters::{FilterStore, StoredFilter};
pub use github::GitHub;
pub use metrics::{MetricsSink, QuietMetrics, StdoutMetrics};
pub use pipelines::{Pipelines, Start, StartError};
pub use stacks::{NoStacks, StackResource, Stacks};
pub use switch::{ApiKind, StageRef, Stages, Switch, SwitchError};
pub use target::Target;
pub use triggers::{NoTriggers, Read, Triggers, Write};
