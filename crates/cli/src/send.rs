//! `spigot sign` and `spigot send`: replay payloads as GitHub sends them.

use std::path::PathBuf;

use anyhow::Context;
use spigot_core::signature::sign_sha256;

use crate::CliError;

#[derive(clap::Args)]
pub struct SignArgs {
    /// The webhook secret.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// The payload file (its exact bytes are signed).
    file: PathBuf,
}

#[derive(clap::Args)]
pub struct SendArgs {
    /// The payload file (sent byte for byte).
    file: PathBuf,
    /// Where to POST it.
    #[arg(long, default_value = "http://127.0.0.1:3000/webhook")]
    url: String,
    /// The webhook secret.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// X-GitHub-Event.
    #[arg(long, default_value = "push")]
    event: String,
    /// X-GitHub-Delivery [default: a new random id].
    #[arg(long)]
    delivery: Option<String>,
    /// Send as application/x-www-form-urlencoded (payload=...).
    #[arg(long)]
    form: bool,
}

fn read(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(file).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))
}

pub fn sign(args: SignArgs) -> Result<(), CliError> {
    println!(
        "{}",
        sign_sha256(args.secret.as_bytes(), &read(&args.file)?)
    );
    Ok(())
}

/// A fresh delivery id shaped like GitHub's (a UUID).
pub fn new_delivery_id() -> String {
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

pub async fn send(args: SendArgs) -> Result<(), CliError> {
    let json = read(&args.file)?;
    let (body, content_type) = if args.form {
        let text = String::from_utf8(json)
            .map_err(|_| CliError::Usage("a form payload must be UTF-8 JSON".into()))?;
        let encoded: String = url_encode(&text);
        (
            format!("payload={encoded}").into_bytes(),
            "application/x-www-form-urlencoded",
        )
    } else {
        (json, "application/json")
    };
    let delivery = args.delivery.unwrap_or_else(new_delivery_id);
    let client = spigot_aws::tls::http_client()
        .build()
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot build the HTTP client: {e}")))?;
    let resp = client
        .post(&args.url)
        .header("Content-Type", content_type)
        .header("User-Agent", "GitHub-Hookshot/spigot-send")
        .header("X-GitHub-Event", &args.event)
        .header("X-GitHub-Delivery", &delivery)
        .header(
            "X-Hub-Signature-256",
            sign_sha256(args.secret.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot POST to {}", args.url))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    println!("{} {} {}", status.as_u16(), delivery, text.trim());
    if status.is_success() {
        Ok(())
    } else {
        Err(CliError::Failed(anyhow::anyhow!(
            "{} answered {status}",
            args.url
        )))
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
