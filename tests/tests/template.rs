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
