//! CloudFormation custom resource responses: what to answer, within 4 KB.

use std::collections::BTreeMap;

use serde::Serialize;

/// The largest response body CloudFormation accepts.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// SUCCESS or FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// The resource is in the state asked for.
    Success,
    /// It is not; `Reason` says why.
    Failed,
}

/// The ids a response must echo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestIds {
    /// `StackId`.
    pub stack_id: String,
    /// `RequestId`.
    pub request_id: String,
    /// `LogicalResourceId`.
    pub logical_resource_id: String,
}

/// What a handler decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// SUCCESS or FAILED.
    pub status: Status,
    /// `PhysicalResourceId`.
    pub physical_id: String,
    /// Why it failed (or a note).
    pub reason: Option<String>,
    /// `Data`, readable with `!GetAtt`.
    pub data: BTreeMap<String, String>,
}

impl Outcome {
    /// A success.
    pub fn success(physical_id: impl Into<String>, data: BTreeMap<String, String>) -> Self {
        Self {
            status: Status::Success,
            physical_id: physical_id.into(),
            reason: None,
            data,
        }
    }

    /// A failure.
    pub fn failed(physical_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            status: Status::Failed,
            physical_id: physical_id.into(),
            reason: Some(reason.into()),
            data: BTreeMap::new(),
        }
    }
}

/// The PhysicalResourceId given to a resource whose Create failed: never a filter key,
/// so the Delete CloudFormation sends on rollback touches nothing.
pub fn failed_create_id(request_id: &str) -> String {
    format!("spigot-failed-create-{request_id}")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    status: Status,
    reason: String,
    physical_resource_id: &'a str,
    stack_id: &'a str,
    request_id: &'a str,
    logical_resource_id: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: &'a BTreeMap<String, String>,
}

/// The JSON body to PUT to the ResponseURL: at most [`MAX_RESPONSE_BYTES`],
/// the Reason cut to fit and naming the log stream.
pub fn response_body(ids: &RequestIds, outcome: &Outcome, log_stream: &str) -> String {
    let see = format!(" (see CloudWatch log stream {log_stream})");
    let reason = outcome.reason.clone().unwrap_or_default();
    let render = |reason: String| {
        serde_json::to_string(&Body {
            status: outcome.status,
            reason,
            physical_resource_id: &outcome.physical_id,
            stack_id: &ids.stack_id,
            request_id: &ids.request_id,
            logical_resource_id: &ids.logical_resource_id,
            data: &outcome.data,
        })
        .expect("a response always serialises")
    };
    let full = render(format!("{reason}{see}"));
    if full.len() <= MAX_RESPONSE_BYTES {
        return full;
    }
    // Cut the reason (by characters, JSON escaping included) until the body fits.
    let mut keep = reason.chars().count();
    loop {
        keep = keep.saturating_sub((full.len() - MAX_RESPONSE_BYTES).max(keep / 8).max(16));
        let cut: String = reason.chars().take(keep).collect();
        let body = render(format!("{cut}...{see}"));
        if body.len() <= MAX_RESPONSE_BYTES || keep == 0 {
            return body;
        }
    }
}

/// A `ResponseURL` that is not answered, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing ResponseURL {url:?}: {why}")]
pub struct RefusedUrl {
    /// The URL (its first 120 characters).
    pub url: String,
    /// Why it is refused.
    pub why: &'static str,
}

/// Whether a custom resource's `ResponseURL` may be answered: only over https
/// to CloudFormation's regional S3 response buckets
/// (`cloudformation-custom-resource-response-{region}` on S3's endpoints); with `allow_loopback` (tests only, never set by the
/// template) also `127.0.0.1` / `localhost`. Anything else (the instance
/// metadata address, another host) is refused with the reason.
pub fn check_response_url(url: &str, allow_loopback: bool) -> Result<(), RefusedUrl> {
    let refuse = |why: &'static str| {
        Err(RefusedUrl {
            url: url.chars().take(120).collect(),
            why,
        })
    };
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return refuse("not a URL"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return refuse("credentials in the URL");
    }
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(authority)
        .to_ascii_lowercase();
    let loopback = allow_loopback && (host == "127.0.0.1" || host == "localhost");
    if loopback && (scheme == "http" || scheme == "https") {
        return Ok(());
    }
    if scheme != "https" {
        return refuse("not https");
    }
    if !cloudformation_response_host(&host) {
        return refuse("not one of CloudFormation's regional S3 response hosts");
    }
    Ok(())
}

