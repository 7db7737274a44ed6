//! The switch: the API Gateway stage variable `spigot_state`, on a REST API
//! stage (`apigateway`: GetStage, UpdateStage with a patch operation) or an
//! HTTP API stage (`apigatewayv2`: GetStage, UpdateStage with the stage's
//! variables).

use std::collections::HashMap;
use std::sync::OnceLock;

use aws_config::SdkConfig;
use aws_sdk_apigateway::types::{Op, PatchOperation};
use spigot_core::config::{ConfigError, Settings};
use spigot_core::ports::{ApiKind, PortError, StageRef, Stages, Switch, SwitchError};
use spigot_core::spigot::{STAGE_VARIABLE, State};

use crate::error::port;

/// The control planes of both kinds of API, each client made when first used.
#[derive(Debug, Clone)]
struct Planes {
    sdk: SdkConfig,
    rest: OnceLock<aws_sdk_apigateway::Client>,
    http: OnceLock<aws_sdk_apigatewayv2::Client>,
}

impl Planes {
    fn new(sdk: &SdkConfig) -> Self {
        Self {
            sdk: sdk.clone(),
            rest: OnceLock::new(),
            http: OnceLock::new(),
        }
    }

    fn rest(&self) -> &aws_sdk_apigateway::Client {
        self.rest
            .get_or_init(|| aws_sdk_apigateway::Client::new(&self.sdk))
    }

    fn http(&self) -> &aws_sdk_apigatewayv2::Client {
        self.http
            .get_or_init(|| aws_sdk_apigatewayv2::Client::new(&self.sdk))
    }

    async fn variables(&self, stage: &StageRef) -> Result<HashMap<String, String>, PortError> {
        let what = || format!("API Gateway GetStage {}/{}", stage.api_id, stage.stage);
        match stage.kind {
            ApiKind::Rest => Ok(self
                .rest()
                .get_stage()
                .rest_api_id(&stage.api_id)
                .stage_name(&stage.stage)
                .send()
                .await
                .map_err(|e| port(&what(), e))?
                .variables
                .unwrap_or_default()),
            ApiKind::Http => Ok(self
                .http()
                .get_stage()
                .api_id(&stage.api_id)
                .stage_name(&stage.stage)
                .send()
                .await
                .map_err(|e| port(&what(), e))?
                .stage_variables
                .unwrap_or_default()),
        }
    }

    async fn set(&self, stage: &StageRef, state: State) -> Result<(), PortError> {
        let what = || format!("API Gateway UpdateStage {}/{}", stage.api_id, stage.stage);
        match stage.kind {
            ApiKind::Rest => {
                self.rest()
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
                    .map_err(|e| port(&what(), e))?;
            }
            ApiKind::Http => {
                // UpdateStage takes the stage's variables as a whole: the others are kept.
                let mut variables = self.variables(stage).await?;
                variables.insert(STAGE_VARIABLE.to_string(), state.as_str().to_string());
                self.http()
                    .update_stage()
                    .api_id(&stage.api_id)
                    .stage_name(&stage.stage)
                    .set_stage_variables(Some(variables))
                    .send()
                    .await
                    .map_err(|e| port(&what(), e))?;
            }
        }
        Ok(())
    }
}

/// `spigot_state` on one stage of one API.
#[derive(Debug, Clone)]
pub struct StageSwitch {
    planes: Planes,
    stage: StageRef,
}

impl StageSwitch {
    /// The switch on `stage`.
    pub fn new(sdk: &SdkConfig, stage: StageRef) -> Self {
        Self {
            planes: Planes::new(sdk),
            stage,
        }
    }

    /// The switch on `API_ID` / `STAGE_NAME` / `API_TYPE`.
    pub fn from_settings(sdk: &SdkConfig, settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::new(sdk, settings.stage()?))
    }

    /// The stage it switches.
    pub fn stage(&self) -> &StageRef {
        &self.stage
    }

    /// Every stage variable (the dev server hands them to the receiver).
    pub async fn variables(&self) -> Result<HashMap<String, String>, PortError> {
        self.planes.variables(&self.stage).await
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
        self.planes.set(&self.stage, state).await
    }
}

/// `spigot_state` on any stage of the account's APIs (the receiver learns the stage from each request).
#[derive(Debug, Clone)]
pub struct ApiStages {
    planes: Planes,
}

impl ApiStages {
    /// Stages reached with `sdk`.
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            planes: Planes::new(sdk),
        }
    }
}

impl Stages for ApiStages {
    async fn read(&self, stage: &StageRef) -> Result<State, SwitchError> {
        let vars = self.planes.variables(stage).await?;
        Ok(State::from_stage_variable(
            vars.get(STAGE_VARIABLE).map(String::as_str),
        )?)
    }

    async fn set(&self, stage: &StageRef, state: State) -> Result<(), PortError> {
        self.planes.set(stage, state).await
    }
}
