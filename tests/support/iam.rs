//! Principals under the template's own policies: SAM's translation of
//! template.yaml (tools/sam_translate.py) gives each function role and managed
//! policy its statements; [`Policies::documents`] resolves their intrinsics to
//! a local stack's resources, and [`as_principal`] makes an IAM user in moto
//! (started with `--iam`, so it enforces them) holding exactly those
//! documents, and SDK credentials for it. No policy is written here.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Value, json};
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;
use spigot_core::resources::Resource;

use crate::moto::{moto, unique};

/// The account moto runs as.
pub const ACCOUNT: &str = "123456789012";
/// The region of every local stack.
pub const REGION: &str = "us-east-1";

/// Who a component runs as when deployed (a function's role, or a managed policy of the template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    /// The receiver function's role.
    Receiver,
    /// The drainer function's role.
    Drainer,
    /// The evaluator function's role.
    Evaluator,
    /// The filter custom resource function's role.
    FilterResource,
    /// The reconciler function's role.
    Reconciler,
    /// `spigot relay` (RelayPolicy).
    Relay,
    /// `spigot agent --trigger` (AgentPolicy).
    Agent,
    /// `spigot trigger` (RaiserPolicy).
    Raiser,
    /// The operator commands: on, off, status, dlq, filters (OperatorPolicy).
    Operator,
    /// `spigot on --local --drain`, which drains in its own process: the
    /// operator's rights and the relay's (on AWS `on --drain` invokes the drainer).
    OperatorDraining,
}

impl Principal {
    /// The template resources whose statements this principal holds.
    pub fn sources(self) -> &'static [&'static str] {
        match self {
            Principal::Receiver => &["ReceiverFunctionRole"],
            Principal::Drainer => &["DrainerFunctionRole"],
            Principal::Evaluator => &["EvaluatorFunctionRole"],
            Principal::FilterResource => &["FilterResourceFunctionRole"],
            Principal::Reconciler => &["ReconcilerFunctionRole"],
            Principal::Relay => &["RelayPolicy"],
            Principal::Agent => &["AgentPolicy"],
            Principal::Raiser => &["RaiserPolicy"],
            Principal::Operator => &["OperatorPolicy"],
            Principal::OperatorDraining => &["OperatorPolicy", "RelayPolicy"],
        }
    }
}

