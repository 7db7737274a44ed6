use super::*;
use serde_json::json;

fn filter(v: Value) -> Filter {
    FilterSpec::from_map(v.as_object().unwrap().clone())
        .unwrap()
        .compile()
        .unwrap()
}

fn push(git_ref: &str, added: &[&str], modified: &[&str], removed: &[&str]) -> Vec<u8> {
    json!({
        "ref": git_ref, "before": "a", "after": "b",
        "repository": {"name": "mono", "full_name": "octo-org/mono"},
        "commits": [{"added": added, "modified": modified, "removed": removed}],
    })
    .to_string()
    .into_bytes()
}

/// Names of the pipelines `set` starts for `payload`.
fn started(set: &FilterSet, payload: &[u8]) -> Vec<String> {
    let p = Push::parse(payload).unwrap();
    set.evaluate(&p)
        .into_iter()
        .filter(|d| d.start)
        .map(|d| set.filters[d.filter].spec.pipeline.clone())
        .collect()
}

fn mono() -> FilterSet {
    set_of(vec![
        filter(
            json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-a", "Include": ["services/a/**"], "Exclude": ["**/*.md"]}),
        ),
        filter(
            json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-b", "Include": ["services/b/**", "libs/common/**"], "Exclude": ["**/*.md"]}),
        ),
    ])
}

#[test]
fn mono_repo_starts_only_the_pipeline_whose_paths_changed() {
    let set = mono();
    assert_eq!(
        started(
            &set,
            &push("refs/heads/main", &[], &["services/a/src/lib.rs"], &[])
        ),
        ["svc-a"]
    );
    assert_eq!(
        started(
            &set,
            &push("refs/heads/main", &["services/b/x.py"], &[], &[])
        ),
        ["svc-b"]
    );
    assert_eq!(
        started(
            &set,
            &push(
                "refs/heads/main",
                &[],
                &["libs/common/x", "services/a/y"],
                &[]
            )
        ),
        ["svc-a", "svc-b"]
    );
    assert!(started(&set, &push("refs/heads/main", &[], &["services/c/x"], &[])).is_empty());
}

#[test]
fn docs_only_change_is_excluded() {
    let set = mono();
    assert!(
        started(
            &set,
            &push(
                "refs/heads/main",
                &[],
                &["services/a/README.md", "services/b/docs/x.md"],
                &[]
            )
        )
        .is_empty()
    );
    // Excludes win per path: a code change next to a doc change still starts.
    assert_eq!(
        started(
            &set,
            &push(
                "refs/heads/main",
                &[],
                &["services/a/README.md", "services/a/x.rs"],
                &[]
            )
        ),
        ["svc-a"]
    );
}

#[test]
fn branch_names_keep_their_slashes() {
    let set = set_of(vec![filter(
        json!({"Repository": "octo-org/mono", "Branch": "feature/x/y", "Pipeline": "p"}),
    )]);
    assert_eq!(
        started(&set, &push("refs/heads/feature/x/y", &["a"], &[], &[])),
        ["p"]
    );
    assert!(started(&set, &push("refs/heads/y", &["a"], &[], &[])).is_empty());
    assert!(started(&set, &push("refs/heads/feature/x", &["a"], &[], &[])).is_empty());
}

#[test]
fn branch_globs() {
    let set = set_of(vec![filter(
        json!({"Repository": "octo-org/mono", "Branch": "release/*", "Pipeline": "rel"}),
    )]);
    assert_eq!(
        started(&set, &push("refs/heads/release/1.2", &["a"], &[], &[])),
        ["rel"]
    );
    assert!(started(&set, &push("refs/heads/release", &["a"], &[], &[])).is_empty());
    assert!(started(&set, &push("refs/heads/main", &["a"], &[], &[])).is_empty());
}

