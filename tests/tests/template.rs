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
    for key in cli.chain(["FilterServiceToken", "WebhookUrl", "RelayPolicyArn"]) {
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
    let end = template[start + 1..]
        .find("\nConditions:")
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

/// #16.1: no secret ships: no secret parameter with a default, none in samconfig.toml.
#[test]
fn no_secret_default_anywhere() {
    let template = read("template.yaml");
    let params = parameters(&template);
    assert!(
        params.iter().any(|(n, _)| n == "WebhookSecretArn"),
        "{params:?}"
    );
    for (name, block) in &params {
        if name.contains("Secret") && !name.ends_with("Arn") {
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

/// #16.2: the public endpoint is throttled, logged, and the receiver's concurrency reserved.
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

/// #16.3: no pipeline can be started by a bare `*`: the evaluator's
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
