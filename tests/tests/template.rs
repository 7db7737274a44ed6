//! The SAM template and the code agree: every environment variable a function
//! is given is one the code reads, and every stack output the CLI reads exists.

use std::collections::BTreeSet;

use spigot_core::resources::TABLE;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Names under each `Variables:` block of the template (indentation-based, as SAM writes it).
fn template_variables(template: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut block_indent: Option<usize> = None;
    for line in template.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match block_indent {
            Some(b) if indent > b => {
                if let Some((k, _)) = text.split_once(':')
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    names.insert(k.to_string());
                }
            }
            _ => block_indent = None,
        }
        if text == "Variables:" {
            block_indent = Some(indent);
        }
    }
    names
}

#[test]
fn every_function_variable_is_read_by_the_code() {
    let vars = template_variables(&read("template.yaml"));
    assert!(
        vars.contains("BUFFER_QUEUE_URL") && vars.contains("WEBHOOK_SECRET_ARN"),
        "{vars:?}"
    );
    let config = read("crates/core/src/config.rs");
    let resources: BTreeSet<&str> = TABLE.iter().filter_map(|r| r.lambda_env).collect();
    for v in &vars {
        assert!(
            config.contains(&format!("\"{v}\"")) || resources.contains(v.as_str()),
            "template sets {v}, which no code reads"
        );
    }
}

#[test]
fn the_outputs_the_cli_reads_exist() {
    let template = read("template.yaml");
    let outputs = &template[template.find("\nOutputs:").expect("an Outputs section")..];
    // Every output the CLI resolves resources from (one row each), and the ones operators read.
    let cli = TABLE.iter().map(|r| r.output);
    for key in cli.chain([
        "FilterServiceToken",
        "WebhookUrl",
        "RelayPolicyArn",
        "AgentPolicyArn",
        "RaiserPolicyArn",
        "TriggerUrl",
        "TriggerSecretArn",
    ]) {
        assert!(
            outputs.contains(&format!("\n  {key}:")),
            "output {key} missing"
        );
    }
    assert!(
        outputs.contains("${AWS::StackName}-FilterServiceToken"),
        "the service token is exported"
    );
}

