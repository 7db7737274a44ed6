//! Custom::PipelineFilter against moto S3, with a local HTTP server standing
//! in for the pre-signed ResponseURL (it records each PUT).

use spigot_core::filter::FilterSpec;
use spigot_core::resources::Resource;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spigot_core::ports::{FilterStore, PortError, StoredFilter};
use spigot_e2e::*;
use spigot_filter_resource::{FilterResource, HttpResponder};

fn handler<F: FilterStore>(filters: F, bucket: &str) -> FilterResource<F, HttpResponder> {
    FilterResource {
        filters,
        responder: HttpResponder::new(Duration::from_secs(2)),
        bucket: bucket.to_string(),
        log_stream: "2026/11/23/[$LATEST]0123456789abcdef".into(),
        margin: Duration::from_millis(500),
        // The fake ResponseURL is on loopback; production answers only AWS hosts over https.
        allow_loopback_response_url: true,
        stacks: None,
    }
}

/// The filter store under the function's own role (moto enforces it): what the deployed handler can do.
async fn role_filters(
    sdk: &spigot_aws::aws_config::SdkConfig,
    stack: &spigot_aws::local::LocalStack,
) -> spigot_aws::S3Filters {
    let role = as_principal(sdk, stack, Principal::FilterResource).await;
    spigot_aws::S3Filters::new(spigot_aws::s3_client(&role), stack.get(Resource::Bucket))
}

fn event(file: &str, url: &str) -> Value {
    let path = format!("{}/../events/{file}", env!("CARGO_MANIFEST_DIR"));
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["ResponseURL"] = json!(format!("{url}/response?X-Amz-Signature=abc"));
    v
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// The last response PUT: its JSON and its Content-Type.
fn last_response(url: &FakeTarget) -> (Value, Option<String>, usize) {
    let got = url.accepted();
    let last = got.last().expect("a response was PUT");
    assert_eq!(last.method, "PUT");
    (
        serde_json::from_slice(&last.body).unwrap(),
        last.header("content-type").map(str::to_string),
        last.body.len(),
    )
}

async fn object(sdk: &spigot_aws::aws_config::SdkConfig, bucket: &str, key: &str) -> Option<Value> {
    let out = spigot_aws::s3_client(sdk)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap())
}

const KEY: &str = "filters/octo-org/mono/main/billing-service.json";

#[tokio::test]
async fn create_update_and_delete() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let h = handler(
        role_filters(&sdk, &stack).await,
        stack.get(Resource::Bucket),
    );

    // Create
    let a = h
        .handle(event("cfn-create.json", &url.url), soon())
        .await
        .unwrap();
    assert!(a.sent);
    let (resp, content_type, _) = last_response(&url);
    assert_eq!(resp["Status"], "SUCCESS", "{resp}");
    assert_eq!(resp["PhysicalResourceId"], KEY);
    assert_eq!(
        resp["Data"],
        json!({"Key": KEY, "Bucket": stack.get(Resource::Bucket)})
    );
    assert_eq!(resp["RequestId"], "d8f1a3e2-7b61-11e6-8f6c-0123456789ab");
    assert_eq!(resp["LogicalResourceId"], "BillingFilter");
    assert!(resp["StackId"].as_str().unwrap().contains("stack/billing"));
    assert_eq!(
        content_type.as_deref(),
        Some(""),
        "empty Content-Type, as the URL was signed"
    );
    assert_eq!(
        object(&sdk, stack.get(Resource::Bucket), KEY)
            .await
            .unwrap()["Include"],
        json!(["services/billing/**", "libs/common/**"])
    );

    // Update, same key: overwritten
    h.handle(event("cfn-update.json", &url.url), soon())
        .await
        .unwrap();
    let (resp, _, _) = last_response(&url);
    assert_eq!(
        (resp["Status"].as_str(), resp["PhysicalResourceId"].as_str()),
        (Some("SUCCESS"), Some(KEY))
    );
    assert_eq!(
        object(&sdk, stack.get(Resource::Bucket), KEY)
            .await
            .unwrap()["Include"],
        json!(["services/billing/**"])
    );

    // Update to a new branch: a new key and PhysicalResourceId; the old object stays for CloudFormation's Delete
    let mut moved = event("cfn-update.json", &url.url);
    moved["ResourceProperties"]["Branch"] = json!("release/*");
    h.handle(moved, soon()).await.unwrap();
    let (resp, _, _) = last_response(&url);
    let new_key = "filters/octo-org/mono/release%2F%2A/billing-service.json";
    assert_eq!(resp["PhysicalResourceId"], new_key);
    assert!(
        object(&sdk, stack.get(Resource::Bucket), new_key)
            .await
            .is_some()
    );
    assert!(
        object(&sdk, stack.get(Resource::Bucket), KEY)
            .await
            .is_some()
    );

    // Delete present, then delete again (already gone)
    for _ in 0..2 {
        h.handle(event("cfn-delete.json", &url.url), soon())
            .await
            .unwrap();
        let (resp, _, _) = last_response(&url);
        assert_eq!(resp["Status"], "SUCCESS", "{resp}");
        assert!(
            object(&sdk, stack.get(Resource::Bucket), KEY)
                .await
                .is_none()
        );
    }
}