#[test]
fn deleted_branches_and_tags_never_trigger() {
    let set = set_of(vec![filter(
        json!({"Repository": "octo-org/mono", "Branch": "*", "Pipeline": "p"}),
    )]);
    let mut deleted: Value =
        serde_json::from_slice(&push("refs/heads/main", &[], &[], &[])).unwrap();
    deleted["deleted"] = json!(true);
    deleted["commits"] = json!([]);
    let p = deleted.to_string();
    let d = set.evaluate(&Push::parse(p.as_bytes()).unwrap());
    assert_eq!((d[0].start, &d[0].why), (false, &Why::Deleted));
    let tag = push("refs/tags/v1.0", &["a"], &[], &[]);
    let d = set.evaluate(&Push::parse(&tag).unwrap());
    assert_eq!((d[0].start, &d[0].why), (false, &Why::Tag));
}

#[test]
fn github_example_tag_pushes_do_not_trigger() {
    let set = set_of(vec![filter(
        json!({"Repository": "Codertocat/Hello-World", "Branch": "*", "Pipeline": "p"}),
    )]);
    for f in ["push-tag.json", "push-tag-deleted.json"] {
        let bytes = std::fs::read(format!(
            "{}/../../tests/fixtures/{f}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert!(started(&set, &bytes).is_empty(), "{f}");
    }
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/push.json"
    ))
    .unwrap();
    assert_eq!(started(&set, &bytes), ["p"]);
}

#[test]
fn commit_lists_at_the_cap_match_on_repository_and_branch() {
    let set = mono();
    let commits: Vec<Value> = (0..2048)
        .map(|_| json!({"added": [], "modified": ["docs/x.md"], "removed": []}))
        .collect();
    let p = json!({"ref": "refs/heads/main", "repository": {"full_name": "octo-org/mono"}, "commits": commits}).to_string();
    let decisions = set.evaluate(&Push::parse(p.as_bytes()).unwrap());
    assert!(
        decisions
            .iter()
            .all(|d| d.start && matches!(d.why, Why::Conservative(r) if r.contains("cap of 2,048")))
    );
}

#[test]
fn a_new_branch_without_commits_matches_conservatively() {
    let set = set_of(vec![filter(
        json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "p", "Include": ["x/**"]}),
    )]);
    let p = json!({"ref": "refs/heads/main", "created": true, "repository": {"full_name": "octo-org/mono"}, "commits": []}).to_string();
    let d = set.evaluate(&Push::parse(p.as_bytes()).unwrap());
    assert!(d[0].start);
    assert!(d[0].why.to_string().contains("new branch"));
}

#[test]
fn a_change_only_in_removed_counts() {
    let set = mono();
    assert_eq!(
        started(
            &set,
            &push("refs/heads/main", &[], &[], &["services/b/old.py"])
        ),
        ["svc-b"]
    );
}

#[test]
fn legacy_filters_match_like_python_re_match() {
    let legacy = filter(
        json!({"GitHubRepo": "octo-org/mono", "GitHubBranch": "main",
                               "ChangeMatchExpressions": "^src/,docs/", "CodePipelineName": "legacy"}),
    );
    assert_eq!(legacy.syntax, Syntax::Regex);
    assert_eq!(legacy.spec.include, ["^src/", "docs/"]);
    let set = set_of(vec![legacy]);
    // re.match anchors at the start only: a prefix is enough, a match in the middle is not.
    for (path, want) in [
        ("src/app.py", true),
        ("docs/index.md", true),
        ("docs/", true),
        ("lib/src/x", false),
        ("mydocs/x", false),
        ("README", false),
    ] {
        let got = !started(&set, &push("refs/heads/main", &[path], &[], &[])).is_empty();
        assert_eq!(got, want, "{path}");
    }
}

#[test]
fn regex_filters_are_anchored_at_the_start() {
    let set = set_of(vec![filter(
        json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "p", "Syntax": "regex", "Include": ["services/(a|b)/"], "Exclude": [".*\\.md$"]}),
    )]);
    assert_eq!(
        started(&set, &push("refs/heads/main", &["services/a/x"], &[], &[])),
        ["p"]
    );
    assert!(
        started(
            &set,
            &push("refs/heads/main", &["x/services/a/x"], &[], &[])
        )
        .is_empty()
    );
    assert!(
        started(
            &set,
            &push("refs/heads/main", &["services/a/x.md"], &[], &[])
        )
        .is_empty()
    );
}

