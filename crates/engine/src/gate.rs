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
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Off => f.write_str("spigot is OFF"),
            Skipped::SwitchUnreachable(e) => write!(f, "cannot read the spigot state: {e}"),
            Skipped::StateInvalid(e) => f.write_str(e),
            Skipped::TargetDown => f.write_str("target is down (health probe failed)"),
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
