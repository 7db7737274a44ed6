//! `Custom::PipelineFilter`: CloudFormation Create/Update/Delete → filter objects in the config bucket.
//!
//! It always answers: a guard sends FAILED when time runs low, and a panic in
//! the handler still produces a FAILED response, so a stack never hangs.

use spigot_aws::S3Filters;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use aws_lambda_events::cloudformation::CloudFormationCustomResourceRequest as Request;
use futures::FutureExt;
use serde_json::Value;
use spigot_core::cfn::{Outcome, RequestIds, failed_create_id, response_body};
use spigot_core::filter::{FilterSpec, is_filter_key};
use spigot_core::ports::{FilterStore, NoStacks, PortError, StackResource, Stacks};

/// Why a request is answered FAILED: the reason CloudFormation shows.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// DescribeStackResource could not be asked.
    #[error("cannot confirm the calling stack: {0}")]
    Unconfirmed(PortError),
    /// The request's stack is not running an operation on the resource it names.
    #[error(transparent)]
    Caller(spigot_core::cfn::NotTheCaller),
    /// The filter in the bucket could not be read.
    #[error("cannot read the filter: {0}")]
    Unreadable(PortError),
    /// Another stack owns the filter.
    #[error("filter {key} belongs to stack {owner}; only that stack may change or delete it")]
    Owned {
        /// The filter's key.
        key: String,
        /// The stack that owns it.
        owner: String,
    },
    /// An operator wrote the filter; no stack takes it over.
    #[error(
        "filter {0} was written with no owning stack (by an operator); remove it with `spigot filters delete` before a stack declares it"
    )]
    Unowned(String),
    /// The properties are not a filter (which field, and why).
    #[error("{0}")]
    Invalid(String),
    /// The filter would be written outside `filters/`.
    #[error("refusing to write outside filters/: {0}")]
    OutsideFilters(String),
    /// The filter does not fit with the others of its repository.
    #[error(transparent)]
    Unfit(spigot_core::filter::AdmitError),
    /// The bucket refused the write.
    #[error("cannot write the filter: {0}")]
    Unwritten(PortError),
}

/// Why a response did not reach CloudFormation.
#[derive(Debug, thiserror::Error)]
pub enum ResponseFailed {
    /// No HTTP client could be made.
    #[error(transparent)]
    Client(#[from] spigot_aws::AwsError),
    /// The PUT did not get an answer.
    #[error("PUT to the ResponseURL failed: {0}")]
    Unsent(String),
    /// The ResponseURL answered, but not 2xx.
    #[error("the ResponseURL answered {0}")]
    Refused(u16),
}

/// Sends the response document to the pre-signed ResponseURL.
pub trait Responder: Send + Sync {
    /// One PUT; `Err` saying why when it failed.
    fn put(
        &self,
        url: &str,
        body: String,
    ) -> impl Future<Output = Result<(), ResponseFailed>> + Send;
}

/// The real responder: `PUT` with an empty Content-Type (what the pre-signed URL was signed for).
#[derive(Debug, Clone)]
pub struct HttpResponder {
    client: spigot_aws::tls::LazyClient,
}

impl HttpResponder {
    /// A responder whose PUTs time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: spigot_aws::tls::LazyClient::new(move |builder| {
                builder
                    .timeout(timeout)
                    // The pre-signed URL is answered where it points, never where a redirect says.
                    .redirect(reqwest::redirect::Policy::none())
            }),
        }
    }
}

impl Responder for HttpResponder {
    async fn put(&self, url: &str, body: String) -> Result<(), ResponseFailed> {
        let resp = self
            .client
            .get()?
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, "")
            .body(body)
            .send()
            .await
            .map_err(|e| ResponseFailed::Unsent(spigot_aws::error_text(&e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ResponseFailed::Refused(resp.status().as_u16()))
        }
    }
}

