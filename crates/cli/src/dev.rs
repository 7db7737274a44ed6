//! `spigot dev`: the whole system on one machine, on a moto server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use aws_lambda_events::encodings::Body as LambdaBody;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use spigot_aws::local::LocalStack;
use spigot_aws::{
    CodePipelines, HttpTarget, S3Filters, S3Payloads, SqsBuffer, SqsEvalQueue, StageSwitch,
};
use spigot_core::ports::{Pipelines, Start, StartError};
use spigot_core::{Secrets, Verifier};
use spigot_drainer::Drainer;
use spigot_drainer::engine::{Engine, EngineConfig};
use spigot_evaluator::Evaluator;
use spigot_receiver::Receiver;

use crate::CliError;
use crate::resources::{DEV_FILE, Where};

/// The secret `spigot dev` uses when none is given (the one the sample events are signed with).
pub const TEST_SECRET: &str = "spigot-test-secret";

#[derive(clap::Args)]
pub struct DevArgs {
    /// Serve POST /webhook here.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Forward hooks here [default: the built-in sink].
    #[arg(long)]
    target: Option<String>,
    /// Address of the built-in sink that prints each delivery (when no --target).
    #[arg(long, default_value = "127.0.0.1:3001")]
    sink: SocketAddr,
    /// Webhook secret(s), comma-separated [default: spigot-test-secret, the sample events' secret].
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Name of the local resources (queues, bucket, API).
    #[arg(long, default_value = "spigot-dev")]
    name: String,
    /// Forward timeout in milliseconds.
    #[arg(long, default_value_t = 7000)]
    forward_timeout_ms: u64,
    /// Run the drainer every this many seconds (0: never).
    #[arg(long, default_value_t = 5)]
    drain_interval: u64,
    /// Start pipelines through this CodePipeline endpoint [default: print "would start ..." instead].
    #[arg(long)]
    codepipeline_endpoint: Option<String>,
    /// Envelopes larger than this keep their body in the bucket.
    #[arg(long, default_value_t = 262_144)]
    claim_check_bytes: usize,
}

type DevReceiver = Receiver<SqsBuffer, S3Payloads, HttpTarget, SqsEvalQueue>;

struct App {
    receiver: DevReceiver,
    switch: StageSwitch,
}

