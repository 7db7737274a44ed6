//! One way in: a request as the receiver sees it, whatever carried it (an API
//! Gateway REST event, `spigot dev`'s HTTP server), and the answer built back
//! for that origin.

use std::collections::HashMap;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body as ResponseBody;
use aws_lambda_events::http::HeaderValue;
use spigot_core::ports::StageRef;
use spigot_core::webhook;

/// A webhook request: raw body bytes, headers, and the stage variables of the stage it came through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Headers (names as sent; look-ups are case-insensitive).
    pub headers: Vec<(String, String)>,
    /// The body, decoded from the event's base64 when it was.
    pub body: Vec<u8>,
    /// The stage variables (`spigot_state`).
    pub stage_variables: HashMap<String, String>,
    /// The API stage the request came through (the receiver sets DRAINING there).
    pub stage: Option<StageRef>,
}

impl Inbound {
    /// The request of an API Gateway REST (payload 1.0) proxy event; a body that
    /// does not decode is an error for a 400.
    pub fn from_rest(req: &ApiGatewayProxyRequest) -> Result<Self, webhook::WebhookError> {
        Ok(Self {
            headers: req
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: webhook::decode_body(req.body.as_deref(), req.is_base64_encoded)?,
            stage_variables: req.stage_variables.clone(),
            stage: match (&req.request_context.apiid, &req.request_context.stage) {
                (Some(api_id), Some(stage)) => Some(StageRef {
                    api_id: api_id.clone(),
                    stage: stage.clone(),
                }),
                _ => None,
            },
        })
    }

    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The receiver's answer: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
}

impl Answer {
    /// The answer as an API Gateway REST proxy response.
    pub fn to_rest(&self) -> ApiGatewayProxyResponse {
        let mut resp = ApiGatewayProxyResponse::default();
        resp.status_code = i64::from(self.status);
        resp.headers
            .insert("content-type", HeaderValue::from_static("application/json"));
        resp.body = Some(ResponseBody::Text(self.body.to_string()));
        resp
    }
}