/// The CloudFormation SAM makes of `template` with `params` (SAM's own translator).
pub fn translate(template: &str, params: &[(&str, &str)]) -> Value {
    let out = std::process::Command::new(crate::python())
        .arg(format!(
            "{}/../tools/sam_translate.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(template)
        .args(params.iter().map(|(k, v)| format!("{k}={v}")))
        .env("AWS_DEFAULT_REGION", REGION)
        .output()
        .expect("python runs tools/sam_translate.py");
    assert!(
        out.status.success(),
        "sam_translate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// template.yaml as SAM translates it with its defaults (once a test process).
pub fn translated() -> &'static Value {
    static CFN: OnceLock<Value> = OnceLock::new();
    CFN.get_or_init(|| {
        translate(
            &format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR")),
            &[],
        )
    })
}

/// The translated template's policies, resolved for one stack.
pub struct Policies<'a> {
    cfn: &'a Value,
    refs: BTreeMap<String, String>,
    arns: BTreeMap<String, String>,
    params: BTreeMap<String, Value>,
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME` of a queue URL.
pub fn queue_arn(url: &str) -> String {
    let name = url.rsplit('/').next().unwrap_or(url);
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
}

impl<'a> Policies<'a> {
    /// `cfn`'s resources named by `stack`'s local counterparts (parameters at their defaults).
    pub fn new(cfn: &'a Value, stack: &LocalStack) -> Self {
        let name = stack.get(Resource::Bucket).trim_end_matches("-config");
        let mut refs = BTreeMap::new();
        let mut arns = BTreeMap::new();
        let bucket = stack.get(Resource::Bucket).to_string();
        arns.insert("ConfigBucket".into(), format!("arn:aws:s3:::{bucket}"));
        refs.insert("ConfigBucket".into(), bucket);
        for (logical, r) in [
            ("Buffer", Resource::BufferUrl),
            ("BufferDlq", Resource::DlqUrl),
            ("EvalQueue", Resource::EvalUrl),
            ("EvalDlq", Resource::EvalDlqUrl),
        ] {
            let url = stack.get(r).to_string();
            arns.insert(logical.into(), queue_arn(&url));
            refs.insert(logical.into(), url);
        }
        // The archive's Firehose stream (absent from stacks made without one).
        let archive = match stack.get(Resource::ArchiveStream) {
            "" => format!("{name}-archive"),
            s => s.to_string(),
        };
        arns.insert(
            "ArchiveStream".into(),
            format!("arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{archive}"),
        );
        refs.insert("ArchiveStream".into(), archive);
        refs.insert("Api".into(), stack.get(Resource::ApiId).to_string());
        refs.insert("HttpApi".into(), stack.get(Resource::ApiId).to_string());
        for secret in ["WebhookSecretValue", "TriggerSecretValue"] {
            refs.insert(
                secret.into(),
                format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-{secret}"),
            );
        }
        refs.insert("AWS::Region".into(), REGION.into());
        refs.insert("AWS::Partition".into(), "aws".into());
        refs.insert("AWS::AccountId".into(), ACCOUNT.into());
        refs.insert("AWS::StackName".into(), name.into());
        refs.insert(
            "AWS::StackId".into(),
            format!("arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{name}/local"),
        );
        for role in cfn["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| (v["Type"] == "AWS::IAM::Role").then_some(k))
        {
            refs.insert(role.clone(), format!("{name}-{role}"));
            arns.insert(
                role.clone(),
                format!("arn:aws:iam::{ACCOUNT}:user/{name}-{role}"),
            );
        }
        for function in cfn["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| (v["Type"] == "AWS::Lambda::Function").then_some(k))
        {
            arns.insert(
                function.clone(),
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}-{function}"),
            );
        }
        let mut params = BTreeMap::new();
        for (k, v) in cfn["Parameters"].as_object().unwrap() {
            params.insert(k.clone(), v.get("Default").cloned().unwrap_or(json!("")));
        }
        params.insert("StageName".into(), json!(stack.get(Resource::Stage)));
        Self {
            cfn,
            refs,
            arns,
            params,
        }
    }

    /// The same with parameter `name` set to `value`.
    pub fn with_parameter(mut self, name: &str, value: &str) -> Self {
        self.params.insert(name.into(), json!(value));
        self
    }

    /// The same with resource `logical` named `value` (a secret's ARN as
    /// Secrets Manager made it, say).
    pub fn with_ref(mut self, logical: &str, value: &str) -> Self {
        self.refs.insert(logical.into(), value.into());
        self
    }

    /// The policy documents `source` (a role or a managed policy) holds, resolved.
    pub fn documents(&self, source: &str) -> Vec<Value> {
        let resources = &self.cfn["Resources"];
        let r = &resources[source];
        let mut docs = Vec::new();
        match r["Type"].as_str() {
            Some("AWS::IAM::Role") => {
                for p in r["Properties"]["Policies"].as_array().into_iter().flatten() {
                    let p = self.resolve(p);
                    if !p.is_null() {
                        docs.push(p["PolicyDocument"].clone());
                    }
                }
                // Policies attached to the role by resources of their own.
                for (_, other) in resources.as_object().unwrap() {
                    if other["Type"] == "AWS::IAM::Policy"
                        && other["Properties"]["Roles"]
                            .as_array()
                            .is_some_and(|roles| roles.iter().any(|x| x["Ref"] == source))
                        && self.included(other)
                    {
                        docs.push(self.resolve(&other["Properties"]["PolicyDocument"]));
                    }
                }
            }
            Some("AWS::IAM::ManagedPolicy") => {
                docs.push(self.resolve(&r["Properties"]["PolicyDocument"]))
            }
            other => panic!("{source} is not a role or managed policy of the template: {other:?}"),
        }
        docs
    }

    fn included(&self, resource: &Value) -> bool {
        resource["Condition"]
            .as_str()
            .is_none_or(|c| self.condition(c))
    }

    fn condition(&self, name: &str) -> bool {
        let c = &self.cfn["Conditions"][name];
        assert!(!c.is_null(), "no condition {name} in the template");
        self.truth(c)
    }

    fn truth(&self, v: &Value) -> bool {
        let (f, args) = v
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("a condition");
        match f.as_str() {
            "Fn::Equals" => self.resolve(&args[0]) == self.resolve(&args[1]),
            "Fn::Not" => !self.truth(&args[0]),
            "Fn::And" => args.as_array().unwrap().iter().all(|a| self.truth(a)),
            "Fn::Or" => args.as_array().unwrap().iter().any(|a| self.truth(a)),
            "Condition" => self.condition(args.as_str().unwrap()),
            other => panic!("condition function {other} is not resolved here"),
        }
    }

    fn reference(&self, name: &str) -> Value {
        if let Some(p) = self.params.get(name) {
            if self.cfn["Parameters"][name]["Type"] == "CommaDelimitedList" {
                let text = text_of(p);
                return json!(text.split(',').collect::<Vec<_>>());
            }
            return p.clone();
        }
        match self.refs.get(name) {
            Some(v) => json!(v),
            None => panic!("Ref {name}: no local counterpart (add it to Policies::new)"),
        }
    }

    fn attribute(&self, name: &str, attr: &str) -> String {
        assert_eq!(attr, "Arn", "GetAtt {name}.{attr} is not resolved here");
        match self.arns.get(name) {
            Some(v) => v.clone(),
            None => panic!("GetAtt {name}.Arn: no local counterpart (add it to Policies::new)"),
        }
    }

    fn sub(&self, text: &str, vars: &serde_json::Map<String, Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed ${") + start;
            let name = &rest[start + 2..end];
            let value = match (vars.get(name), name.split_once('.')) {
                (Some(v), _) => self.resolve(v),
                (None, Some((r, a))) => json!(self.attribute(r, a)),
                (None, None) => self.reference(name),
            };
            out.push_str(&text_of(&value));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// `v` with every intrinsic function evaluated; `Null` for AWS::NoValue.
    pub fn resolve(&self, v: &Value) -> Value {
        match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.resolve(i))
                    .filter(|i| !i.is_null())
                    .collect(),
            ),
            Value::Object(o) if o.len() == 1 => {
                let (k, args) = o.iter().next().unwrap();
                match k.as_str() {
                    "Ref" if args == "AWS::NoValue" => Value::Null,
                    "Ref" => self.reference(args.as_str().unwrap()),
                    "Fn::GetAtt" => {
                        let (r, a) = match args {
                            Value::Array(p) => (p[0].as_str().unwrap(), p[1].as_str().unwrap()),
                            _ => args.as_str().unwrap().split_once('.').unwrap(),
                        };
                        json!(self.attribute(r, a))
                    }
                    "Fn::Sub" => match args {
                        Value::String(s) => json!(self.sub(s, &Default::default())),
                        _ => {
                            json!(self.sub(args[0].as_str().unwrap(), args[1].as_object().unwrap()))
                        }
                    },
                    "Fn::If" => {
                        let arm = if self.condition(args[0].as_str().unwrap()) {
                            1
                        } else {
                            2
                        };
                        self.resolve(&args[arm])
                    }
                    "Fn::Join" => {
                        let parts = self.resolve(&args[1]);
                        json!(
                            parts
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(text_of)
                                .collect::<Vec<_>>()
                                .join(args[0].as_str().unwrap())
                        )
                    }
                    "Fn::Split" => {
                        let s = text_of(&self.resolve(&args[1]));
                        json!(s.split(args[0].as_str().unwrap()).collect::<Vec<_>>())
                    }
                    _ if k.starts_with("Fn::") => panic!("{k} is not resolved here"),
                    _ => json!({k: self.resolve(args)}),
                }
            }
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v)))
                    .filter(|(_, v)| !v.is_null())
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A stack named after the template's logical ids (`q/Buffer`,
/// `spigot-config`, `ArchiveStream`), for reading its policies without moto.
pub fn template_stack() -> LocalStack {
    LocalStack {
        endpoint: String::new(),
        resources: spigot_core::resources::Resources::default()
            .with(Resource::ApiId, "API")
            .with(Resource::Stage, "live")
            .with(Resource::BufferUrl, "q/Buffer")
            .with(Resource::DlqUrl, "q/BufferDlq")
            .with(Resource::EvalUrl, "q/EvalQueue")
            .with(Resource::EvalDlqUrl, "q/EvalDlq")
            .with(Resource::Bucket, "spigot-config")
            .with(Resource::ArchiveStream, "ArchiveStream"),
        target: None,
        webhook_url: None,
    }
}

/// Access key and secret of a new IAM user in moto holding `documents` as inline policies.
pub async fn iam_user(name: &str, documents: &[Value]) -> (String, String) {
    iam_call(&[("Action", "CreateUser"), ("UserName", name)]).await;
    for (i, d) in documents.iter().enumerate() {
        // SAM writes a function's statements without a Version (IAM then reads
        // 2008-10-17); moto's validator wants one. No statement changes.
        let mut d = d.clone();
        d.as_object_mut()
            .expect("a policy document")
            .entry("Version")
            .or_insert(json!("2012-10-17"));
        iam_call(&[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", &format!("p{i}")),
            ("PolicyDocument", &d.to_string()),
        ])
        .await;
    }
    let key = iam_call(&[("Action", "CreateAccessKey"), ("UserName", name)]).await;
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let start = key.find(&open).expect("CreateAccessKey answered a key") + open.len();
        key[start..start + key[start..].find('<').unwrap()].to_string()
    };
    (field("AccessKeyId"), field("SecretAccessKey"))
}

/// One IAM Query API call to moto with the admin key. The wrapper compares no
/// signatures (tools/moto_server.py), so the Authorization header only names the key.
async fn iam_call(params: &[(&str, &str)]) -> String {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.push(("Version", "2010-05-08"));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = reqwest::Client::new()
        .post(format!("{}/", moto()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header(
            "Authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=test/20261202/{REGION}/iam/aws4_request, SignedHeaders=host, Signature=0"
            ),
        )
        .header("X-Amz-Date", "20261202T000000Z")
        .body(body)
        .send()
        .await
        .expect("moto answers IAM");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "IAM {params:?}: {status} {text}");
    text
}

/// SDK configuration for `sdk`'s endpoint with the credentials of a new IAM user
/// holding exactly what `principal` holds in the template, for `stack`.
pub async fn as_principal(sdk: &SdkConfig, stack: &LocalStack, principal: Principal) -> SdkConfig {
    let (id, secret) = principal_keys(stack, principal).await;
    with_keys(sdk, &id, &secret)
}

/// Access key and secret of a new IAM user holding what `principal` holds, for `stack`.
pub async fn principal_keys(stack: &LocalStack, principal: Principal) -> (String, String) {
    principal_keys_with(stack, principal, &[]).await
}

/// [`principal_keys`] with template parameters set as a deployment would set them.
pub async fn principal_keys_with(
    stack: &LocalStack,
    principal: Principal,
    params: &[(&str, &str)],
) -> (String, String) {
    iam_user(
        &unique(&format!("{principal:?}-").to_lowercase()),
        &principal_documents_with(stack, principal, params),
    )
    .await
}

/// The resolved policy documents `principal` holds for `stack`.
pub fn principal_documents(stack: &LocalStack, principal: Principal) -> Vec<Value> {
    principal_documents_with(stack, principal, &[])
}

/// [`principal_documents`] with template parameters set.
pub fn principal_documents_with(
    stack: &LocalStack,
    principal: Principal,
    params: &[(&str, &str)],
) -> Vec<Value> {
    let policies = params
        .iter()
        .fold(Policies::new(translated(), stack), |p, (k, v)| {
            p.with_parameter(k, v)
        });
    principal
        .sources()
        .iter()
        .flat_map(|s| policies.documents(s))
        .collect()
}

/// SDK configuration for what `principal` holds, but allowed s3:ListBucket only
/// for `prefixes` (none: no ListBucket at all): the role as a deployment that
/// lacks the listing would run, to which S3 answers 403 for an absent key.
pub async fn as_principal_listing_only(
    sdk: &SdkConfig,
    stack: &LocalStack,
    principal: Principal,
    prefixes: &[&str],
) -> SdkConfig {
    let mut docs = principal_documents(stack, principal);
    for d in &mut docs {
        if let Some(statements) = d["Statement"].as_array_mut() {
            statements.retain_mut(|st| {
                if st["Action"] != "s3:ListBucket" {
                    return true;
                }
                st["Condition"] = json!({"StringLike": {"s3:prefix": prefixes}});
                !prefixes.is_empty()
            });
        }
    }
    let (id, secret) = iam_user(&unique("listing-only-"), &docs).await;
    with_keys(sdk, &id, &secret)
}

/// `sdk` with other static credentials.
pub fn with_keys(sdk: &SdkConfig, id: &str, secret: &str) -> SdkConfig {
    use spigot_aws::aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
    sdk.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            id,
            secret,
            None,
            None,
            "spigot-e2e",
        )))
        .build()
}

/// Every permission the template gives, one `(holder, action, resource)` row
/// each, resources in short names (`bucket/payloads/*`, `Buffer`, `stage`, …)
/// and conditions after the resource: what ARCHITECTURE.md's table lists.
/// Optional statements are included (GitHub credentials and download prefixes set).
pub fn permission_rows(cfn: &Value) -> std::collections::BTreeSet<(String, String, String)> {
    let stack = template_stack();
    let policies = Policies::new(cfn, &stack)
        .with_parameter("GitHubTokenSecretArn", "github-token-secret")
        .with_parameter("GitHubAppKeySecretArn", "github-app-key-secret")
        .with_parameter("AgentDownloadPrefixes", "artifacts/releases/");
    let short = |r: &str| {
        r.replace("arn:aws:s3:::spigot-config", "bucket")
            .replace(&format!("arn:aws:sqs:{REGION}:{ACCOUNT}:"), "")
            .replace(
                &format!("arn:aws:apigateway:{REGION}::/restapis/API/stages/live"),
                "stage",
            )
            .replace(
                &format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:spigot-"),
                "",
            )
            .replace(
                &format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:spigot-"),
                "",
            )
            .replace(
                &format!("arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/spigot/local"),
                "stack",
            )
            .replace(
                &format!("arn:aws:codepipeline:{REGION}:{ACCOUNT}:"),
                "pipeline:",
            )
            .replace(
                &format!("arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/"),
                "",
            )
            .replace("arn:aws:s3:::", "s3:")
    };
    let holders = [
        "ReceiverFunctionRole",
        "DrainerFunctionRole",
        "EvaluatorFunctionRole",
        "FilterResourceFunctionRole",
        "ReconcilerFunctionRole",
        "RelayPolicy",
        "AgentPolicy",
        "RaiserPolicy",
        "OperatorPolicy",
    ];
    let mut rows = std::collections::BTreeSet::new();
    for holder in holders {
        for doc in policies.documents(holder) {
            for st in doc["Statement"].as_array().into_iter().flatten() {
                assert_eq!(st["Effect"], "Allow", "{holder}: {st}");
                let condition = match st.get("Condition") {
                    Some(c) => {
                        let (op, kv) = c.as_object().unwrap().iter().next().unwrap();
                        let (k, v) = kv.as_object().unwrap().iter().next().unwrap();
                        let values = match v {
                            Value::Array(a) => a.iter().map(text_of).collect::<Vec<_>>().join(", "),
                            other => text_of(other),
                        };
                        format!(" if {k} {op} {values}")
                    }
                    None => String::new(),
                };
                for action in as_strings(&st["Action"]) {
                    for resource in as_strings(&st["Resource"]) {
                        rows.insert((
                            holder.trim_end_matches("FunctionRole").to_string(),
                            action.clone(),
                            format!("{}{condition}", short(&resource)),
                        ));
                    }
                }
            }
        }
    }
    rows
}

fn as_strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(text_of).collect(),
        other => vec![text_of(other)],
    }
}