pub async fn run(place: &Where, args: DevArgs) -> Result<(), CliError> {
    let endpoint = place
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:5000".to_string());
    let sdk = spigot_aws::sdk_config_with(
        Some(&endpoint),
        place.region.as_deref(),
        place.profile.as_deref(),
    )
    .await;
    let secret = args.secret.clone().unwrap_or_else(|| {
        tracing::warn!(
            "no --secret or WEBHOOK_SECRET: using the public test secret {TEST_SECRET:?}"
        );
        TEST_SECRET.to_string()
    });
    let secrets = Secrets::parse(&secret).map_err(|e| CliError::Usage(e.to_string()))?;

    let mut stack = provision_with_retry(&sdk, &endpoint, &args.name).await?;
    std::fs::create_dir_all(".spigot").context("cannot create .spigot/")?;
    std::fs::write(
        DEV_FILE,
        serde_json::to_string_pretty(&stack).expect("serialisable"),
    )
    .with_context(|| format!("cannot write {DEV_FILE}"))?;

    let target_url = match &args.target {
        Some(t) => t.clone(),
        None => {
            let listener = tokio::net::TcpListener::bind(args.sink)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for the sink; pass --sink or --target",
                        args.sink
                    )
                })?;
            let secrets = secrets.clone();
            tokio::spawn(async move {
                let app = axum::Router::new().fallback(move |m: Method, h: HeaderMap, b: Bytes| {
                    sink(secrets.clone(), m, h, b)
                });
                axum::serve(listener, app).await.ok();
            });
            format!("http://{}/", args.sink)
        }
    };
    stack.target = Some(target_url.clone());
    std::fs::create_dir_all(".spigot").context("cannot create .spigot/")?;
    std::fs::write(
        DEV_FILE,
        serde_json::to_string_pretty(&stack).expect("serialisable"),
    )
    .with_context(|| format!("cannot write {DEV_FILE}"))?;
    let timeout = Duration::from_millis(args.forward_timeout_ms);
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(&sdk);
    let receiver = Receiver {
        buffer: SqsBuffer::new(sqs.clone(), &stack.buffer_url, &stack.buffer_dlq_url),
        payloads: Some(S3Payloads::new(spigot_aws::s3_client(&sdk), &stack.bucket)),
        target: Some(
            HttpTarget::new(
                &target_url,
                Default::default(),
                spigot_core::config::origin(&target_url),
                timeout,
            )
            .context("cannot build the target client")?,
        ),
        eval: Some(SqsEvalQueue::new(sqs, &stack.eval_url)),
        verifier: Verifier::new(Some(secrets), false),
        claim_check_bytes: args.claim_check_bytes,
    };
    let switch = StageSwitch::new(
        spigot_aws::aws_sdk_apigateway::Client::new(&sdk),
        &stack.api_id,
        &stack.stage,
    );
    if args.drain_interval > 0 {
        let drainer = local_drainer(&sdk, &stack, &target_url, timeout)?;
        let every = Duration::from_secs(args.drain_interval);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let s = drainer.drain(None).await;
                if s.delivered + s.retried + s.dead_lettered > 0 {
                    eprintln!(
                        "drainer: {} delivered, {} retried, {} dead-lettered, {} released",
                        s.delivered, s.retried, s.dead_lettered, s.released
                    );
                }
            }
        });
    }
    let pipelines = match &args.codepipeline_endpoint {
        None => DevPipelines::Print,
        Some(url) => DevPipelines::Real(CodePipelines::new(
            spigot_aws::aws_sdk_codepipeline::Client::from_conf(
                spigot_aws::aws_sdk_codepipeline::config::Builder::from(&sdk)
                    .endpoint_url(url)
                    .build(),
            ),
        )),
    };
    let s3 = spigot_aws::s3_client(&sdk);
    let evaluator = Evaluator::new(
        S3Filters::new(s3.clone(), &stack.bucket),
        pipelines,
        Some(S3Payloads::new(s3, &stack.bucket)),
        Duration::from_secs(5),
    );
    tokio::spawn(evaluate_forever(
        spigot_aws::aws_sdk_sqs::Client::new(&sdk),
        stack.eval_url.clone(),
        evaluator,
    ));
    let app = Arc::new(App { receiver, switch });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another spigot dev running? pass --listen",
                args.listen
            )
        })?;
    let router = axum::Router::new()
        .route("/webhook", axum::routing::post(webhook))
        // Up to the Lambda request limit (6 MB), like the deployed receiver.
        .layer(axum::extract::DefaultBodyLimit::max(6 * 1024 * 1024))
        .route(
            "/",
            axum::routing::get(|| async { "spigot dev: POST GitHub webhooks to /webhook\n" }),
        )
        .with_state(app);
    eprintln!(
        "spigot dev: POST webhooks to http://{}/webhook -> {target_url}\n  local stack {} (API {} stage {}) in {endpoint}; ids in {DEV_FILE}\n  spigot off --local / spigot on --local flips the spigot; Ctrl-C stops",
        args.listen, args.name, stack.api_id, stack.stage
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the dev server stopped")?;
    Ok(())
}

/// The drainer of the local stack, as the Lambda builds it.
pub fn local_drainer(
    sdk: &spigot_aws::aws_config::SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    timeout: Duration,
) -> Result<Drainer<SqsBuffer, S3Payloads, HttpTarget, StageSwitch>, CliError> {
    Ok(Drainer {
        engine: Engine {
            buffer: SqsBuffer::new(
                spigot_aws::aws_sdk_sqs::Client::new(sdk),
                &stack.buffer_url,
                &stack.buffer_dlq_url,
            ),
            payloads: Some(S3Payloads::new(spigot_aws::s3_client(sdk), &stack.bucket)),
            target: HttpTarget::new(
                target_url,
                Default::default(),
                spigot_core::config::origin(target_url),
                timeout,
            )
            .context("cannot build the target client")?,
            config: EngineConfig {
                concurrency: 8,
                breaker_threshold: 3,
                wait_seconds: 0,
                stop_before: timeout + Duration::from_secs(2),
                until_empty: true,
                heartbeat: None,
                backoff_base: 5,
                backoff_cap: 60,
            },
        },
        switch: StageSwitch::new(
            spigot_aws::aws_sdk_apigateway::Client::new(sdk),
            &stack.api_id,
            &stack.stage,
        ),
    })
}

