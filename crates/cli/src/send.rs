//! `spigot sign` and `spigot send`: replay payloads as GitHub sends them.

use std::path::PathBuf;

use anyhow::Context;
use spigot_core::signature::sign_sha256;

use crate::CliError;

#[derive(clap::Args)]
pub(crate) struct SignArgs {
    /// The webhook secret.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// The payload file (its exact bytes are signed).
    file: PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct SendArgs {
    /// A GitHub payload (sent byte for byte, signed), or an API Gateway event
    /// from events/ (its body and headers sent as they are: a bad signature stays bad).
    file: PathBuf,
    /// Where to POST it [default: the local stack's receiver, from
    /// .spigot/dev.json, else http://127.0.0.1:3000/webhook].
    #[arg(long)]
    url: Option<String>,
    /// The webhook secret (for a payload).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// X-GitHub-Event [default: read from the payload: push, ping or pull_request].
    #[arg(long)]
    event: Option<String>,
    /// X-GitHub-Delivery [default: a new random id].
    #[arg(long)]
    delivery: Option<String>,
    /// Send as application/x-www-form-urlencoded (payload=...).
    #[arg(long)]
    form: bool,
    /// One JSON object: status, delivery, the receiver's answer.
    #[arg(long)]
    json: bool,
}

/// `--url`, else where the local stack in this directory takes webhooks.
fn url(args: &SendArgs) -> String {
    args.url.clone().unwrap_or_else(|| {
        crate::resources::read_dev_file(std::path::Path::new(crate::resources::DEV_FILE))
            .ok()
            .and_then(|s| s.webhook_url)
            .unwrap_or_else(|| "http://127.0.0.1:3000/webhook".into())
    })
}

fn read(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(file).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))
}

pub(crate) fn sign(args: SignArgs) -> Result<(), CliError> {
    println!(
        "{}",
        sign_sha256(args.secret.as_bytes(), &read(&args.file)?)
    );
    Ok(())
}

/// A fresh delivery id shaped like GitHub's (a UUID).
pub(crate) fn new_delivery_id() -> String {
    let seed = format!(
        "{:?}{}{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    let h = spigot_core::envelope::sha256_hex(seed.as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The event a GitHub payload is, when its shape says so unambiguously.
fn infer_event(payload: &serde_json::Value) -> Option<&'static str> {
    let has = |k: &str| payload.get(k).is_some();
    if has("zen") && has("hook_id") {
        Some("ping")
    } else if has("ref") && has("before") && has("after") && has("commits") {
        Some("push")
    } else if has("pull_request") && has("number") && has("action") {
        Some("pull_request")
    } else {
        None
    }
}

/// A request to send: headers and body.
type Request = (Vec<(String, String)>, Vec<u8>);

/// An API Gateway proxy event file: its headers and (decoded) body.
fn as_api_event(value: &serde_json::Value) -> Option<Result<Request, String>> {
    if value.get("requestContext").is_none() || value.get("headers").is_none() {
        return None;
    }
    let headers: Vec<(String, String)> = value["headers"]
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    // Decoded as the receiver decodes it.
    let body = spigot_core::webhook::decode_body(
        value["body"].as_str(),
        value["isBase64Encoded"].as_bool().unwrap_or(false),
    )
    .map_err(|e| e.to_string());
    Some(body.map(|b| (headers, b)))
}

/// The body as GitHub sends it: JSON, or a form's `payload=` (`--form`).
fn encoded(json: Vec<u8>, form: bool) -> Result<(Vec<u8>, &'static str), CliError> {
    if !form {
        return Ok((json, "application/json"));
    }
    let text = String::from_utf8(json)
        .map_err(|_| CliError::Usage("a form payload must be UTF-8 JSON".into()))?;
    Ok((
        format!("payload={}", url_encode(&text)).into_bytes(),
        "application/x-www-form-urlencoded",
    ))
}

pub(crate) async fn send(args: SendArgs) -> Result<(), CliError> {
    let json = read(&args.file)?;
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&json).ok();
    if let Some(event) = parsed.as_ref().and_then(as_api_event) {
        let (headers, body) = event.map_err(|e| {
            CliError::Usage(format!(
                "{} is an API Gateway event, but {e}",
                args.file.display()
            ))
        })?;
        if args.form || args.event.is_some() || args.delivery.is_some() {
            return Err(CliError::Usage(format!(
                "{} is an API Gateway event: its headers and body are sent as they are (--event, --delivery and --form are for payloads)",
                args.file.display()
            )));
        }
        return post(&url(&args), headers, body, args.json).await;
    }
    let event = match (&args.event, &parsed) {
        (Some(e), _) => e.clone(),
        (None, Some(p)) => infer_event(p).map(String::from).ok_or_else(|| {
            CliError::Usage(format!(
                "cannot tell which event {} is; pass --event (push, pull_request, ...)",
                args.file.display()
            ))
        })?,
        (None, None) => {
            return Err(CliError::Usage(format!(
                "{} is not JSON; pass --event to send it anyway",
                args.file.display()
            )));
        }
    };
    let secret = args.secret.clone().ok_or_else(|| {
        CliError::Usage("a payload is signed: pass --secret or set WEBHOOK_SECRET (spigot dev's is spigot-local-test-secret)".into())
    })?;
    let (body, content_type) = encoded(json, args.form)?;
    let delivery = args.delivery.clone().unwrap_or_else(new_delivery_id);
    let signature = sign_sha256(secret.as_bytes(), &body);
    let headers = [
        ("Content-Type", content_type),
        ("User-Agent", "GitHub-Hookshot/spigot-send"),
        ("X-GitHub-Event", event.as_str()),
        ("X-GitHub-Delivery", delivery.as_str()),
        ("X-Hub-Signature-256", signature.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    post(&url(&args), headers, body, args.json).await
}

/// POSTs and prints the answer: status, delivery id, body.
async fn post(
    url: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    json: bool,
) -> Result<(), CliError> {
    let client = spigot_aws::tls::http_client()
        .build()
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot build the HTTP client: {e}")))?;
    let delivery = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-github-delivery"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut request = client.post(url).body(body);
    for (k, v) in &headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let resp = request
        .send()
        .await
        .with_context(|| format!("cannot POST to {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if json {
        let answer: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
        println!(
            "{}",
            serde_json::json!({"status": status.as_u16(), "delivery": delivery, "answer": answer})
        );
    } else {
        println!("{} {} {}", status.as_u16(), delivery, text.trim());
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(CliError::Failed(anyhow::anyhow!("{url} answered {status}")))
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