/// `cloudformation-custom-resource-response-{region}` buckets on S3's
/// endpoints (`s3.amazonaws.com`, `s3.{region}.amazonaws.com`,
/// `s3-{region}.amazonaws.com`, and their `.amazonaws.com.cn` twins): where
/// CloudFormation's pre-signed ResponseURLs point, and nowhere else.
fn cloudformation_response_host(host: &str) -> bool {
    let Some((bucket, endpoint)) = host.split_once('.') else {
        return false;
    };
    let region_like = |r: &str| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let bucket_ok = bucket
        .strip_prefix("cloudformation-custom-resource-response-")
        .is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let Some(s3) = endpoint
        .strip_suffix(".amazonaws.com")
        .or_else(|| endpoint.strip_suffix(".amazonaws.com.cn"))
    else {
        return false;
    };
    let endpoint_ok = s3 == "s3"
        || s3.strip_prefix("s3.").is_some_and(region_like)
        || s3.strip_prefix("s3-").is_some_and(region_like);
    bucket_ok && endpoint_ok
}

/// `Ok` when CloudFormation says stack `stack_id` has the custom resource
/// `logical_id` with an operation in progress: the request then comes from
/// that stack's own create, update or delete, not from someone who invoked
/// the function with a StackId of their choosing.
pub fn check_caller(
    stack_id: &str,
    logical_id: &str,
    found: Option<&crate::ports::StackResource>,
) -> Result<(), NotTheCaller> {
    let (stack, resource) = (stack_id.to_string(), logical_id.to_string());
    let Some(r) = found else {
        return Err(NotTheCaller::NoSuchResource { stack, resource });
    };
    let custom = r.resource_type.starts_with("Custom::")
        || r.resource_type == "AWS::CloudFormation::CustomResource";
    if !custom {
        let kind = r.resource_type.clone();
        return Err(NotTheCaller::NotCustom {
            stack,
            resource,
            kind,
        });
    }
    if !r.status.ends_with("_IN_PROGRESS") {
        let status = r.status.clone();
        return Err(NotTheCaller::Idle {
            stack,
            resource,
            status,
        });
    }
    Ok(())
}

