//! The SQS buffer adapter against a local endpoint speaking SQS's JSON
//! protocol (moto cannot be made to fail some entries of a batch).

use spigot_core::ports::Buffer;
use spigot_e2e::*;

/// DeleteMessageBatch that fails the entries whose receipt contains `flaky`
/// the first `times` times it sees them.
async fn sqs_failing_entries(times: usize) -> FakeAws {
    let aws = FakeAws::start().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    aws.on("AmazonSQS.DeleteMessageBatch", move |call| {
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for e in call.json["Entries"].as_array().unwrap() {
            let id = e["Id"].clone();
            if e["ReceiptHandle"].as_str().unwrap().contains("flaky") {
                let mut n = seen.lock().unwrap();
                if *n < times {
                    *n += 1;
                    failed.push(serde_json::json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "try again"}));
                    continue;
                }
            }
            ok.push(serde_json::json!({"Id": id}));
        }
        let body = serde_json::json!({"Successful": ok, "Failed": failed});
        Some((200, "application/x-amz-json-1.0", body.to_string()))
    });
    aws
}

fn buffer(url: &str, sdk: &spigot_aws::aws_config::SdkConfig) -> spigot_aws::SqsBuffer {
    spigot_aws::SqsBuffer::new(
        spigot_aws::aws_sdk_sqs::Client::new(sdk),
        format!("{url}/123456789012/b.fifo"),
        format!("{url}/123456789012/d.fifo"),
    )
}

/// The entries a batch delete failed are tried again; only they.
#[tokio::test(flavor = "multi_thread")]
async fn a_partial_batch_delete_retries_the_failed_entries() {
    let aws = sqs_failing_entries(1).await;
    let sdk = spigot_aws::sdk_config(Some(&aws.url)).await;
    let receipts: Vec<String> = ["r0", "r1-flaky", "r2"].map(String::from).into();
    buffer(&aws.url, &sdk).delete(&receipts).await.unwrap();
    let calls: Vec<_> = aws
        .calls()
        .into_iter()
        .filter(|c| c.operation == "AmazonSQS.DeleteMessageBatch")
        .collect();
    assert_eq!(calls.len(), 2);
    let second: Vec<&str> = calls[1].json["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ReceiptHandle"].as_str().unwrap())
        .collect();
    assert_eq!(second, ["r1-flaky"]);
}

/// Entries that keep failing are reported, with their count.
#[tokio::test(flavor = "multi_thread")]
async fn entries_that_keep_failing_are_counted_in_the_error() {
    let aws = sqs_failing_entries(usize::MAX).await;
    let sdk = spigot_aws::sdk_config(Some(&aws.url)).await;
    let receipts: Vec<String> = ["a-flaky", "b", "c-flaky"].map(String::from).into();
    let e = buffer(&aws.url, &sdk).delete(&receipts).await.unwrap_err();
    assert!(
        e.message
            .contains("left 2 message(s) undeleted after 3 tries"),
        "{e}"
    );
    assert!(e.message.contains("try again"), "{e}");
}