/// CloudFormation's DescribeStackResource: the adapter of [`Stacks`] (here,
/// the one place that calls CloudFormation from a Lambda).
#[derive(Debug, Clone)]
pub struct CfnStacks {
    client: aws_sdk_cloudformation::Client,
}

impl CfnStacks {
    /// CloudFormation as `sdk` reaches it.
    pub fn new(sdk: &spigot_aws::aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_cloudformation::Client::new(sdk),
        }
    }
}

impl Stacks for CfnStacks {
    async fn resource(
        &self,
        stack_id: &str,
        logical_id: &str,
    ) -> Result<Option<StackResource>, PortError> {
        match self
            .client
            .describe_stack_resource()
            .stack_name(stack_id)
            .logical_resource_id(logical_id)
            .send()
            .await
        {
            Ok(out) => Ok(out.stack_resource_detail.map(|d| StackResource {
                resource_type: d.resource_type.unwrap_or_default(),
                status: d
                    .resource_status
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            })),
            // "Resource X does not exist for stack Y", "Stack Y does not exist".
            Err(e)
                if e.as_service_error()
                    .and_then(|s| s.meta().code())
                    .is_some_and(|c| c == "ValidationError") =>
            {
                Ok(None)
            }
            Err(e) => Err(PortError::new(format!(
                "CloudFormation DescribeStackResource {logical_id} of {stack_id} failed: {}",
                spigot_aws::error_text(&e)
            ))),
        }
    }
}

/// The custom resource handler and its ports.
pub struct FilterResource<F, R, S = NoStacks> {
    /// Filter objects.
    pub filters: F,
    /// Response sender.
    pub responder: R,
    /// The config bucket (returned as `Data.Bucket`).
    pub bucket: String,
    /// The CloudWatch log stream, named in failure reasons.
    pub log_stream: String,
    /// Time kept back before the deadline to send the response.
    pub margin: Duration,
    /// Also answer ResponseURLs on 127.0.0.1 (tests; `CFN_RESPONSE_URL_ALLOW_LOOPBACK`, never set by the template).
    pub allow_loopback_response_url: bool,
    /// CloudFormation, asked whether the stack a request names has the
    /// resource it names in progress; `None`: not asked (`spigot dev`).
    pub stacks: Option<S>,
}
/// The environment the template gives the custom resource (every variable its
/// settings read when deployed; `tests/tests/template.rs` checks the template sets exactly these).
pub const ENVIRONMENT: &[&str] = &["CONFIG_BUCKET"];

impl<F, R> FilterResource<F, R, NoStacks> {
    /// The same handler, confirming each request's stack with `stacks`.
    pub fn with_stacks<S: Stacks>(self, stacks: S) -> FilterResource<F, R, S> {
        FilterResource {
            filters: self.filters,
            responder: self.responder,
            bucket: self.bucket,
            log_stream: self.log_stream,
            margin: self.margin,
            allow_loopback_response_url: self.allow_loopback_response_url,
            stacks: Some(stacks),
        }
    }
}

/// The handler of a deployment: filters in `CONFIG_BUCKET`, responses over HTTPS.
pub fn build(
    sdk: &spigot_aws::aws_config::SdkConfig,
    settings: &spigot_core::config::Settings,
) -> Result<FilterResource<S3Filters, HttpResponder, CfnStacks>, spigot_aws::AwsError> {
    let bucket = settings
        .require(spigot_core::resources::Resource::Bucket)?
        .to_string();
    Ok(FilterResource {
        filters: S3Filters::new(spigot_aws::s3_client(sdk), &bucket),
        responder: HttpResponder::new(Duration::from_secs(5)),
        bucket,
        log_stream: std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
        margin: Duration::from_secs(5),
        allow_loopback_response_url: settings.cfn_response_url_allow_loopback,
        stacks: Some(CfnStacks::new(sdk)),
    })
}

/// What was answered (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The outcome sent.
    pub outcome: Outcome,
    /// Whether the PUT succeeded.
    pub sent: bool,
}