/// The `Parameters:` section as (name, its block of lines).
fn parameters(template: &str) -> Vec<(String, String)> {
    let start = template
        .find("\nParameters:")
        .expect("a Parameters section");
    let end = ["\nRules:", "\nConditions:"]
        .iter()
        .filter_map(|section| template[start + 1..].find(section))
        .min()
        .map(|i| start + 1 + i)
        .unwrap_or(template.len());
    let mut out: Vec<(String, String)> = Vec::new();
    for line in template[start..end].lines().skip(2) {
        if line.starts_with("  ") && !line.starts_with("   ") {
            out.push((line.trim().trim_end_matches(':').to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    out
}

/// No secret ships: no secret parameter with a default, none in samconfig.toml.
#[test]
fn no_secret_default_anywhere() {
    let template = read("template.yaml");
    let params = parameters(&template);
    assert!(
        params.iter().any(|(n, _)| n == "WebhookSecretArn"),
        "{params:?}"
    );
    for (name, block) in &params {
        // A secret's ARN names it; a number (SecretsCacheSeconds) is no secret.
        if name.contains("Secret") && !name.ends_with("Arn") && !block.contains("Type: Number") {
            panic!("parameter {name} carries a secret");
        }
        if block.contains("NoEcho") {
            assert!(!block.contains("Default:"), "{name} has a default");
        }
    }
    assert!(
        template.contains("GenerateSecretString"),
        "the secret is generated"
    );
    let samconfig = read("samconfig.toml");
    assert!(
        !samconfig.contains("WebhookSecret=") && !samconfig.contains("change-me"),
        "{samconfig}"
    );
    let outputs = &template[template.find("\nOutputs:").unwrap()..];
    assert!(
        !outputs.contains("resolve:secretsmanager")
            && !outputs.contains("GetAtt WebhookSecretValue"),
        "no secret value in outputs"
    );
    assert!(
        outputs.contains("\n  WebhookSecretArn:"),
        "the ARN, to read it with"
    );
}

/// The public endpoint is throttled, logged, and the receiver's concurrency reserved.
#[test]
fn the_public_endpoint_is_throttled_and_logged() {
    let template = read("template.yaml");
    let api = &template[template.find("\n  Api:\n").unwrap()..];
    let api = &api[..api[1..].find("\n  ApiAccessLogGroup:").unwrap()];
    for needed in [
        "ThrottlingRateLimit: !Ref ApiRateLimit",
        "ThrottlingBurstLimit: !Ref ApiBurstLimit",
        "AccessLogSetting:",
        "DestinationArn: !GetAtt ApiAccessLogGroup.Arn",
    ] {
        assert!(api.contains(needed), "Api lacks {needed}");
    }
    let logs = &template[template.find("\n  ApiAccessLogGroup:").unwrap()..];
    assert!(logs[..300].contains("RetentionInDays"));
    let receiver = &template[template.find("\n  ReceiverFunction:").unwrap()..];
    assert!(
        receiver[..800].contains("ReservedConcurrentExecutions: !Ref ReceiverReservedConcurrency")
    );
}

/// No pipeline can be started by a bare `*`: the evaluator's
/// StartPipelineExecution carries the spigot:trigger tag condition, and only
/// the filter function (and an operator role) may write filters.
#[test]
fn pipelines_and_filters_are_guarded() {
    let template = read("template.yaml");
    let start = template
        .find("Action: codepipeline:StartPipelineExecution")
        .expect("the evaluator starts pipelines");
    let statement = &template[start..start + 400];
    assert!(
        statement.contains("aws:ResourceTag/spigot:trigger: \"true\""),
        "{statement}"
    );
    assert!(template.contains("Sid: FiltersWrittenOnlyByTheFilterFunction"));
    assert!(template.contains("!GetAtt FilterResourceFunctionRole.Arn"));
    assert!(
        !template.contains("CFN_RESPONSE_URL_ALLOW_LOOPBACK"),
        "the test override is never set"
    );
    assert!(template.contains("Default: \"false\"\n    AllowedValues: [\"true\", \"false\"]\n    Description: Accept an http:// TargetUrl"));
}

/// Each alarm's block: (name, text).
fn alarms(template: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in template.lines() {
        let top = line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':');
        if top {
            blocks.push((line.trim().trim_end_matches(':').to_string(), String::new()));
        } else if let Some((_, b)) = blocks.last_mut() {
            b.push_str(line.trim());
            b.push('\n');
        }
    }
    blocks
        .into_iter()
        .filter(|(_, b)| b.contains("Type: AWS::CloudWatch::Alarm"))
        .collect()
}

#[test]
fn edge_failures_and_unrecovered_deliveries_raise_alarms_on_metrics_the_code_emits() {
    let template = read("template.yaml");
    let alarms = alarms(&template);
    let receiver = read("crates/receiver/src/lib.rs");
    let reconciler = read("crates/reconciler/src/lib.rs");
    // (metric, namespace, who emits it when it is ours)
    for (metric, namespace, source) in [
        ("5XXError", "AWS/ApiGateway", None),
        ("4XXError", "AWS/ApiGateway", None),
        ("Throttles", "AWS/Lambda", None),
        ("BufferErrors", "Spigot", Some(&receiver)),
        ("TooLarge", "Spigot", Some(&receiver)),
        ("Unrecovered", "Spigot", Some(&reconciler)),
    ] {
        let found = alarms.iter().find(|(_, b)| {
            b.contains(&format!("MetricName: {metric}\n"))
                && b.contains(&format!("Namespace: {namespace}\n"))
        });
        assert!(found.is_some(), "no alarm on {namespace} {metric}");
        if let Some(code) = source {
            assert!(
                code.contains(&format!("\"{metric}\"")),
                "the alarm watches {metric}, which the code never emits"
            );
        }
    }
    // The API alarms name the API and stage the template creates.
    let api_name = "Value: !Sub \"${AWS::StackName}-webhooks\"";
    assert!(template.contains(&format!("Name: {}", &api_name[7..])));
    assert!(alarms.iter().filter(|(_, b)| b.contains(api_name)).count() == 2);
    // The reconciler runs on its schedule only with GitHub credentials and hooks.
    assert!(template.contains(
        "Schedule: !Ref ReconcileSchedule\n            State: !If [ReconcileEnabled, ENABLED, DISABLED]"
    ));
    assert!(template.contains("Default: rate(15 minutes)"));
}

/// One front door per `ApiType`, each routing POST /webhook to the
/// receiver: REST (payload 1.0, bodies base64, the source-CIDR policy) or
/// HTTP (payload 2.0, `spigot_state` on its stage); the receiver has no
/// unconditional way in.
#[test]
fn sam_makes_one_front_door_per_api_type() {
    let path = format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR"));
    let cfn = spigot_e2e::iam::translate(&path, &[]);
    let r = &cfn["Resources"];
    let condition = |name: &str| r[name]["Condition"].as_str().map(String::from);
    assert_eq!(r["Api"]["Type"], "AWS::ApiGateway::RestApi");
    assert_eq!(condition("Api").as_deref(), Some("IsRestApi"));
    let rest = &r["Api"]["Properties"]["Body"];
    assert_eq!(
        rest["paths"]["/webhook"]["post"]["x-amazon-apigateway-integration"]["type"],
        "aws_proxy"
    );
    assert_eq!(rest["x-amazon-apigateway-binary-media-types"][0], "*/*");
    // The source-CIDR policy is in the definition, not dropped by SAM.
    let policy = rest["x-amazon-apigateway-policy"]["Fn::If"].clone();
    assert_eq!(policy[0], "HasSourceCidrs");
    assert_eq!(
        policy[1]["Statement"][1]["Condition"]["NotIpAddress"]["aws:SourceIp"]["Ref"],
        "AllowedSourceCidrs"
    );
    assert_eq!(r["HttpApi"]["Type"], "AWS::ApiGatewayV2::Api");
    assert_eq!(condition("HttpApi").as_deref(), Some("IsHttpApi"));
    let http = &r["HttpApi"]["Properties"]["Body"]["paths"]["/webhook"]["post"]["x-amazon-apigateway-integration"];
    assert_eq!(http["payloadFormatVersion"], "2.0");
    assert_eq!(http["type"], "aws_proxy");
    assert_eq!(
        r["HttpApiStage"]["Properties"]["StageVariables"]["spigot_state"],
        "ON"
    );
    assert_eq!(condition("HttpApiStage").as_deref(), Some("IsHttpApi"));
    // Every permission to invoke the receiver belongs to one API type.
    let receiver_permissions: Vec<(String, Option<String>)> = r
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| {
            v["Type"] == "AWS::Lambda::Permission"
                && v["Properties"]["FunctionName"]["Ref"] == "ReceiverFunction"
        })
        .map(|(k, v)| (k.clone(), v["Condition"].as_str().map(String::from)))
        .collect();
    assert_eq!(
        receiver_permissions,
        vec![
            ("ReceiverHttpPermission".into(), Some("IsHttpApi".into())),
            ("ReceiverRestPermission".into(), Some("IsRestApi".into()))
        ]
    );
    let drainer = &r["DrainerFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(drainer["API_TYPE"]["Ref"], "ApiType");
    // POST /trigger/{name} reaches the receiver through either door.
    assert_eq!(
        rest["paths"]["/trigger/{name}"]["post"]["x-amazon-apigateway-integration"]["type"],
        "aws_proxy"
    );
    assert_eq!(
        r["HttpApi"]["Properties"]["Body"]["paths"]["/trigger/{name}"]["post"]["x-amazon-apigateway-integration"]
            ["payloadFormatVersion"],
        "2.0"
    );
}

/// The S3 resources a managed policy lets `action` on (as written in the translated template).
fn allowed(cfn: &serde_json::Value, policy: &str, action: &str) -> String {
    cfn["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        // A conditional statement counts by its "true" arm.
        .map(|st| st.get("Fn::If").map_or(st, |arms| &arms[1]))
        .filter(|st| {
            st["Action"] == action
                || st["Action"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == action))
        })
        .map(|st| st["Resource"].to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Agents read triggers and write only receipts and their own "seen" record;
/// raisers write only requests and the head; the download prefixes come from a parameter.
#[test]
fn agents_and_raisers_get_policies_of_their_own() {
    let path = format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR"));
    let cfn = spigot_e2e::iam::translate(&path, &[]);
    let agent_writes = allowed(&cfn, "AgentPolicy", "s3:PutObject");
    assert!(
        agent_writes.contains("/triggers/*/receipts/*"),
        "{agent_writes}"
    );
    assert!(
        agent_writes.contains("/triggers/*/agents/*"),
        "{agent_writes}"
    );
    assert!(!agent_writes.contains("requests") && !agent_writes.contains("head.json"));
    let agent_reads = allowed(&cfn, "AgentPolicy", "s3:GetObject");
    assert!(agent_reads.contains("/triggers/*"), "{agent_reads}");
    assert!(
        agent_reads.contains("AgentDownloadPrefixes"),
        "{agent_reads}"
    );
    let raiser_writes = allowed(&cfn, "RaiserPolicy", "s3:PutObject");
    assert!(
        raiser_writes.contains("/triggers/*/requests/*"),
        "{raiser_writes}"
    );
    assert!(
        raiser_writes.contains("/triggers/*/head.json"),
        "{raiser_writes}"
    );
    assert!(!raiser_writes.contains("receipts"), "{raiser_writes}");
    // The receiver raises for POST /trigger/{name} with a secret of its own.
    let env = &cfn["Resources"]["ReceiverFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        env["TRIGGER_SECRET_ARN"]["Fn::If"][0],
        "GenerateTriggerSecret"
    );
    assert_ne!(env["TRIGGER_SECRET_ARN"], env["WEBHOOK_SECRET_ARN"]);
}

/// The template with `ApiType=HTTP` as its default passes cfn-lint and `sam validate --lint`.
#[test]
fn the_http_api_variant_lints() {
    let template = read("template.yaml");
    assert_eq!(template.matches("AllowedValues: [REST, HTTP]").count(), 1);
    let http = template.replacen(
        "    Default: REST\n    AllowedValues: [REST, HTTP]",
        "    Default: HTTP\n    AllowedValues: [REST, HTTP]",
        1,
    );
    assert_ne!(http, template);
    let dir = std::env::temp_dir().join(spigot_e2e::unique("template-http"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("template.yaml");
    std::fs::write(&path, http).unwrap();
    let bin = |tool: &str| format!("{}/../.venv/bin/{tool}", env!("CARGO_MANIFEST_DIR"));
    let lint = std::process::Command::new(bin("cfn-lint"))
        .arg(&path)
        .output()
        .expect("cfn-lint (make venv)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let validate = std::process::Command::new(bin("sam"))
        .args(["validate", "--lint", "--template"])
        .arg(&path)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("sam (make venv)");
    assert!(
        validate.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
}

/// The rows of ARCHITECTURE.md's "Who may call what" table: (holder, action, resource).
fn documented_permissions() -> BTreeSet<(String, String, String)> {
    let doc = read("ARCHITECTURE.md");
    let table = &doc[doc
        .find("## Who may call what")
        .expect("the table's heading")..];
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect();
            assert_eq!(cells.len(), 4, "holder | call | action | resource: {l}");
            (cells[0].clone(), cells[2].clone(), cells[3].clone())
        })
        .collect()
}

/// Every call has its permission, and the template gives exactly the
/// permissions ARCHITECTURE.md lists, read from SAM's own translation.
#[test]
fn the_template_gives_exactly_the_documented_permissions() {
    let given = spigot_e2e::iam::permission_rows(spigot_e2e::translated());
    let documented = documented_permissions();
    let fmt = |rows: &mut dyn Iterator<Item = &(String, String, String)>| {
        rows.map(|(h, a, r)| format!("| {h} | | `{a}` | `{r}` |"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let undocumented = fmt(&mut given.difference(&documented));
    let not_given = fmt(&mut documented.difference(&given));
    assert!(
        undocumented.is_empty() && not_given.is_empty(),
        "given by the template but not in ARCHITECTURE.md:\n{undocumented}\n\nin ARCHITECTURE.md but not given:\n{not_given}"
    );
}

/// Each function is given exactly the environment its settings read
/// (its crate's `ENVIRONMENT`), and builds from exactly that: every required
/// variable is present, no stray name.
#[tokio::test]
async fn each_function_is_given_exactly_the_environment_it_reads() {
    let cfn = spigot_e2e::translated();
    for (function, reads) in [
        ("ReceiverFunction", spigot_receiver::ENVIRONMENT),
        ("DrainerFunction", spigot_drainer::ENVIRONMENT),
        ("EvaluatorFunction", spigot_evaluator::ENVIRONMENT),
        (
            "FilterResourceFunction",
            spigot_filter_resource::ENVIRONMENT,
        ),
        ("ReconcilerFunction", spigot_reconciler::ENVIRONMENT),
    ] {
        let given: BTreeSet<&str> =
            cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
                .as_object()
                .unwrap_or_else(|| panic!("{function} has an environment"))
                .keys()
                .map(String::as_str)
                .collect();
        let reads: BTreeSet<&str> = reads.iter().copied().collect();
        assert_eq!(
            given, reads,
            "{function}: the template's variables vs what it reads"
        );
    }
    // Built from exactly the template's variables (local values): nothing required is missing.
    let (sdk, stack) = spigot_e2e::stack().await;
    let value = |name: &str| -> Option<String> {
        let resource = TABLE.iter().find(|r| r.lambda_env == Some(name));
        match (name, resource) {
            (_, Some(r)) => stack.resources.get(r.resource).map(str::to_string),
            ("TARGET_URL", _) => Some("https://jenkins.example.com/github-webhook/".into()),
            ("FORWARD_TIMEOUT_MS", _) => Some("7000".into()),
            _ => Some(String::new()),
        }
    };
    let settings_of = |reads: &[&str]| {
        spigot_core::config::Settings::from_lookup(|k| {
            reads.contains(&k).then(|| value(k)).flatten()
        })
        .unwrap()
    };
    spigot_drainer::build(&sdk, &settings_of(spigot_drainer::ENVIRONMENT)).expect("drainer");
    spigot_filter_resource::build(&sdk, &settings_of(spigot_filter_resource::ENVIRONMENT))
        .expect("custom resource");
    spigot_evaluator::build(&sdk, &settings_of(spigot_evaluator::ENVIRONMENT))
        .await
        .expect("evaluator");
    // Positive control: without its bucket the custom resource refuses to build.
    let without: Vec<&str> = vec![];
    assert!(spigot_filter_resource::build(&sdk, &settings_of(&without)).is_err());
}

/// The receiver's longest answer fits its Lambda timeout, and that
/// fits GitHub's 10 s: the longest forward, then the DRAINING flip (bounded)
/// beside the buffer write (a second kept for it), and half a second for the
/// rest (ForwardTimeoutMs allowed 8 s before: no room was left).
#[test]
fn the_receivers_time_budget_fits_lambda_and_github() {
    let cfn = spigot_e2e::translated();
    let forward_ms = cfn["Parameters"]["ForwardTimeoutMs"]["MaxValue"]
        .as_u64()
        .or_else(|| {
            cfn["Parameters"]["ForwardTimeoutMs"]["MaxValue"]
                .as_str()?
                .parse()
                .ok()
        })
        .expect("ForwardTimeoutMs has a MaxValue");
    let lambda_ms = cfn["Resources"]["ReceiverFunction"]["Properties"]["Timeout"]
        .as_u64()
        .expect("the receiver has a Timeout")
        * 1000;
    let flip_ms = spigot_receiver::DRAINING_FLIP_TIMEOUT.as_millis() as u64;
    let buffer_write_ms = 1000;
    // Verification, the envelope, the evaluation enqueue and the answer.
    let rest_ms = 500;
    assert!(
        forward_ms + flip_ms.max(buffer_write_ms) + rest_ms <= lambda_ms,
        "forward {forward_ms} + flip/buffer {} + {rest_ms} > Lambda {lambda_ms}",
        flip_ms.max(buffer_write_ms)
    );
    assert!(
        lambda_ms < 10_000,
        "GitHub waits 10 s; API Gateway needs its share"
    );
}

/// A number in the translated template, written as a number or a string.
fn number(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// No hook outlives what keeps it. The most attempts the template
/// allows, each after the longest deployed backoff, end before the engine's
/// age limit, which ends before the buffer's retention; the dead-letter
/// queues keep a letter as long; the claim-check bodies outlive a stay in
/// the buffer plus one in the DLQ, and attempt records a stay in the buffer.
#[test]
fn retries_never_outlive_the_retention_of_what_they_need() {
    use spigot_engine::config::{BUFFER_RETENTION, MAX_AGE};
    let cfn = spigot_e2e::translated();
    let max_attempts = number(&cfn["Parameters"]["MaxAttempts"]["MaxValue"]).unwrap();
    let backoff = spigot_engine::policy::MAX_BACKOFF_SECONDS as u64;
    assert!(
        max_attempts * backoff <= MAX_AGE.as_secs(),
        "MaxAttempts up to {max_attempts} x {backoff} s outlives the engine's {} s age limit",
        MAX_AGE.as_secs()
    );
    assert!(MAX_AGE < BUFFER_RETENTION);
    let retention = |queue: &str| {
        number(&cfn["Resources"][queue]["Properties"]["MessageRetentionPeriod"])
            .unwrap_or_else(|| panic!("{queue} sets its retention"))
    };
    assert_eq!(retention("Buffer"), BUFFER_RETENTION.as_secs());
    assert_eq!(retention("BufferDlq"), BUFFER_RETENTION.as_secs());
    let rules = cfn["Resources"]["ConfigBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_array()
        .unwrap()
        .clone();
    let days = |prefix: &str| {
        rules
            .iter()
            .find(|r| r["Prefix"] == prefix)
            .and_then(|r| number(&r["ExpirationInDays"]))
            .unwrap_or_else(|| panic!("a lifecycle rule for {prefix}"))
    };
    let buffer_days = BUFFER_RETENTION.as_secs() / 86_400;
    assert!(
        days("payloads/") >= 2 * buffer_days,
        "a body outlives buffer + DLQ"
    );
    assert!(
        days("attempts/") >= buffer_days,
        "a count outlives its hook's stay"
    );
    // A blocked repository's head ages: the age alarm watches the buffer and
    // fires (by default after an hour) long before the engine's age limit.
    let alarm = &cfn["Resources"]["BufferAgeAlarm"]["Properties"];
    assert_eq!(alarm["MetricName"], "ApproximateAgeOfOldestMessage");
    assert_eq!(alarm["Namespace"], "AWS/SQS");
    let threshold = number(&cfn["Parameters"]["BufferAgeAlarmSeconds"]["Default"]).unwrap();
    assert!(threshold < MAX_AGE.as_secs() / 24, "{threshold} s");
    // The relay and MAX_ATTEMPTS take no more than the template allows.
    assert_eq!(
        spigot_core::config::MAX_ATTEMPTS_LIMIT as u64,
        max_attempts,
        "MAX_ATTEMPTS's bound is the template's"
    );
}

/// The one resource of type `ty` in the translated template.
fn resource_of_type<'a>(cfn: &'a serde_json::Value, ty: &str) -> &'a serde_json::Value {
    cfn["Resources"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r["Type"] == ty)
        .unwrap_or_else(|| panic!("a {ty} in the template"))
}

/// POST /trigger has a throttle of its own in either front door; the
/// account-wide API Gateway setting is written only when asked; every prefix
/// the functions write has a lifecycle rule.
#[test]
fn triggers_are_throttled_apart_the_account_is_left_alone_and_prefixes_expire() {
    let cfn = spigot_e2e::translated();
    let stage = resource_of_type(cfn, "AWS::ApiGateway::Stage");
    let settings = stage["Properties"]["MethodSettings"].as_array().unwrap();
    assert!(
        settings
            .iter()
            .any(|m| m["ResourcePath"] == "/~1trigger~1{name}" && m["HttpMethod"] == "POST"),
        "{settings:?}"
    );
    assert!(
        settings.iter().any(|m| m["ResourcePath"] == "/*"),
        "control"
    );
    let http_stage = resource_of_type(cfn, "AWS::ApiGatewayV2::Stage");
    assert!(
        http_stage["Properties"]["RouteSettings"]["POST /trigger/{name}"].is_object(),
        "{http_stage}"
    );
    assert_eq!(
        cfn["Parameters"]["SetApiGatewayLogRole"]["Default"],
        "false"
    );
    assert_eq!(
        cfn["Resources"]["ApiGatewayAccount"]["Condition"],
        "SetApiLogRole"
    );
}

/// The bucket's layout (`spigot_core::layout::LAYOUT`) and the
/// template's lifecycle rules say the same: each prefix lives as long as the
/// layout says, and no rule names a prefix the layout does not know.
#[test]
fn every_prefix_of_the_layout_lives_as_long_as_its_lifecycle_rule_says() {
    use spigot_core::layout::{LAYOUT, Lifetime};
    let cfn = spigot_e2e::translated();
    let rules = cfn["Resources"]["ConfigBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_array()
        .unwrap();
    for p in LAYOUT {
        let rule = rules.iter().find(|r| r["Prefix"] == p.prefix);
        let (expires, old_versions) = match rule {
            Some(r) => (
                r.get("ExpirationInDays").cloned(),
                r["NoncurrentVersionExpiration"]["NoncurrentDays"].as_u64(),
            ),
            None => (None, None),
        };
        match p.lifetime {
            Lifetime::Days(days) => {
                assert_eq!(expires, Some(serde_json::json!(days)), "{}", p.prefix);
                assert_eq!(old_versions, Some(1), "{}", p.prefix);
            }
            Lifetime::ArchiveDays => assert_eq!(
                expires,
                Some(serde_json::json!({"Fn::If": ["ArchiveOn", {"Ref": "ArchiveDays"}, 1]})),
                "{}",
                p.prefix
            ),
            Lifetime::Kept { old_versions: days } => {
                assert_eq!(expires, None, "{}: current objects are kept", p.prefix);
                assert_eq!(old_versions, Some(u64::from(days)), "{}", p.prefix);
            }
            Lifetime::Forever => assert!(rule.is_none(), "{}: no lifecycle rule", p.prefix),
        }
    }
    for r in rules {
        assert!(
            LAYOUT.iter().any(|p| r["Prefix"] == p.prefix),
            "a lifecycle rule for a prefix the layout does not know: {r}"
        );
    }
}

/// The README's Deploy section has a table row for every template
/// parameter (name, default, what it does), and no row for one that is gone.
#[test]
fn the_readme_tables_every_parameter() {
    let template = read("template.yaml");
    let names: std::collections::BTreeSet<String> =
        parameters(&template).into_iter().map(|(n, _)| n).collect();
    let readme = read("README.md");
    let deploy = &readme[readme.find("## Deploy").unwrap()..readme.find("## Operate").unwrap()];
    let rows: std::collections::BTreeSet<String> = deploy
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(n, _)| n.to_string()))
        .collect();
    assert_eq!(rows, names, "README Deploy table vs template parameters");
}

/// The README's Operate section has a row for every resource flag
/// (flag, variable, stack output), from the same table the CLI reads.
#[test]
fn the_readme_tables_every_resource_flag() {
    let readme = read("README.md");
    let operate = &readme[readme.find("## Operate").unwrap()..];
    for row in spigot_core::resources::TABLE {
        let line = format!(
            "| `--{}` | `{}` | `{}` |",
            row.flag, row.cli_env, row.output
        );
        assert!(operate.contains(&line), "README lacks {line}");
    }
}

/// The dashboard is valid JSON once CloudFormation substitutes it, and
/// every Spigot metric it draws is one its function emits (named in that
/// function's source), so no widget stays empty for a typo.
#[test]
fn the_dashboard_draws_only_metrics_that_are_emitted() {
    let cfn = spigot_e2e::translated();
    let body = &cfn["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"];
    let text = body.as_str().expect("a !Sub string");
    // CloudFormation's substitutions, with stand-ins.
    let resolved = regex_lite_replace(text);
    let dashboard: serde_json::Value = serde_json::from_str(&resolved).expect("valid JSON");
    let widgets = dashboard["widgets"].as_array().unwrap();
    assert!(widgets.len() >= 6, "{widgets:?}");
    let mut drawn = 0;
    for w in widgets {
        for m in w["properties"]["metrics"].as_array().unwrap() {
            let m = m.as_array().unwrap();
            if m[0] != "Spigot" {
                continue;
            }
            let (name, function) = (m[1].as_str().unwrap(), m[3].as_str().unwrap());
            let dir = format!("{}/../crates/{function}/src", env!("CARGO_MANIFEST_DIR"));
            let emitted = std::fs::read_dir(&dir).unwrap().any(|f| {
                std::fs::read_to_string(f.unwrap().path())
                    .unwrap_or_default()
                    .contains(&format!("\"{name}\""))
            });
            assert!(emitted, "{function} does not emit {name}");
            drawn += 1;
        }
    }
    assert!(drawn >= 20, "{drawn}");
}

/// `${...}` replaced by `X` (no regex crate here).
fn regex_lite_replace(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').unwrap() + at;
        out.push('X');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The archive lands under `archive/` (the prefix the CLI reads),
/// encrypted, and a lifecycle rule expires it after `ArchiveDays`; with
/// `ArchiveDays` 0 there is no stream, no function writes to one, and what
/// was kept before expires within a day.
#[test]
fn the_archive_is_encrypted_and_expires_after_archive_days() {
    use spigot_core::archive::ARCHIVE_PREFIX;
    let cfn = spigot_e2e::translated();
    let stream = &cfn["Resources"]["ArchiveStream"];
    assert_eq!(stream["Type"], "AWS::KinesisFirehose::DeliveryStream");
    assert_eq!(stream["Condition"], "ArchiveOn");
    let dest = &stream["Properties"]["ExtendedS3DestinationConfiguration"];
    assert_eq!(dest["Prefix"], ARCHIVE_PREFIX);
    assert_eq!(dest["BucketARN"]["Fn::GetAtt"][0], "ConfigBucket");
    assert_eq!(
        stream["Properties"]["DeliveryStreamEncryptionConfigurationInput"]["KeyType"],
        "AWS_OWNED_CMK"
    );
    let bucket = &cfn["Resources"]["ConfigBucket"]["Properties"];
    assert_eq!(
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
            ["SSEAlgorithm"],
        "AES256"
    );
    assert_eq!(cfn["Parameters"]["ArchiveDays"]["Default"], 30);
    let rules = bucket["LifecycleConfiguration"]["Rules"]
        .as_array()
        .unwrap();
    let rule = rules
        .iter()
        .find(|r| r["Prefix"] == ARCHIVE_PREFIX)
        .expect("a lifecycle rule for the archive");
    assert_eq!(rule["Status"], "Enabled");
    let stack = spigot_e2e::iam::template_stack();
    let writes_archive = |p: &spigot_e2e::iam::Policies, role: &str| {
        p.documents(role)
            .iter()
            .flat_map(|d| d["Statement"].as_array().cloned().unwrap_or_default())
            .any(|st| st["Action"].to_string().contains("firehose:PutRecord"))
    };
    let env = |p: &spigot_e2e::iam::Policies, function: &str| {
        p.resolve(
            &cfn["Resources"][function]["Properties"]["Environment"]["Variables"]["ARCHIVE_STREAM"],
        )
    };
    for (days, expires, on) in [("30", 30, true), ("90", 90, true), ("0", 1, false)] {
        let p = spigot_e2e::iam::Policies::new(cfn, &stack).with_parameter("ArchiveDays", days);
        let expiry = p.resolve(&rule["ExpirationInDays"]);
        assert_eq!(
            expiry
                .as_u64()
                .or_else(|| expiry.as_str().and_then(|s| s.parse().ok())),
            Some(expires),
            "ArchiveDays {days}"
        );
        for (role, function) in [
            ("ReceiverFunctionRole", "ReceiverFunction"),
            ("DrainerFunctionRole", "DrainerFunction"),
            ("EvaluatorFunctionRole", "EvaluatorFunction"),
        ] {
            assert_eq!(writes_archive(&p, role), on, "{role}, ArchiveDays {days}");
            let stream = env(&p, function);
            assert_eq!(
                stream.as_str().is_some_and(|s| !s.is_empty()),
                on,
                "{function}'s ARCHIVE_STREAM, ArchiveDays {days}: {stream}"
            );
        }
    }
}