#[tokio::test]
async fn an_invalid_update_fails_with_the_reason_and_leaves_the_old_object() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let h = handler(
        role_filters(&sdk, &stack).await,
        stack.get(Resource::Bucket),
    );
    h.handle(event("cfn-create.json", &url.url), soon())
        .await
        .unwrap();
    let before = object(&sdk, stack.get(Resource::Bucket), KEY)
        .await
        .unwrap();
    let mut bad = event("cfn-update.json", &url.url);
    bad["ResourceProperties"]["Syntax"] = json!("regex");
    bad["ResourceProperties"]["Include"] = json!(["services/(billing"]);
    h.handle(bad, soon()).await.unwrap();
    let (resp, _, _) = last_response(&url);
    assert_eq!(resp["Status"], "FAILED");
    assert_eq!(resp["PhysicalResourceId"], KEY, "the old id is kept");
    let reason = resp["Reason"].as_str().unwrap();
    assert!(
        reason.contains("is not a valid regex") && reason.contains("position"),
        "{reason}"
    );
    assert!(
        reason.contains("[$LATEST]0123456789abcdef"),
        "names the log stream: {reason}"
    );
    assert_eq!(
        object(&sdk, stack.get(Resource::Bucket), KEY)
            .await
            .unwrap(),
        before
    );
}

#[tokio::test]
async fn a_delete_after_a_failed_create_touches_nothing() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let h = handler(
        role_filters(&sdk, &stack).await,
        stack.get(Resource::Bucket),
    );
    let mut bad = event("cfn-create.json", &url.url);
    bad["ResourceProperties"]["Repository"] = json!("not-a-repo");
    h.handle(bad, soon()).await.unwrap();
    let (resp, _, _) = last_response(&url);
    assert_eq!(resp["Status"], "FAILED");
    let physical = resp["PhysicalResourceId"].as_str().unwrap().to_string();
    assert!(!physical.starts_with("filters/"));
    // Something else in the bucket that a careless delete could hit.
    spigot_aws::s3_client(&sdk)
        .put_object()
        .bucket(stack.get(Resource::Bucket))
        .key("payloads/keep-me")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    for id in [
        physical.as_str(),
        "payloads/keep-me",
        "filters/../payloads/keep-me",
    ] {
        let mut del = event("cfn-delete.json", &url.url);
        del["PhysicalResourceId"] = json!(id);
        h.handle(del, soon()).await.unwrap();
        let (resp, _, _) = last_response(&url);
        assert_eq!(resp["Status"], "SUCCESS", "{id}");
    }
    assert!(
        spigot_aws::s3_client(&sdk)
            .head_object()
            .bucket(stack.get(Resource::Bucket))
            .key("payloads/keep-me")
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn legacy_property_names_are_accepted() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let h = handler(
        role_filters(&sdk, &stack).await,
        stack.get(Resource::Bucket),
    );
    let mut legacy = event("cfn-create.json", &url.url);
    legacy["ResourceProperties"] = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:x",
        "GitHubRepo": "octo-org/mono", "GitHubBranch": "main",
        "ChangeMatchExpressions": "^services/billing/,^libs/", "CodePipelineName": "billing-service",
    });
    h.handle(legacy, soon()).await.unwrap();
    let (resp, _, _) = last_response(&url);
    assert_eq!(resp["Status"], "SUCCESS", "{resp}");
    let stored = object(&sdk, stack.get(Resource::Bucket), KEY)
        .await
        .unwrap();
    assert_eq!(stored["Syntax"], "regex");
    assert_eq!(stored["Include"], json!(["^services/billing/", "^libs/"]));
}