impl<F: FilterStore, R: Responder, S: Stacks> FilterResource<F, R, S> {
    /// Handles one request (any JSON) with `deadline`; never panics.
    pub async fn handle(&self, event: Value, deadline: Instant) -> Option<Answered> {
        let url = event
            .get("ResponseURL")
            .and_then(Value::as_str)
            .map(str::to_string);
        let ids = RequestIds {
            stack_id: text(&event, "StackId"),
            request_id: text(&event, "RequestId"),
            logical_resource_id: text(&event, "LogicalResourceId"),
        };
        let Some(url) = url else {
            tracing::error!(request = %ids.request_id, "request without a ResponseURL; nothing can be answered");
            return None;
        };
        // Only CloudFormation's pre-signed S3 URL is answered: never a request to anywhere else.
        if let Err(why) =
            spigot_core::cfn::check_response_url(&url, self.allow_loopback_response_url)
        {
            tracing::error!(request = %ids.request_id, stack = %ids.stack_id, %why, "not answering");
            return None;
        }
        let outcome = match serde_json::from_value::<Request>(event.clone()) {
            Err(e) => Outcome::failed(
                event
                    .get("PhysicalResourceId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| failed_create_id(&ids.request_id)),
                format!("malformed custom resource request: {e}"),
            ),
            Ok(req) => self.guarded(req, deadline).await,
        };
        match &outcome.reason {
            Some(r) => {
                tracing::warn!(request = %ids.request_id, status = ?outcome.status, reason = %r, "answering")
            }
            None => {
                tracing::info!(request = %ids.request_id, physical = %outcome.physical_id, "answering SUCCESS")
            }
        }
        let body = response_body(&ids, &outcome, &self.log_stream);
        let sent = self.send(&url, body, deadline).await;
        Some(Answered { outcome, sent })
    }

    /// Runs the operation, turning a panic or the deadline guard into FAILED.
    async fn guarded(&self, req: Request, deadline: Instant) -> Outcome {
        let fallback_id = match &req {
            Request::Create(c) => failed_create_id(&c.request_id),
            Request::Update(u) => u.physical_resource_id.clone(),
            Request::Delete(d) => d.physical_resource_id.clone(),
            _ => failed_create_id("unknown-request"),
        };
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.margin);
        let work = AssertUnwindSafe(self.apply(req)).catch_unwind();
        match tokio::time::timeout(budget, work).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%what, "handler panicked");
                Outcome::failed(
                    fallback_id,
                    format!("internal error in the filter handler: {what}"),
                )
            }
            Err(_) => Outcome::failed(
                fallback_id,
                "timed out before the Lambda deadline (is the config bucket reachable?)",
            ),
        }
    }

    /// `Ok` when CloudFormation confirms that the stack the request names is
    /// running an operation on the resource it names (see [`spigot_core::cfn::check_caller`]).
    async fn check_caller(&self, stack_id: &str, logical_id: &str) -> Result<(), Refused> {
        let Some(stacks) = &self.stacks else {
            return Ok(());
        };
        let found = stacks
            .resource(stack_id, logical_id)
            .await
            .map_err(Refused::Unconfirmed)?;
        spigot_core::cfn::check_caller(stack_id, logical_id, found.as_ref())
            .map_err(Refused::Caller)
    }

    async fn apply(&self, req: Request) -> Outcome {
        let (stack_id, logical_id, fallback) = match &req {
            Request::Create(c) => (
                &c.stack_id,
                &c.logical_resource_id,
                failed_create_id(&c.request_id),
            ),
            Request::Update(u) => (
                &u.stack_id,
                &u.logical_resource_id,
                u.physical_resource_id.clone(),
            ),
            Request::Delete(d) => (
                &d.stack_id,
                &d.logical_resource_id,
                d.physical_resource_id.clone(),
            ),
            _ => {
                return Outcome::failed(failed_create_id("unknown-request"), "unknown RequestType");
            }
        };
        if let Err(reason) = self.check_caller(stack_id, logical_id).await {
            tracing::error!(stack = %stack_id, resource = %logical_id, %reason, "refused");
            return Outcome::failed(fallback, reason.to_string());
        }
        match req {
            Request::Create(c) => match self.write(&c.resource_properties, &c.stack_id).await {
                Ok(key) => Outcome::success(key.clone(), self.data(&key)),
                Err(reason) => Outcome::failed(failed_create_id(&c.request_id), reason.to_string()),
            },
            Request::Update(u) => match self.write(&u.resource_properties, &u.stack_id).await {
                // A new key is a new PhysicalResourceId: CloudFormation then deletes the old one.
                Ok(key) => Outcome::success(key.clone(), self.data(&key)),
                Err(reason) => Outcome::failed(u.physical_resource_id, reason.to_string()),
            },
            Request::Delete(d) => {
                let key = d.physical_resource_id;
                if !is_filter_key(&key) {
                    return Outcome::success(key, BTreeMap::new());
                }
                if let Err(reason) = self.check_owner(&key, &d.stack_id, true).await {
                    return Outcome::failed(key, reason.to_string());
                }
                match self.filters.delete(&key).await {
                    Ok(()) => Outcome::success(key, BTreeMap::new()),
                    Err(e) => Outcome::failed(key, format!("cannot delete the filter: {e}")),
                }
            }
            _ => Outcome::failed(failed_create_id("unknown-request"), "unknown RequestType"),
        }
    }

    /// `Ok` when `key` is absent or owned by `stack`. A filter an operator
    /// wrote (no owning stack) is not taken over by a stack's create or
    /// update; a delete of it goes on (filters declared before they recorded
    /// their stack have none, and their stacks must still be deletable).
    async fn check_owner(&self, key: &str, stack: &str, deleting: bool) -> Result<(), Refused> {
        let existing = self.filters.get(key).await.map_err(Refused::Unreadable)?;
        let Some(bytes) = existing else {
            return Ok(());
        };
        match FilterSpec::from_json(&bytes).ok().map(|f| f.owner_stack) {
            Some(Some(owner)) if owner == stack => Ok(()),
            Some(Some(owner)) => Err(Refused::Owned {
                key: key.to_string(),
                owner,
            }),
            _ if deleting => Ok(()),
            // An operator's filter, or an unreadable object: not this stack's to replace.
            _ => Err(Refused::Unowned(key.to_string())),
        }
    }

    /// Validates properties and writes the filter, owned by `stack`; returns its key.
    async fn write(&self, props: &Value, stack: &str) -> Result<String, Refused> {
        let map = props
            .as_object()
            .cloned()
            .ok_or_else(|| Refused::Invalid("ResourceProperties must be an object".into()))?;
        let mut spec =
            FilterSpec::from_properties(map).map_err(|e| Refused::Invalid(e.to_string()))?;
        spec.owner_stack = Some(stack.to_string());
        let filter = spec
            .compile()
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        let key = filter.spec.key();
        if !is_filter_key(&key) {
            return Err(Refused::OutsideFilters(key));
        }
        self.check_owner(&key, stack, false).await?;
        spigot_core::filter::admit(&self.filters, &filter)
            .await
            .map_err(Refused::Unfit)?;
        self.filters
            .put(&key, filter.spec.to_json().into_bytes())
            .await
            .map_err(Refused::Unwritten)?;
        Ok(key)
    }

    fn data(&self, key: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("Key".to_string(), key.to_string()),
            ("Bucket".to_string(), self.bucket.clone()),
        ])
    }

    /// PUTs the response, retrying transient failures while time remains.
    async fn send(&self, url: &str, body: String, deadline: Instant) -> bool {
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=5 {
            match self.responder.put(url, body.clone()).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "response not accepted");
                    if Instant::now() + wait >= deadline {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        tracing::error!("could not deliver the response to CloudFormation");
        false
    }
}

fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
