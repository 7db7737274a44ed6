//! The switch: the API Gateway stage variable `spigot_state`.

use aws_sdk_apigateway::Client;
use aws_sdk_apigateway::types::{Op, PatchOperation};
use spigot_core::config::{ConfigError, Settings};
use spigot_core::ports::{PortError, StageRef, Stages, Switch, SwitchError};
use spigot_core::resources::Resource;
use spigot_core::spigot::{STAGE_VARIABLE, State};

use crate::error::port;

/// `spigot_state` on one stage of one REST API.
#[derive(Debug, Clone)]
pub struct StageSwitch {
    client: Client,
    api_id: String,
    stage: String,
}

impl StageSwitch {
    /// The switch on `stage` of REST API `api_id`.
    pub fn new(client: Client, api_id: impl Into<String>, stage: impl Into<String>) -> Self {
        Self {
            client,
            api_id: api_id.into(),
            stage: stage.into(),
        }
    }

    /// The switch on `API_ID` / `STAGE_NAME`.
    pub fn from_settings(
        sdk: &aws_config::SdkConfig,
        settings: &Settings,
    ) -> Result<Self, ConfigError> {
        Ok(Self::new(
            Client::new(sdk),
            settings.require(Resource::ApiId)?,
            settings.require(Resource::Stage)?,
        ))
    }

    /// Every stage variable (the dev server hands them to the receiver).
    pub async fn variables(&self) -> Result<std::collections::HashMap<String, String>, PortError> {
        let out = self
            .client
            .get_stage()
            .rest_api_id(&self.api_id)
            .stage_name(&self.stage)
            .send()
            .await
            .map_err(|e| {
                port(
                    &format!("API Gateway GetStage {}/{}", self.api_id, self.stage),
                    e,
                )
            })?;
        Ok(out.variables.unwrap_or_default())
    }
}

impl Switch for StageSwitch {
    async fn read(&self) -> Result<State, SwitchError> {
        let vars = self.variables().await?;
        Ok(State::from_stage_variable(
            vars.get(STAGE_VARIABLE).map(String::as_str),
        )?)
    }

    async fn set(&self, state: State) -> Result<(), PortError> {
        let stage = StageRef {
            api_id: self.api_id.clone(),
            stage: self.stage.clone(),
        };
        ApiStages::new(self.client.clone()).set(&stage, state).await
    }
}

/// `spigot_state` on any stage of the account's REST APIs.
#[derive(Debug, Clone)]
pub struct ApiStages {
    client: Client,
}

impl ApiStages {
    /// Stages through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Stages for ApiStages {
    async fn set(&self, stage: &StageRef, state: State) -> Result<(), PortError> {
        self.client
            .update_stage()
            .rest_api_id(&stage.api_id)
            .stage_name(&stage.stage)
            .patch_operations(
                PatchOperation::builder()
                    .op(Op::Replace)
                    .path(format!("/variables/{STAGE_VARIABLE}"))
                    .value(state.as_str())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                port(
                    &format!("API Gateway UpdateStage {}/{}", stage.api_id, stage.stage),
                    e,
                )
            })?;
        Ok(())
    }
}
