//! Shared inputs of the benchmarks.

use serde_json::json;

/// A GitHub-shaped push payload of about `bytes` bytes.
pub fn push_of_size(bytes: usize) -> Vec<u8> {
    let mut commits = Vec::new();
    let mut i = 0;
    loop {
        let body = json!({
            "ref": "refs/heads/main", "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "created": false, "deleted": false, "forced": false,
            "repository": {"id": 1296269, "name": "mono", "full_name": "octo-org/mono", "private": true,
                           "owner": {"login": "octo-org", "id": 1}, "html_url": "https://github.com/octo-org/mono"},
            "pusher": {"name": "octocat", "email": "octocat@github.com"},
            "commits": commits,
        })
        .to_string();
        if body.len() >= bytes {
            return body.into_bytes();
        }
        commits.push(json!({
            "id": format!("{i:040x}"), "message": "Fix the rounding of invoices in the billing service",
            "timestamp": "2026-11-23T10:00:00Z", "author": {"name": "Octo Cat", "email": "octocat@github.com"},
            "added": [format!("services/billing/src/new_{i}.rs")], "removed": [],
            "modified": ["services/billing/README.md", "libs/common/src/money.rs"],
        }));
        i += 1;
    }
}

/// Headers GitHub sends with a push.
pub fn headers(signature: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("User-Agent", "GitHub-Hookshot/044aadd".into()),
        ("X-GitHub-Event", "push".into()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
        ),
        ("X-GitHub-Hook-ID", "292430182".into()),
        ("X-Hub-Signature-256", signature.to_string()),
    ]
}

/// The receiver's hot path: verify, read headers, build and encode the envelope.
pub fn receive(
    verifier: &spigot_core::Verifier,
    headers: &[(&str, String)],
    body: &[u8],
) -> String {
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    verifier
        .verify(body, find("x-hub-signature-256"), find("x-hub-signature"))
        .expect("valid signature");
    let hook = spigot_core::Hook::read(
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        body.to_vec(),
        0,
    )
    .expect("a hook");
    spigot_core::Envelope::from_hook(&hook).encode()
}
pub mod simulated;
