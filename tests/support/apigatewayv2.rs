//! A stand-in for the API Gateway v2 control plane where moto lacks it: moto
//! 5.2.1 has apigatewayv2 `CreateApi`, `CreateStage` and `GetStage`, not
//! `UpdateStage`. Every request is passed through to moto except
//! `PATCH /v2/apis/{apiId}/stages/{stageName}` (UpdateStage, REST-JSON:
//! a JSON body with `stageVariables`), which is answered here as AWS does
//! (200, the stage) and remembered; a later `GET` of that stage is moto's
//! answer with the remembered variables laid over it. Every UpdateStage is
//! recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Default)]
struct Shared {
    moto: String,
    /// (api id, stage) → variables set by UpdateStage.
    stages: Mutex<HashMap<(String, String), serde_json::Map<String, serde_json::Value>>>,
    updates: Mutex<Vec<(String, serde_json::Value)>>,
}

/// The stand-in.
#[derive(Debug, Clone)]
pub struct ApiGatewayV2 {
    /// `http://127.0.0.1:port`: use it as the AWS endpoint.
    pub url: String,
    shared: Arc<Shared>,
}

impl ApiGatewayV2 {
    /// In front of the moto server at `moto`.
    pub async fn start(moto: &str) -> Self {
        let shared = Arc::new(Shared {
            moto: moto.trim_end_matches('/').to_string(),
            ..Default::default()
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let url = format!("http://{}", crate::serve(app).await);
        Self { url, shared }
    }

    /// Every UpdateStage: (path, JSON body).
    pub fn updates(&self) -> Vec<(String, serde_json::Value)> {
        self.shared.updates.lock().unwrap().clone()
    }
}

/// `(api id, stage)` of `/v2/apis/{id}/stages/{stage}`.
fn stage_of(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v2/apis/")?;
    let (api, rest) = rest.split_once("/stages/")?;
    (!rest.is_empty() && !rest.contains('/')).then(|| (api.to_string(), rest.to_string()))
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let stage = stage_of(&path);
    if method == Method::PATCH
        && let Some(key) = &stage
    {
        let Ok(update) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return (
                StatusCode::BAD_REQUEST,
                [("x-amzn-errortype", "BadRequestException")],
                r#"{"message":"Invalid request body"}"#,
            )
                .into_response();
        };
        shared
            .updates
            .lock()
            .unwrap()
            .push((path.clone(), update.clone()));
        let mut stages = shared.stages.lock().unwrap();
        let vars = stages.entry(key.clone()).or_default();
        if let Some(new) = update["stageVariables"].as_object() {
            vars.extend(new.clone());
        }
        let answer = serde_json::json!({"stageName": key.1, "stageVariables": vars});
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            answer.to_string(),
        )
            .into_response();
    }
    // Everything else is moto's.
    let mut request = reqwest::Client::new().request(
        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
        format!("{}{}", shared.moto, uri),
    );
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            request = request.header(k.as_str(), v.as_bytes());
        }
    }
    let Ok(answer) = request.body(body.to_vec()).send().await else {
        return (StatusCode::BAD_GATEWAY, "moto is unreachable").into_response();
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let mut text = answer.bytes().await.unwrap_or_default().to_vec();
    if method == Method::GET
        && status.is_success()
        && let Some(key) = &stage
        && let Some(vars) = shared.stages.lock().unwrap().get(key)
        && let Ok(mut stage) = serde_json::from_slice::<serde_json::Value>(&text)
    {
        let merged = stage["stageVariables"].as_object_mut();
        match merged {
            Some(m) => m.extend(vars.clone()),
            None => stage["stageVariables"] = serde_json::Value::Object(vars.clone()),
        }
        text = stage.to_string().into_bytes();
    }
    (status, [("content-type", content_type)], text).into_response()
}
