//! One way in: a request as the receiver sees it, whatever carried it (an API
//! Gateway REST event — payload 1.0 —, an HTTP API event — payload 2.0 —, or
//! `spigot dev`'s HTTP server), and the answer built back for that origin.
//! After [`Inbound`] there is one code path.

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayV2httpRequest,
    ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body as ResponseBody;
use aws_lambda_events::http::HeaderValue;
use spigot_core::ports::{ApiKind, StageRef};
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
        let context = &req.request_context;
        Self::from_parts(
            &req.headers,
            (req.body.as_deref(), req.is_base64_encoded),
            &req.stage_variables,
            (&context.apiid, &context.stage, ApiKind::Rest),
        )
    }

    /// The request of an API Gateway HTTP API (payload 2.0) event.
    pub fn from_http(req: &ApiGatewayV2httpRequest) -> Result<Self, webhook::WebhookError> {
        let context = &req.request_context;
        Self::from_parts(
            &req.headers,
            (req.body.as_deref(), req.is_base64_encoded),
            &req.stage_variables,
            (&context.apiid, &context.stage, ApiKind::Http),
        )
    }

    /// What both event shapes carry: headers, the body (base64 or not), stage variables, the stage.
    fn from_parts(
        headers: &aws_lambda_events::http::HeaderMap,
        (body, base64): (Option<&str>, bool),
        stage_variables: &HashMap<String, String>,
        (api_id, stage, kind): (&Option<String>, &Option<String>, ApiKind),
    ) -> Result<Self, webhook::WebhookError> {
        Ok(Self {
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: webhook::decode_body(body, base64)?,
            stage_variables: stage_variables.clone(),
            stage: match (api_id, stage) {
                (Some(api_id), Some(stage)) => Some(StageRef {
                    api_id: api_id.clone(),
                    stage: stage.clone(),
                    kind,
                }),
                _ => None,
            },
        })
    }

    /// The request of either event shape.
    pub fn from_event(event: &ApiEvent) -> Result<Self, webhook::WebhookError> {
        match event {
            ApiEvent::Rest(req) => Self::from_rest(req),
            ApiEvent::Http(req) => Self::from_http(req),
        }
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
    /// The answer in the shape `event` expects.
    pub fn to_event_response(&self, event: &ApiEvent) -> ApiResponse {
        match event {
            ApiEvent::Rest(_) => ApiResponse::Rest(self.to_rest()),
            ApiEvent::Http(_) => ApiResponse::Http(self.to_http()),
        }
    }

    /// The answer as an API Gateway HTTP API (payload 2.0) response.
    pub fn to_http(&self) -> ApiGatewayV2httpResponse {
        let mut resp = ApiGatewayV2httpResponse::default();
        resp.status_code = i64::from(self.status);
        resp.headers
            .insert("content-type", HeaderValue::from_static("application/json"));
        resp.body = Some(ResponseBody::Text(self.body.to_string()));
        resp
    }

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

/// An API Gateway proxy event of either payload version: 2.0 (HTTP API) when
/// it says `"version": "2.0"`, else 1.0 (REST API).
#[derive(Debug, Clone)]
pub enum ApiEvent {
    /// Payload 1.0.
    Rest(Box<ApiGatewayProxyRequest>),
    /// Payload 2.0.
    Http(Box<ApiGatewayV2httpRequest>),
}

impl<'de> serde::Deserialize<'de> for ApiEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let v2 = value.get("version").and_then(|v| v.as_str()) == Some("2.0");
        let event = if v2 {
            ApiEvent::Http(Box::new(
                serde_json::from_value(value).map_err(serde::de::Error::custom)?,
            ))
        } else {
            ApiEvent::Rest(Box::new(
                serde_json::from_value(value).map_err(serde::de::Error::custom)?,
            ))
        };
        Ok(event)
    }
}

/// The response in the shape of the event answered.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum ApiResponse {
    /// Payload 1.0.
    Rest(ApiGatewayProxyResponse),
    /// Payload 2.0.
    Http(ApiGatewayV2httpResponse),
}

impl ApiResponse {
    /// The status code.
    pub fn status(&self) -> i64 {
        match self {
            ApiResponse::Rest(r) => r.status_code,
            ApiResponse::Http(r) => r.status_code,
        }
    }

    /// The body text.
    pub fn body(&self) -> Option<&str> {
        let body = match self {
            ApiResponse::Rest(r) => r.body.as_ref(),
            ApiResponse::Http(r) => r.body.as_ref(),
        };
        match body {
            Some(ResponseBody::Text(t)) => Some(t),
            _ => None,
        }
    }
}
