//! May a run start? The spigot must let the buffer drain and the target must answer.

use std::fmt;

use serde::{Serialize, Serializer};
use spigot_core::ports::{Switch, SwitchError, Target};
use spigot_core::spigot::State;

/// Why a run did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// The spigot holds the buffer (OFF).
    Off,
    /// The control plane could not be read.
    SwitchUnreachable(String),
    /// `spigot_state` is unset or holds something else.
    StateInvalid(String),
    /// The target's health probe failed.
    TargetDown,
    /// Resuming (DRAINING), the target's health probe did not pass for this
    /// many seconds in a row (`RESUME_HEALTHY_SECONDS`).
    TargetUnsteady(u64),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Off => f.write_str("spigot is OFF"),
            Skipped::SwitchUnreachable(e) => write!(f, "cannot read the spigot state: {e}"),
            Skipped::StateInvalid(e) => f.write_str(e),
            Skipped::TargetDown => f.write_str("target is down (health probe failed)"),
            Skipped::TargetUnsteady(s) => write!(
                f,
                "target is not steady yet: its health probe must pass {s} s in a row before a drain resumes"
            ),
        }
    }
}

impl Serialize for Skipped {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Opens the gate when the spigot drains (ON or DRAINING) and the target
/// answers its probe; returns the state it found. Nothing is received from the
/// buffer otherwise, so no receive count is burnt.
pub async fn gate(switch: &impl Switch, target: &impl Target) -> Result<State, Skipped> {
    let state = match switch.read().await {
        Ok(state) if state.drains() => state,
        Ok(_) => return Err(Skipped::Off),
        Err(SwitchError::Port(e)) => return Err(Skipped::SwitchUnreachable(e.to_string())),
        Err(SwitchError::State(e)) => return Err(Skipped::StateInvalid(e.to_string())),
    };
    if !target.probe().await {
        return Err(Skipped::TargetDown);
    }
    Ok(state)
}

/// How often a run re-reads the spigot: once it reads OFF it starts no more
/// deliveries (the hooks in hand are released) — an operator's OFF wins.
pub const SWITCH_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `work` while reading `switch` every `every`; once the spigot no longer
/// drains (OFF) or `stop` is raised, raises `cancel`, which a run checks before
/// each delivery. An unreadable switch is not a reason to stop (logged).
pub async fn watched<T>(
    switch: &impl Switch,
    every: std::time::Duration,
    cancel: &std::sync::atomic::AtomicBool,
    stop: Option<&std::sync::atomic::AtomicBool>,
    work: impl std::future::Future<Output = T>,
) -> T {
    use std::sync::atomic::Ordering;
    let work = std::pin::pin!(work);
    let mut work = work;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tokio::time::sleep(every) => {}
        }
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            cancel.store(true, Ordering::SeqCst);
            continue;
        }
        if cancel.load(Ordering::SeqCst) {
            continue;
        }
        match switch.read().await {
            Ok(state) if !state.drains() => {
                tracing::warn!(%state, "the spigot no longer drains: starting no more deliveries, releasing the rest");
                cancel.store(true, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the spigot state during the run; going on")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use spigot_core::ports::memory::{MemorySwitch, MemoryTarget};

    use super::*;

    #[tokio::test]
    async fn opens_only_when_the_spigot_drains() {
        let target = MemoryTarget::default();
        assert_eq!(
            gate(&MemorySwitch::new(State::On), &target).await,
            Ok(State::On)
        );
        assert_eq!(
            gate(&MemorySwitch::new(State::Draining), &target).await,
            Ok(State::Draining)
        );
        assert_eq!(
            gate(&MemorySwitch::new(State::Off), &target).await,
            Err(Skipped::Off)
        );
        let junk = MemorySwitch(std::sync::Mutex::new("maybe".parse::<State>()));
        assert!(matches!(
            gate(&junk, &target).await,
            Err(Skipped::StateInvalid(e)) if e.contains("maybe")
        ));
        assert_eq!(Skipped::Off.to_string(), "spigot is OFF");
    }
}
