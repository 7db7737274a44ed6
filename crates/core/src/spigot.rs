//! The switch: is the spigot ON (forward) or OFF (buffer)?

use std::fmt;
use std::str::FromStr;

/// The stage variable that holds the state.
pub const STAGE_VARIABLE: &str = "spigot_state";

/// The state of the spigot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Hooks pass through to the target.
    On,
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
    #[error("spigot_state must be ON or OFF, got {0:?}")]
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
            State::Off => false,
        }
    }

    /// True when the drainer (and the relay) deliver the buffer.
    pub fn drains(self) -> bool {
        match self {
            State::On => true,
            State::Off => false,
        }
    }

    /// `ON` or `OFF`, as stored in the stage variable.
    pub fn as_str(self) -> &'static str {
        match self {
            State::On => "ON",
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
    }

    #[test]
    fn round_trips_through_its_string() {
        for s in [State::On, State::Off] {
            assert_eq!(s.as_str().parse::<State>(), Ok(s));
        }
    }
}