/// Why a request's StackId is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotTheCaller {
    /// The stack has no such resource.
    #[error(
        "stack {stack} has no resource {resource}: the request does not come from that stack's CloudFormation operation"
    )]
    NoSuchResource {
        /// The stack the request names.
        stack: String,
        /// The resource it names.
        resource: String,
    },
    /// The resource is not a custom resource.
    #[error("resource {resource} of stack {stack} is a {kind}, not a custom resource")]
    NotCustom {
        /// The stack the request names.
        stack: String,
        /// The resource it names.
        resource: String,
        /// Its type.
        kind: String,
    },
    /// No operation of the stack is running on it.
    #[error(
        "resource {resource} of stack {stack} is {status}: no operation of that stack is asking"
    )]
    Idle {
        /// The stack the request names.
        stack: String,
        /// The resource it names.
        resource: String,
        /// Its status.
        status: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> RequestIds {
        RequestIds {
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
            request_id: "r-1".into(),
            logical_resource_id: "Filter".into(),
        }
    }

    #[test]
    fn a_success_echoes_the_ids_and_data() {
        let mut data = BTreeMap::new();
        data.insert("Key".into(), "filters/o/r/main/p.json".into());
        let body = response_body(
            &ids(),
            &Outcome::success("filters/o/r/main/p.json", data),
            "2026/11/23/[$LATEST]abc",
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Status"], "SUCCESS");
        assert_eq!(v["RequestId"], "r-1");
        assert_eq!(v["LogicalResourceId"], "Filter");
        assert_eq!(v["PhysicalResourceId"], "filters/o/r/main/p.json");
        assert_eq!(v["Data"]["Key"], "filters/o/r/main/p.json");
    }

    #[test]
    fn a_huge_reason_is_cut_to_fit_and_names_the_log_stream() {
        for reason in ["x".repeat(10_000), "\"\\\u{1F600}".repeat(3000)] {
            let body = response_body(&ids(), &Outcome::failed("id", reason), "stream-7");
            assert!(body.len() <= MAX_RESPONSE_BYTES, "{}", body.len());
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["Status"], "FAILED");
            assert!(
                v["Reason"]
                    .as_str()
                    .unwrap()
                    .ends_with("(see CloudWatch log stream stream-7)")
            );
        }
    }

    #[test]
    fn failed_create_ids_are_not_filter_keys() {
        assert!(!crate::filter::is_filter_key(&failed_create_id("abc")));
    }

    #[test]
    fn response_urls_go_only_to_aws_over_https() {
        for ok in [
            "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/arn%3A...?X-Amz-Signature=a",
            "https://cloudformation-custom-resource-response-cnnorth1.s3.cn-north-1.amazonaws.com.cn/x",
            "https://cloudformation-custom-resource-response-euwest1.s3-eu-west-1.amazonaws.com:443/x",
        ] {
            assert_eq!(check_response_url(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.169.254/x",
            "http://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x",
            "https://evil.example.com/x",
            "https://amazonaws.com.evil.example/x",
            "https://s3.amazonaws.com@evil.example/x",
            "https://evilamazonaws.com/x",
            // Any other bucket or AWS host: anyone can own an S3 bucket.
            "https://bucket.s3.us-east-1.amazonaws.com/x",
            "https://attacker-bucket.s3.amazonaws.com/x",
            "https://cloudformation-custom-resource-response-useast1.execute-api.amazonaws.com/x",
            "https://x.cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x",
            "http://127.0.0.1:9/response",
            "ftp://x.amazonaws.com/",
            "not a url",
        ] {
            assert!(check_response_url(bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            check_response_url("http://127.0.0.1:9/response", true),
            Ok(())
        );
        assert!(check_response_url("http://169.254.169.254/", true).is_err());
    }
}

#[cfg(test)]
mod caller_tests {
    use super::*;
    use crate::ports::StackResource;

    #[test]
    fn only_a_custom_resource_in_progress_of_the_named_stack_passes() {
        let r = |t: &str, s: &str| StackResource {
            resource_type: t.into(),
            status: s.into(),
        };
        let stack = "arn:aws:cloudformation:us-east-1:123456789012:stack/team/1";
        assert!(
            check_caller(
                stack,
                "F",
                Some(&r("Custom::PipelineFilter", "CREATE_IN_PROGRESS"))
            )
            .is_ok()
        );
        assert!(
            check_caller(
                stack,
                "F",
                Some(&r(
                    "AWS::CloudFormation::CustomResource",
                    "DELETE_IN_PROGRESS"
                ))
            )
            .is_ok()
        );
        assert!(
            check_caller(stack, "F", None)
                .unwrap_err()
                .to_string()
                .contains("has no resource F")
        );
        assert!(
            check_caller(
                stack,
                "F",
                Some(&r("AWS::SQS::Queue", "CREATE_IN_PROGRESS"))
            )
            .unwrap_err()
            .to_string()
            .contains("not a custom resource")
        );
        assert!(
            check_caller(
                stack,
                "F",
                Some(&r("Custom::PipelineFilter", "CREATE_COMPLETE"))
            )
            .unwrap_err()
            .to_string()
            .contains("no operation")
        );
    }
}
