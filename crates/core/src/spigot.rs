//! The switch: is the spigot ON (forward), DRAINING (buffer behind older hooks
//! while the drainer catches up) or OFF (buffer, no drain)?

use std::fmt;
use std::str::FromStr;

/// The stage variable that holds the state.
pub const STAGE_VARIABLE: &str = "spigot_state";

/// The state of the spigot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Hooks pass through to the target.
    On,
    /// The buffer still holds hooks: new ones are buffered behind them and the
    /// drainer delivers; it sets ON once a run ends with the buffer empty.
    Draining,
    /// Hooks wait in the buffer (maintenance).
    Off,
}

/// A `spigot_state` value that is neither ON nor OFF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The stage variable is absent.
    #[error("stage variable spigot_state is not set; set it to ON or OFF (spigot on|off)")]
    Missing,
    /// The stage variable holds something else.
    #[error("spigot_state must be ON, DRAINING or OFF, got {0:?}")]
    Unknown(String),
}

impl State {
    /// Parses an optional stage variable value; absence and junk are errors, never a default.
    pub fn from_stage_variable(value: Option<&str>) -> Result<Self, StateError> {
        value.ok_or(StateError::Missing)?.parse()
    }

    /// True when the receiver forwards new hooks to the target (else it buffers them).
    pub fn forwards(self) -> bool {
        match self {
            State::On => true,
            State::Draining | State::Off => false,
        }
    }

    /// True when the drainer (and the relay) deliver the buffer.
    pub fn drains(self) -> bool {
        match self {
            State::On | State::Draining => true,
            State::Off => false,
        }
    }

    /// The state to leave once the buffer is empty: DRAINING becomes ON.
    pub fn when_drained(self) -> Option<State> {
        match self {
            State::Draining => Some(State::On),
            State::On | State::Off => None,
        }
    }

    /// `ON`, `DRAINING` or `OFF`, as stored in the stage variable.
    pub fn as_str(self) -> &'static str {
        match self {
            State::On => "ON",
            State::Draining => "DRAINING",
            State::Off => "OFF",
        }
    }
}

impl FromStr for State {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "ON" => Ok(State::On),
            "OFF" => Ok(State::Off),
            "DRAINING" => Ok(State::Draining),
            _ => Err(StateError::Unknown(s.chars().take(40).collect())),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively() {
        for (s, want) in [("ON", State::On), ("on", State::On), (" Off ", State::Off)] {
            assert_eq!(s.parse::<State>(), Ok(want));
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        assert_eq!(
            "maybe".parse::<State>(),
            Err(StateError::Unknown("maybe".into()))
        );
        assert_eq!("".parse::<State>(), Err(StateError::Unknown("".into())));
        assert_eq!(State::from_stage_variable(None), Err(StateError::Missing));
        assert_eq!(State::from_stage_variable(Some("ON")), Ok(State::On));
    }

    #[test]
    fn behaviour_table() {
        assert!(State::On.forwards() && State::On.drains());
        assert!(!State::Off.forwards() && !State::Off.drains());
        assert!(!State::Draining.forwards() && State::Draining.drains());
        assert_eq!(State::Draining.when_drained(), Some(State::On));
        assert_eq!(State::On.when_drained(), None);
    }

    #[test]
    fn round_trips_through_its_string() {
        for s in [State::On, State::Draining, State::Off] {
            assert_eq!(s.as_str().parse::<State>(), Ok(s));
        }
    }
}