#[tokio::test]
async fn an_unreachable_bucket_still_gets_a_failed_answer_before_the_deadline() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    // An S3 endpoint that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let conf = spigot_aws::aws_sdk_s3::config::Builder::from(&sdk)
        .endpoint_url(&silent_url)
        .force_path_style(true)
        .build();
    let h = handler(
        spigot_aws::S3Filters::new(
            spigot_aws::aws_sdk_s3::Client::from_conf(conf),
            stack.get(Resource::Bucket),
        ),
        stack.get(Resource::Bucket),
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(3);
    let a = h
        .handle(event("cfn-create.json", &url.url), deadline)
        .await
        .unwrap();
    let answered_at = Instant::now();
    assert!(a.sent);
    assert!(
        answered_at < deadline,
        "answered {:?} after start, deadline 3 s",
        answered_at - start
    );
    let (resp, _, _) = last_response(&url);
    assert_eq!(resp["Status"], "FAILED");
    assert!(
        resp["Reason"].as_str().unwrap().contains("timed out"),
        "{resp}"
    );
}

/// A store whose every call panics, to prove a panic still answers.
struct PanickingStore;

impl FilterStore for PanickingStore {
    async fn list(&self, _: &str) -> Result<Vec<StoredFilter>, PortError> {
        panic!("list exploded")
    }
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, PortError> {
        panic!("get exploded")
    }
    async fn put(&self, _: &str, _: Vec<u8>) -> Result<(), PortError> {
        panic!("put exploded")
    }
    async fn delete(&self, _: &str) -> Result<(), PortError> {
        panic!("delete exploded")
    }
}

#[tokio::test]
async fn a_panic_in_the_handler_still_sends_failed() {
    let url = FakeTarget::start().await;
    let h = handler(PanickingStore, "bucket");
    let a = h
        .handle(event("cfn-create.json", &url.url), soon())
        .await
        .unwrap();
    assert!(a.sent);
    let (resp, _, _) = last_response(&url);
    assert_eq!(resp["Status"], "FAILED");
    assert!(
        // The write first reads the filter's owner, then checks the set.
        resp["Reason"].as_str().unwrap().contains("exploded"),
        "{resp}"
    );
}

#[tokio::test]
async fn a_10_kb_reason_is_cut_to_fit_4_kb() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let h = handler(
        role_filters(&sdk, &stack).await,
        stack.get(Resource::Bucket),
    );
    let mut bad = event("cfn-create.json", &url.url);
    bad["ResourceProperties"]["Syntax"] = json!("regex");
    bad["ResourceProperties"]["Include"] = json!([format!("({}", "a".repeat(10_000))]);
    h.handle(bad, soon()).await.unwrap();
    let (resp, _, len) = last_response(&url);
    assert!(len <= 4096, "{len} bytes");
    assert_eq!(resp["Status"], "FAILED");
    assert!(
        resp["Reason"]
            .as_str()
            .unwrap()
            .contains("CloudWatch log stream")
    );
}

#[tokio::test]
async fn transient_response_failures_are_retried() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    url.set_rule(|_, n| (n <= 2).then_some(503));
    let h = handler(
        role_filters(&sdk, &stack).await,
        stack.get(Resource::Bucket),
    );
    let a = h
        .handle(event("cfn-create.json", &url.url), soon())
        .await
        .unwrap();
    assert!(a.sent);
    assert_eq!(url.attempts(), 3);
    assert_eq!(url.accepted().len(), 1);
}

#[tokio::test]
async fn malformed_requests_do_not_panic() {
    let url = FakeTarget::start().await;
    let h = handler(PanickingStore, "bucket");
    // No usable ResponseURL: logged, nothing sent.
    for junk in [
        json!(null),
        json!([1, 2]),
        json!({"RequestType": "Create"}),
        json!({"ResponseURL": "ftp://x"}),
    ] {
        assert!(h.handle(junk, soon()).await.is_none());
    }
    // A ResponseURL but an unreadable request: FAILED is sent.
    let junk = json!({"RequestType": "Explode", "ResponseURL": format!("{}/r", url.url), "RequestId": "r-9", "StackId": "s", "LogicalResourceId": "L"});
    let a = h.handle(junk, soon()).await.unwrap();
    assert!(a.sent);
    let (resp, _, _) = last_response(&url);
    assert_eq!(resp["Status"], "FAILED");
    assert!(resp["Reason"].as_str().unwrap().contains("malformed"));
    assert_eq!(resp["RequestId"], "r-9");
}