#[test]
fn no_include_means_any_change() {
    let set = set_of(vec![filter(
        json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "p", "Exclude": ["**/*.md"]}),
    )]);
    assert_eq!(
        started(
            &set,
            &push("refs/heads/main", &["anything/at/all"], &[], &[])
        ),
        ["p"]
    );
    assert!(started(&set, &push("refs/heads/main", &["README.md"], &[], &[])).is_empty());
}

#[test]
fn other_repositories_do_not_match() {
    let set = mono();
    let p = json!({"ref": "refs/heads/main", "repository": {"full_name": "octo-org/other"}, "commits": [{"added": ["services/a/x"]}]}).to_string();
    assert!(started(&set, p.as_bytes()).is_empty());
}

#[test]
fn keys_never_collide_or_truncate() {
    let long = "a".repeat(90);
    let a = FilterSpec::from_json(json!({"Repository": format!("octo-org/{long}-service-one"), "Branch": "main", "Pipeline": "p"}).to_string().as_bytes()).unwrap();
    let b = FilterSpec::from_json(json!({"Repository": format!("octo-org/{long}-service-two"), "Branch": "main", "Pipeline": "p"}).to_string().as_bytes()).unwrap();
    assert_ne!(a.key(), b.key());
    assert!(a.key().ends_with("-service-one/main/p.json"), "{}", a.key());
    let slash = FilterSpec {
        branch: "feature/x".into(),
        ..a.clone()
    };
    let flat = FilterSpec {
        branch: "feature%2Fx".into(),
        ..a.clone()
    };
    assert_ne!(slash.key(), flat.key());
    assert!(slash.key().contains("/feature%2Fx/"));
    assert!(is_filter_key(&slash.key()));
    assert!(
        slash
            .key()
            .starts_with(&repository_prefix(&slash.repository))
    );
    assert!(!is_filter_key("payloads/x"));
    assert!(!is_filter_key("filters/../x/y/z.json"));
    assert!(!is_filter_key("filters/a/b/c.json"));
}

#[test]
fn validation_reports_every_problem_clearly() {
    let err = FilterSpec::from_json(br#"{"Repository": "mono", "Branch": "", "Pipeline": "", "Syntax": "regex", "Include": ["src/(", "ok"]}"#)
        .unwrap()
        .compile()
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 4, "{text}");
    assert!(text.contains("must be owner/name"), "{text}");
    assert!(text.contains("Branch must not be empty"), "{text}");
    assert!(text.contains("Pipeline \"\""), "{text}");
    assert!(
        matches!(
            &err.0[3],
            Problem::Regex {
                index: 0,
                position: 4,
                ..
            }
        ),
        "{:?}",
        err.0[3]
    );
    assert!(
        text.contains("Include[0] \"src/(\" is not a valid regex"),
        "{text}"
    );

    let glob_err = FilterSpec::from_json(
        br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "p", "Include": ["a/{b"]}"#,
    )
    .unwrap()
    .compile()
    .unwrap_err();
    assert!(
        glob_err
            .to_string()
            .contains("Include[0] \"a/{b\" is not a valid glob"),
        "{glob_err}"
    );

    let unknown = FilterSpec::from_json(
        br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "p", "Branches": ["x"]}"#,
    )
    .unwrap_err();
    assert!(
        unknown.to_string().contains("unknown field `Branches`"),
        "{unknown}"
    );
    assert!(FilterSpec::from_json(b"[1]").is_err());
    assert!(FilterSpec::from_json(b"nope").is_err());
    let syntax = FilterSpec::from_json(
        br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "p", "Syntax": "sql"}"#,
    )
    .unwrap()
    .compile()
    .unwrap_err();
    assert!(syntax.to_string().contains("glob or regex"));
}

