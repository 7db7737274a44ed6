use std::future::Future;

use super::PortError;
use crate::spigot::{State, StateError};

/// Why the switch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    /// The control plane could not be reached.
    #[error(transparent)]
    Port(#[from] PortError),
    /// `spigot_state` is unset or holds something else.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The spigot's switch (the stage variable `spigot_state`).
pub trait Switch: Send + Sync {
    /// The state the switch is in.
    fn read(&self) -> impl Future<Output = Result<State, SwitchError>> + Send;
    /// Sets the state.
    fn set(&self, state: State) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Sets `to` only while the switch is still `from` (read, check, write), so
    /// an automatic flip never overwrites another state — an operator's OFF
    /// above all. `Ok(None)`: set; `Ok(Some(found))`: left as found. API
    /// Gateway has no compare-and-swap: the read and the write are one call
    /// apart (`spigot off` re-asserts OFF after that window).
    fn transition(
        &self,
        from: State,
        to: State,
    ) -> impl Future<Output = Result<Option<State>, SwitchError>> + Send {
        async move {
            let found = self.read().await?;
            if found != from {
                return Ok(Some(found));
            }
            self.set(to).await?;
            Ok(None)
        }
    }
}

/// The kind of API Gateway API in front of the receiver (`ApiType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiKind {
    /// A REST API (`apigateway`): payload 1.0 events.
    #[default]
    Rest,
    /// An HTTP API (`apigatewayv2`): payload 2.0 events.
    Http,
}

impl ApiKind {
    /// Reads `REST` or `HTTP` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "REST" => Some(ApiKind::Rest),
            "HTTP" => Some(ApiKind::Http),
            _ => None,
        }
    }

    /// `REST` or `HTTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::Rest => "REST",
            ApiKind::Http => "HTTP",
        }
    }
}

/// A stage of an API whose `spigot_state` governs the hooks that come through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRef {
    /// The API id.
    pub api_id: String,
    /// The stage name.
    pub stage: String,
    /// REST or HTTP API.
    pub kind: ApiKind,
}

/// Sets `spigot_state` on the stage a request came through (the receiver
/// learns its stage from each request, not from its configuration).
pub trait Stages: Send + Sync {
    /// The state of `stage`.
    fn read(&self, stage: &StageRef) -> impl Future<Output = Result<State, SwitchError>> + Send;

    /// Sets `state` on `stage`.
    fn set(
        &self,
        stage: &StageRef,
        state: State,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Sets `to` on `stage` only while it is still `from` (as [`Switch::transition`]).
    fn transition(
        &self,
        stage: &StageRef,
        from: State,
        to: State,
    ) -> impl Future<Output = Result<Option<State>, SwitchError>> + Send {
        async move {
            let found = self.read(stage).await?;
            if found != from {
                return Ok(Some(found));
            }
            self.set(stage, to).await?;
            Ok(None)
        }
    }
}