/// The custom resource talks only to CloudFormation: a ResponseURL to
/// the instance metadata address or any non-AWS host is refused and logged,
/// and no request is made.
#[tokio::test]
async fn a_response_url_off_aws_is_refused_and_not_requested() {
    let (_, stack) = stack().await;
    let sink = FakeTarget::start().await;
    let mut h = handler(
        role_filters(&sdk().await, &stack).await,
        stack.get(Resource::Bucket),
    );
    h.allow_loopback_response_url = false;
    for url in [
        sink.url.clone(),
        "http://169.254.169.254".to_string(),
        "https://evil.example.com".to_string(),
    ] {
        assert!(
            h.handle(event("cfn-create.json", &url), soon())
                .await
                .is_none(),
            "{url}"
        );
    }
    assert_eq!(sink.attempts(), 0, "no request was made");
    // Positive control: the same request with the test override is answered.
    h.allow_loopback_response_url = true;
    assert!(
        h.handle(event("cfn-create.json", &sink.url), soon())
            .await
            .unwrap()
            .sent
    );
    assert_eq!(sink.attempts(), 1);
}

/// A filter records the stack that declared it; another stack can
/// neither overwrite nor delete it (FAILED, owner named), its own stack can.
#[tokio::test]
async fn a_filter_owned_by_stack_a_cannot_be_changed_by_stack_b() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let bucket = stack.get(Resource::Bucket);
    let h = handler(role_filters(&sdk, &stack).await, bucket);
    let stack_a = "arn:aws:cloudformation:us-east-1:123456789012:stack/billing/aaaa";
    let stack_b = "arn:aws:cloudformation:us-east-1:123456789012:stack/intruder/bbbb";
    let as_stack = |file: &str, stack: &str| {
        let mut e = event(file, &url.url);
        e["StackId"] = json!(stack);
        e
    };
    let created = h
        .handle(as_stack("cfn-create.json", stack_a), soon())
        .await
        .unwrap();
    assert_eq!(
        created.outcome.status,
        spigot_core::cfn::Status::Success,
        "{:?}",
        created.outcome
    );
    let key = created.outcome.physical_id.clone();
    let stored = h.filters.get(&key).await.unwrap().unwrap();
    let spec = FilterSpec::from_json(&stored).unwrap();
    assert_eq!(spec.owner_stack.as_deref(), Some(stack_a));

    // Stack B declares the same repository/branch/pipeline: refused.
    let b_create = h
        .handle(as_stack("cfn-create.json", stack_b), soon())
        .await
        .unwrap();
    assert_eq!(b_create.outcome.status, spigot_core::cfn::Status::Failed);
    let reason = b_create.outcome.reason.clone().unwrap();
    assert!(
        reason.contains("belongs to stack") && reason.contains(stack_a),
        "{reason}"
    );
    let mut b_delete = as_stack("cfn-delete.json", stack_b);
    b_delete["PhysicalResourceId"] = json!(key);
    let refused = h.handle(b_delete, soon()).await.unwrap();
    assert_eq!(refused.outcome.status, spigot_core::cfn::Status::Failed);
    assert!(h.filters.get(&key).await.unwrap().is_some(), "still there");

    // Stack A can still update and delete it.
    let a_update = h
        .handle(as_stack("cfn-update.json", stack_a), soon())
        .await
        .unwrap();
    assert_eq!(
        a_update.outcome.status,
        spigot_core::cfn::Status::Success,
        "{:?}",
        a_update.outcome
    );
    let mut a_delete = as_stack("cfn-delete.json", stack_a);
    a_delete["PhysicalResourceId"] = json!(key);
    let deleted = h.handle(a_delete, soon()).await.unwrap();
    assert_eq!(deleted.outcome.status, spigot_core::cfn::Status::Success);
    assert!(h.filters.get(&key).await.unwrap().is_none());
}

/// CloudFormation's Query protocol on a [`FakeAws`] (moto cannot run a
/// custom resource): DescribeStackResource answered from `resources`
/// (stack name, logical id, type, status), "does not exist" otherwise.
fn describe_stack_resource(
    aws: &FakeAws,
    resources: Vec<(&'static str, &'static str, &'static str, &'static str)>,
) {
    aws.on("POST /", move |call| {
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(call.body.as_bytes()).into_owned().collect();
        if form.get("Action").map(String::as_str) != Some("DescribeStackResource") {
            return None;
        }
        let (stack, logical) = (form.get("StackName")?, form.get("LogicalResourceId")?);
        let found = resources
            .iter()
            .find(|(s, l, _, _)| stack.contains(&format!("stack/{s}/")) && logical == l);
        Some(match found {
            Some((s, l, t, status)) => (
                200,
                "text/xml",
                format!(
                    "<DescribeStackResourceResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><DescribeStackResourceResult><StackResourceDetail><StackId>{stack}</StackId><StackName>{s}</StackName><LogicalResourceId>{l}</LogicalResourceId><PhysicalResourceId>p</PhysicalResourceId><ResourceType>{t}</ResourceType><LastUpdatedTimestamp>2026-12-02T10:00:00Z</LastUpdatedTimestamp><ResourceStatus>{status}</ResourceStatus></StackResourceDetail></DescribeStackResourceResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeStackResourceResponse>"
                ),
            ),
            None => (
                400,
                "text/xml",
                format!("<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>Resource {logical} does not exist for stack {stack}</Message></Error><RequestId>r</RequestId></ErrorResponse>"),
            ),
        })
    });
}