#[test]
fn stored_json_round_trips() {
    let spec = FilterSpec::from_json(br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "p", "Include": ["a/**"], "SourceAction": "Source"}"#).unwrap();
    assert_eq!(
        FilterSpec::from_json(spec.to_json().as_bytes()).unwrap(),
        spec
    );
}

proptest::proptest! {
    #[test]
    fn validation_of_arbitrary_strings_never_panics(repo in ".{0,30}", branch in ".{0,30}", pipeline in ".{0,30}", pat in ".{0,30}", regex in proptest::bool::ANY) {
        let spec = FilterSpec {
            repository: repo, branch, pipeline,
            include: vec![pat.clone()], exclude: vec![pat],
            syntax: Some(if regex { "regex" } else { "glob" }.into()),
            source_action: None,
            owner_stack: None,
            trigger: None,
        };
        let _ = spec.key();
        if let Ok(f) = spec.compile() {
            let set = set_of(vec![f]);
            let p = push("refs/heads/main", &["a/b"], &[], &[]);
            let _ = set.evaluate(&Push::parse(&p).unwrap());
        }
    }

    #[test]
    fn filter_json_of_arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = FilterSpec::from_json(s.as_bytes()).map(|f| f.compile());
    }
}

/// A set of filters that all fit.
fn set_of(filters: Vec<Filter>) -> FilterSet {
    let (set, unfit) = FilterSet::new(filters);
    assert!(unfit.is_empty(), "{unfit:?}");
    set
}

#[test]
fn patterns_valid_alone_that_do_not_fit_together_leave_the_others_working() {
    let wide = |pipeline: &str| {
        FilterSpec::from_json(
            format!(r#"{{"Repository": "o/r", "Branch": "main", "Pipeline": "{pipeline}", "Syntax": "regex", "Include": ["\\w{{200}}"]}}"#)
                .as_bytes(),
        )
        .unwrap()
        .compile()
        .unwrap()
    };
    let small = FilterSpec::from_json(
        br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "docs", "Include": ["docs/**"]}"#,
    )
    .unwrap()
    .compile()
    .unwrap();
    // Each valid alone; the pair exceeds the compiled-size limit together.
    let (set, unfit) = FilterSet::new(vec![wide("one"), wide("two"), small.clone()]);
    assert_eq!(unfit.len(), 1, "{unfit:?}");
    assert!(
        unfit[0].reason.contains("two") && unfit[0].reason.contains("does not fit"),
        "{}",
        unfit[0].reason
    );
    assert_eq!(set.filters.len(), 2);
    let push = Push::parse(br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"},"commits":[{"added":["docs/a.md"],"modified":[],"removed":[]}]}"#).unwrap();
    let started: Vec<&str> = set
        .evaluate(&push)
        .iter()
        .filter(|d| d.start)
        .map(|d| set.filters[d.filter].spec.pipeline.as_str())
        .collect();
    assert_eq!(started, ["docs"]);
    // `filters put` and the custom resource ask first.
    let refused = FilterSet::admits(vec![wide("one"), small.clone()], wide("two")).unwrap_err();
    assert!(refused.reason.contains("two"));
    assert!(FilterSet::admits(vec![wide("one")], small).is_ok());
}

#[test]
fn caps_on_patterns_are_validation_errors() {
    let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("\"p{i}/**\"")).collect();
    let spec = format!(
        r#"{{"Repository": "o/r", "Branch": "main", "Pipeline": "p", "Include": [{}]}}"#,
        many.join(",")
    );
    let e = FilterSpec::from_json(spec.as_bytes())
        .unwrap()
        .compile()
        .unwrap_err();
    assert!(e.to_string().contains("at most 50"), "{e}");
    let long = format!(
        r#"{{"Repository": "o/r", "Branch": "main", "Pipeline": "p", "Include": ["{}"]}}"#,
        "a".repeat(MAX_PATTERN_LEN + 1)
    );
    let e = FilterSpec::from_json(long.as_bytes())
        .unwrap()
        .compile()
        .unwrap_err();
    assert!(
        e.to_string().contains("Include[0] is 257 characters long"),
        "{e}"
    );
}

