//! `spigot filters`: put, test, list, delete, and `spigot dev`'s evaluation.

use crate::prelude::*;

#[tokio::test(flavor = "multi_thread")]
async fn dev_evaluates_pushes_against_filters_and_says_what_it_would_start() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    let stack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".spigot/dev.json")).unwrap())
            .unwrap();
    let spec = spigot_core::filter::FilterSpec::from_json(
        br#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Pipeline": "hello-pipeline"}"#,
    )
    .unwrap();
    spigot_aws::s3_client(&sdk().await)
        .put_object()
        .bucket(stack["bucket"].as_str().unwrap())
        .key(spec.key())
        .body(spec.to_json().into_bytes().into())
        .send()
        .await
        .unwrap();
    let (status, _) = post(&url, "cli-eval", &fixture("push.json"), SECRET).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::fs::read_to_string(dir.join("dev.out")).unwrap();
        if out.contains("would start hello-pipeline for Codertocat/Hello-World@master") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev did not evaluate the push: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_put_validates_and_test_explains() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let examples = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(dir.join("bad.json"), r#"{"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "p", "Syntax": "regex", "Include": ["services/(a"]}"#).unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put", "bad.json", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a valid regex: unclosed group at position 9"),
        "{err}"
    );
    let listed = spigot_aws::s3_client(&sdk)
        .list_objects_v2()
        .bucket(stack.get(Resource::Bucket))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "nothing written");

    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "put",
            &format!("{examples}/filters/billing.json"),
            "--local",
        ])
        .output()
        .unwrap();
    succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "filters/octo-org/mono/main/billing-service.json"
    );
    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "list", "--local"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("billing-service"));

    // Dry run against the bucket...
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "test",
            "--event",
            &format!("{examples}/push-mono.json"),
            "--local",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("START billing-service"), "{text}");
    // ...and against local files.
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "test",
            "--event",
            &format!("{examples}/push-mono.json"),
        ])
        .args(["--filter", &format!("{examples}/filters/billing.json")])
        .args(["--filter", &format!("{examples}/filters/web.json")])
        .args(["--filter", &format!("{examples}/filters/legacy.json")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    succeeded(&out);
    assert!(
        text.contains("push to octo-org/mono@main: 4 changed path(s)"),
        "{text}"
    );
    let line = |pipeline: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(pipeline))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        line("billing-service"),
        "START billing-service libs/common/src/money.rs matches libs/common/**"
    );
    assert_eq!(
        line("web-frontend"),
        "skip web-frontend no changed path included, or all excluded"
    );
    assert_eq!(
        line("docs-site"),
        "START docs-site docs/billing.md matches ^docs/"
    );

    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "delete", "payloads/x", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "delete",
            "filters/octo-org/mono/main/billing-service.json",
            "--local",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// The local stack `spigot dev` wrote in `dir`.