/// A request is believed only when CloudFormation says the stack it
/// names has the custom resource it names with an operation in progress.
/// Anyone who may invoke the function can write any StackId into a request;
/// the forged ones (another stack, a finished resource, a resource of
/// another type) change nothing and are answered FAILED with the reason.
/// Positive control: the billing stack's own create writes its filter.
#[tokio::test]
async fn a_request_whose_stack_is_not_asking_changes_no_filter() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let aws = FakeAws::start().await;
    describe_stack_resource(
        &aws,
        vec![
            (
                "billing",
                "BillingFilter",
                "Custom::PipelineFilter",
                "CREATE_IN_PROGRESS",
            ),
            (
                "done",
                "BillingFilter",
                "Custom::PipelineFilter",
                "CREATE_COMPLETE",
            ),
            (
                "queue",
                "BillingFilter",
                "AWS::SQS::Queue",
                "CREATE_IN_PROGRESS",
            ),
        ],
    );
    let mut h = handler(
        role_filters(&sdk, &stack).await,
        stack.get(Resource::Bucket),
    )
    .with_stacks(spigot_filter_resource::CfnStacks::new(
        &spigot_aws::sdk_config(Some(&aws.url)).await,
    ));
    h.allow_loopback_response_url = true;
    let forged = |stack_name: &str| {
        let mut e = event("cfn-create.json", &url.url);
        e["StackId"] = json!(format!(
            "arn:aws:cloudformation:us-east-1:123456789012:stack/{stack_name}/5b1e0c40"
        ));
        e
    };
    for (name, why) in [
        ("intruder", "has no resource BillingFilter"),
        ("done", "no operation of that stack is asking"),
        ("queue", "not a custom resource"),
    ] {
        h.handle(forged(name), soon()).await.unwrap();
        let (resp, _, _) = last_response(&url);
        assert_eq!(resp["Status"], "FAILED", "{name}: {resp}");
        assert!(
            resp["Reason"].as_str().unwrap().contains(why),
            "{name}: {resp}"
        );
        assert!(
            object(&sdk, stack.get(Resource::Bucket), KEY)
                .await
                .is_none(),
            "{name} wrote a filter"
        );
    }
    h.handle(event("cfn-create.json", &url.url), soon())
        .await
        .unwrap();
    let (resp, _, _) = last_response(&url);
    assert_eq!(resp["Status"], "SUCCESS", "{resp}");
    assert!(
        object(&sdk, stack.get(Resource::Bucket), KEY)
            .await
            .is_some()
    );
    let asked = aws
        .calls()
        .iter()
        .filter(|c| c.body.contains("Action=DescribeStackResource"))
        .count();
    assert_eq!(asked, 4, "CloudFormation asked once per request");
}

/// A filter an operator wrote (`spigot filters put`: no owning stack)
/// is not taken over by whichever stack declares the same key first: its
/// create is FAILED, naming the way out, and the operator's filter stays.
/// Control: once the operator deletes it, the stack's create succeeds.
#[tokio::test]
async fn a_stack_cannot_take_over_a_filter_an_operator_wrote() {
    let (sdk, stack) = stack().await;
    let url = FakeTarget::start().await;
    let bucket = stack.get(Resource::Bucket);
    let h = handler(role_filters(&sdk, &stack).await, bucket);
    let admin = spigot_aws::S3Filters::new(spigot_aws::s3_client(&sdk), bucket);
    let operators = json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "billing-service", "Include": ["docs/**"]});
    admin
        .put(KEY, operators.to_string().into_bytes())
        .await
        .unwrap();
    let taken = h
        .handle(event("cfn-create.json", &url.url), soon())
        .await
        .unwrap();
    assert_eq!(taken.outcome.status, spigot_core::cfn::Status::Failed);
    let reason = taken.outcome.reason.unwrap();
    assert!(
        reason.contains("no owning stack") && reason.contains("filters delete"),
        "{reason}"
    );
    assert_eq!(
        object(&sdk, bucket, KEY).await.unwrap()["Include"],
        json!(["docs/**"])
    );
    admin.delete(KEY).await.unwrap();
    let created = h
        .handle(event("cfn-create.json", &url.url), soon())
        .await
        .unwrap();
    assert_eq!(created.outcome.status, spigot_core::cfn::Status::Success);
}