#[test]
fn a_25_commit_push_touching_only_docs_starts_nothing() {
    let commits: Vec<String> = (0..25)
        .map(|i| format!(r#"{{"added":["docs/{i}.md"],"modified":[],"removed":[]}}"#))
        .collect();
    let payload = format!(
        r#"{{"ref":"refs/heads/main","repository":{{"full_name":"o/r"}},"commits":[{}]}}"#,
        commits.join(",")
    );
    let push = Push::parse(payload.as_bytes()).unwrap();
    let services = FilterSpec::from_json(br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "svc", "Include": ["services/**"]}"#)
        .unwrap()
        .compile()
        .unwrap();
    let docs = FilterSpec::from_json(
        br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "docs", "Include": ["docs/**"]}"#,
    )
    .unwrap()
    .compile()
    .unwrap();
    let set = set_of(vec![services, docs]);
    let d = set.evaluate(&push);
    assert!(!d[0].start, "{}", d[0].why);
    assert!(d[1].start, "positive control: {}", d[1].why);
}

#[test]
fn a_filter_raises_one_trigger_or_starts_one_pipeline() {
    let spec = |extra: &str| {
        FilterSpec::from_json(
            format!(r#"{{"Repository": "octo-org/mono", "Branch": "main"{extra}}}"#).as_bytes(),
        )
        .unwrap()
    };
    let raising = spec(r#", "Trigger": "web""#).compile().unwrap();
    assert_eq!(raising.spec.action(), Action::Trigger("web"));
    assert_eq!(
        raising.spec.key(),
        "filters/octo-org/mono/main/trigger%3Aweb.json"
    );
    assert!(is_filter_key(&raising.spec.key()));
    let starting = spec(r#", "Pipeline": "web""#).compile().unwrap();
    assert_eq!(starting.spec.action(), Action::Pipeline("web"));
    assert_ne!(raising.spec.key(), starting.spec.key());
    let problems = |extra: &str| spec(extra).compile().unwrap_err().0;
    assert_eq!(
        problems(r#", "Pipeline": "p", "Trigger": "web""#),
        [Problem::PipelineAndTrigger]
    );
    assert_eq!(problems(""), [Problem::Pipeline(String::new())]);
    assert_eq!(
        problems(r#", "Trigger": "../prod""#),
        [Problem::Trigger("../prod".into())]
    );
    assert_eq!(
        problems(r#", "Trigger": "web", "SourceAction": "Source""#),
        [Problem::SourceActionOnTrigger]
    );
    // Written back, a trigger filter reads the same.
    let back = FilterSpec::from_json(raising.spec.to_json().as_bytes()).unwrap();
    assert_eq!(back, raising.spec);
    assert!(!raising.spec.to_json().contains("Pipeline"));
}

/// Every unknown field is reported at once, each with the field it
/// was probably meant to be.
#[test]
fn unknown_fields_are_all_reported_with_a_suggestion() {
    let err = FilterSpec::from_json(
        br#"{"repository": "o/r", "Branch": "main", "Pipelin": "p", "Colour": "red"}"#,
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    assert!(
        text.contains("unknown field `repository` (did you mean Repository?)"),
        "{text}"
    );
    assert!(
        text.contains("unknown field `Pipelin` (did you mean Pipeline?)"),
        "{text}"
    );
    assert!(
        text.contains("unknown field `Colour`; a filter has"),
        "{text}"
    );
    // Control: the same filter spelled right reads.
    assert!(
        FilterSpec::from_json(br#"{"Repository": "o/r", "Branch": "main", "Pipeline": "p"}"#)
            .is_ok()
    );
}