/// `filters put` checks a new filter against its repository's whole set.
#[tokio::test(flavor = "multi_thread")]
async fn filters_put_refuses_a_filter_that_does_not_fit_with_the_others() {
    let dir = workdir();
    let _ = local_stack(&dir, None).await;
    let write = |name: &str| {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(
            &path,
            serde_json::json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": name, "Syntax": "regex", "Include": ["\\w{200}"]})
                .to_string(),
        )
        .unwrap();
        path
    };
    let first = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put", "--local"])
        .arg(write("wide-1"))
        .output()
        .unwrap();
    succeeded(&first);
    let second = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put", "--local"])
        .arg(write("wide-2"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("wide-2") && err.contains("does not fit"),
        "{err}"
    );
    let listed = spigot_as(&dir, Principal::Operator)
        .args(["filters", "list", "--local", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&listed.stdout)
            .unwrap()
            .len(),
        1,
        "nothing written"
    );
}

/// `spigot filters test` reasons as the evaluator does, including files
/// from the compare API for an incomplete push.
#[tokio::test(flavor = "multi_thread")]
async fn filters_test_shows_files_from_the_compare_api() {
    let dir = workdir();
    let gh = FakeGitHub::start(&["services/billing/x.rs"], 100).await;
    let push = dir.join("forced.json");
    std::fs::write(
        &push,
        serde_json::json!({"ref": "refs/heads/main", "before": "b0", "after": "a1", "forced": true,
            "repository": {"full_name": "octo-org/mono"}, "commits": []})
        .to_string(),
    )
    .unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/filters");
    let run = |token: Option<&str>| {
        let mut c = spigot_as(&dir, Principal::Operator);
        c.args(["filters", "test", "--event"]).arg(&push);
        for f in std::fs::read_dir(examples).unwrap() {
            c.arg("--filter").arg(f.unwrap().path());
        }
        c.env("GITHUB_API_URL", &gh.url)
            .env("GITHUB_API_ALLOW_HTTP", "true")
            .env_remove("GITHUB_TOKEN");
        if let Some(t) = token {
            c.env("GITHUB_TOKEN", t);
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let with = run(Some("t0ken"));
    assert!(with.contains("1 files from the compare API"), "{with}");
    assert!(with.contains("START billing-service"), "{with}");
    assert!(
        with.lines().any(|l| l.starts_with("skip ")),
        "only the matching pipeline starts: {with}"
    );
    let without = run(None);
    assert!(without.contains("no GitHub credentials"), "{without}");
    assert!(
        !without.lines().any(|l| l.starts_with("skip ")),
        "every pipeline of the branch starts: {without}"
    );
}

/// The README's pipeline step, and counts people can read.
#[tokio::test(flavor = "multi_thread")]
async fn filters_say_when_none_apply_and_count_themselves() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = |args: &[&str]| spigot(&dir).args(args).arg("--local").output().unwrap();
    let out = run(&["filters", "list"]);
    assert!(
        text(&out).0.trim_end().ends_with("0 filters"),
        "{}",
        text(&out).0
    );
    let mono = format!("{root}/examples/push-mono.json");
    let out = run(&["filters", "test", "--event", &mono]);
    assert!(
        text(&out).0.contains("no filter for octo-org/mono@main"),
        "{}",
        text(&out).0
    );
    let out = run(&[
        "filters",
        "put",
        &format!("{root}/examples/filters/billing.json"),
    ]);
    succeeded(&out);
    let out = run(&["filters", "list"]);
    assert!(
        text(&out).0.trim_end().ends_with("1 filter"),
        "{}",
        text(&out).0
    );
    let out = run(&["filters", "test", "--event", &mono]);
    let stdout = text(&out).0;
    assert!(
        stdout.contains("START billing-service") && !stdout.contains("no filter"),
        "{stdout}"
    );
}

/// Text from a push reaches the terminal without its escapes.
#[test]
fn filters_test_prints_untrusted_text_without_terminal_escapes() {
    let dir = workdir();
    let mut push: serde_json::Value = serde_json::from_slice(&fixture("push.json")).unwrap();
    push["ref"] = serde_json::json!("refs/heads/main\u{1b}[2J\u{1b}]0;pwned\u{7}");
    let file = dir.join("push.json");
    std::fs::write(&file, push.to_string()).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/filters");
    let mut c = spigot(&dir);
    c.args(["filters", "test", "--event"]).arg(&file);
    for f in std::fs::read_dir(examples).unwrap() {
        c.arg("--filter").arg(f.unwrap().path());
    }
    let out = c.env_remove("GITHUB_TOKEN").output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("@main [2J ]0;pwned "), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
        "{stdout:?}"
    );
}

/// `filters put` refuses to replace a filter a stack owns unless
/// `--force`, and a file cannot claim a stack's ownership.
#[tokio::test(flavor = "multi_thread")]
async fn filters_put_leaves_a_stack_owned_filter_alone_unless_forced() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let examples = format!(
        "{}/../../examples/filters/billing.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let key = "filters/octo-org/mono/main/billing-service.json";
    let put = |extra: &[&str]| {
        spigot_as(&dir, Principal::Operator)
            .args(["filters", "put", &examples, "--local"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Control: an unowned filter is written (and written again).
    assert!(put(&[]).status.success());
    assert!(put(&[]).status.success());
    // The stack's custom resource owns it now.
    let s3 = spigot_aws::s3_client(&sdk);
    let bucket = stack.get(Resource::Bucket);
    let mut owned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&examples).unwrap()).unwrap();
    let arn = "arn:aws:cloudformation:us-east-1:123456789012:stack/billing/1";
    owned["OwnerStack"] = serde_json::json!(arn);
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(owned.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let out = put(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is owned by stack") && err.contains("--force"),
        "{err}"
    );
    let stored = |s3: spigot_aws::aws_sdk_s3::Client| async move {
        let got = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    assert_eq!(stored(s3.clone()).await["OwnerStack"], arn, "left alone");
    let out = put(&["--force"]);
    succeeded(&out);
    assert!(stored(s3.clone()).await.get("OwnerStack").is_none());
    // A file that names an owner does not make one.
    let claim = dir.join("claim.json");
    std::fs::write(&claim, owned.to_string()).unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put"])
        .arg(&claim)
        .arg("--local")
        .output()
        .unwrap();
    succeeded(&out);
    assert!(stored(s3).await.get("OwnerStack").is_none());
}

/// `filters test` is a CI check that can fail: a broken filter
/// file exits 2 naming the file and the error (it used to be skipped, exit 0),
/// and it applies the evaluator's MAX_PUSH_AGE: GitHub's 2019 sample push
/// starts nothing, saying why. Controls: a good file and `--max-push-age 0`
/// (no limit) start the pipeline.
#[test]
fn filters_test_fails_on_a_broken_filter_and_applies_max_push_age() {
    let dir = workdir();
    let push = dir.join("push.json");
    std::fs::write(&push, fixture("push.json")).unwrap();
    let good = dir.join("hello.json");
    std::fs::write(
        &good,
        r#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Pipeline": "hello"}"#,
    )
    .unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Pipelin": "hello"}"#,
    )
    .unwrap();
    let run = |filters: &[&PathBuf], age: Option<&str>| {
        let mut c = spigot(&dir);
        c.args(["filters", "test", "--event"])
            .arg(&push)
            .env_remove("GITHUB_TOKEN")
            .env_remove("MAX_PUSH_AGE");
        for f in filters {
            c.arg("--filter").arg(f);
        }
        if let Some(a) = age {
            c.args(["--max-push-age", a]);
        }
        c.output().unwrap()
    };
    let broken = run(&[&good, &bad], Some("0"));
    assert_eq!(broken.status.code(), Some(2));
    let err = text(&broken).1;
    assert!(err.contains("bad.json") && err.contains("Pipelin"), "{err}");
    let old = run(&[&good], None);
    assert!(old.status.success());
    let out = text(&old).0;
    assert!(
        out.contains("too old (pushed 2019-05-15T15:20:57Z") && !out.contains("START"),
        "{out}"
    );
    let unlimited = run(&[&good], Some("0"));
    assert!(
        text(&unlimited).0.contains("START hello"),
        "{}",
        text(&unlimited).0
    );
}

/// A filter on a glob branch is deleted by its file or by
/// `--pipeline`, not only by its percent-encoded key; a pipeline no filter
/// starts exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn filters_delete_by_file_or_pipeline() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let file = dir.join("release.json");
    std::fs::write(
        &file,
        r#"{"Repository": "octo-org/mono", "Branch": "release/*", "Pipeline": "rel"}"#,
    )
    .unwrap();
    let op = |args: &[&str]| {
        spigot_as(&dir, Principal::Operator)
            .arg("filters")
            .args(args)
            .arg("--local")
            .output()
            .unwrap()
    };
    let listed = |dir: &PathBuf| {
        let out = spigot_as(dir, Principal::Operator)
            .args(["filters", "list", "--local"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("release/*")
    };
    let path = file.to_str().unwrap();
    assert!(op(&["put", path]).status.success());
    assert!(listed(&dir));
    let by_file = op(&["delete", path]);
    succeeded(&by_file);
    assert!(
        text(&by_file).0.contains("release%2F%2A"),
        "{}",
        text(&by_file).0
    );
    assert!(!listed(&dir));
    assert!(op(&["put", path]).status.success());
    let by_pipeline = op(&["delete", "--pipeline", "rel", "--repo", "octo-org/mono"]);
    succeeded(&by_pipeline);
    assert!(!listed(&dir));
    let none = op(&["delete", "--pipeline", "rel"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none).1.contains("no filter starts rel"),
        "{}",
        text(&none).1
    );
}
