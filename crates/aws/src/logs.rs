//! Logs of a Lambda function as CloudWatch reads them: never ANSI colour codes
//! (CloudWatch shows them as garbage and Logs Insights cannot parse them);
//! JSON lines, each field (the delivery id among them) a key, when the
//! function's log format is JSON (`AWS_LAMBDA_LOG_FORMAT=JSON`, which the
//! template sets); the level from `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`,
//! else INFO.

use tracing_subscriber::EnvFilter;

/// The level filter of `AWS_LAMBDA_LOG_LEVEL` (Lambda's names; FATAL is ERROR), else `RUST_LOG`, else `info`.
pub fn lambda_filter(lookup: impl Fn(&str) -> Option<String>) -> EnvFilter {
    let level =
        lookup("AWS_LAMBDA_LOG_LEVEL").map(|l| match l.trim().to_ascii_lowercase().as_str() {
            "fatal" => "error".to_string(),
            other => other.to_string(),
        });
    let directive = level
        .or_else(|| lookup("RUST_LOG"))
        .unwrap_or_else(|| "info".to_string());
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Sets up the function's logs (once, at the start of `main`).
pub fn init_lambda() {
    let lookup = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let json = lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_env_filter(lambda_filter(lookup))
        .with_writer(std::io::stdout);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}