/// Where `spigot dev` starts pipelines: nowhere (it prints), or a CodePipeline endpoint.
enum DevPipelines {
    Print,
    Real(CodePipelines),
}

impl Pipelines for DevPipelines {
    async fn start(&self, start: &Start) -> Result<String, StartError> {
        match self {
            DevPipelines::Print => {
                println!("would start {} for {}", start.pipeline, start.reason);
                Ok("dry-run".into())
            }
            DevPipelines::Real(p) => p.start(start).await,
        }
    }
}

/// The evaluator's event source, locally: poll the evaluation queue, hand
/// batches to the handler, delete what did not fail.
async fn evaluate_forever(
    sqs: spigot_aws::aws_sdk_sqs::Client,
    url: String,
    evaluator: Evaluator<S3Filters, DevPipelines, S3Payloads>,
) {
    loop {
        let out = match sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot poll the evaluation queue");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        for m in &msgs {
            let mut rec = SqsMessage::default();
            rec.message_id = m.message_id.clone();
            rec.body = m.body.clone();
            event.records.push(rec);
        }
        let (resp, _) = evaluator.handle(event).await;
        for m in msgs {
            let failed = resp
                .batch_item_failures
                .iter()
                .any(|f| Some(&f.item_identifier) == m.message_id.as_ref());
            if let (false, Some(receipt)) = (failed, m.receipt_handle) {
                let _ = sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(receipt)
                    .send()
                    .await;
            }
        }
    }
}

async fn provision_with_retry(
    sdk: &spigot_aws::aws_config::SdkConfig,
    endpoint: &str,
    name: &str,
) -> Result<LocalStack, CliError> {
    // `make run` starts moto alongside: give it time to come up.
    let mut last = None;
    for _ in 0..60 {
        match spigot_aws::local::provision(sdk, endpoint, name).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(CliError::Failed(anyhow::anyhow!(
        last.expect("tried at least once")
    )))
}

async fn webhook(AxState(app): AxState<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = ApiGatewayProxyRequest::default();
    req.http_method = Method::POST;
    req.path = Some("/webhook".into());
    req.headers = headers;
    req.body = Some(base64::engine::general_purpose::STANDARD.encode(&body));
    req.is_base64_encoded = true;
    // The stage variables are read on each request, so `spigot off --local` takes effect at once.
    match app.switch.variables().await {
        Ok(vars) => req.stage_variables = vars,
        Err(e) => tracing::error!(error = %e, "cannot read the stage; the receiver will buffer"),
    }
    let resp = app.receiver.handle(&req, spigot_aws::now_ms()).await;
    let status =
        StatusCode::from_u16(resp.status_code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = match resp.body {
        Some(LambdaBody::Text(t)) => t,
        _ => String::new(),
    };
    (status, [("content-type", "application/json")], text).into_response()
}

async fn sink(secrets: Secrets, method: Method, headers: HeaderMap, body: Bytes) -> StatusCode {
    if method != Method::POST {
        return StatusCode::OK;
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let valid = Verifier::new(Some(secrets), false)
        .verify(&body, h("x-hub-signature-256"), None)
        .is_ok();
    println!(
        "sink: {} {} {} bytes signature {}",
        h("x-github-event").unwrap_or("-"),
        h("x-github-delivery").unwrap_or("-"),
        body.len(),
        if valid { "valid" } else { "INVALID" }
    );
    StatusCode::OK
}
