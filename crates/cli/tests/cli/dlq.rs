//! `spigot dlq`: dead letters listed, shown, redriven, deleted, moved aside.

use crate::prelude::*;

/// A local stack in moto written to `<dir>/.spigot/dev.json`, as `spigot dev` would.
async fn dead_letters(sdk: &spigot_aws::aws_config::SdkConfig, dlq: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let hook = spigot_core::Hook {
            delivery: unique("dead"),
            event: "push".into(),
            repository: Some(format!("octo-org/repo{}", i % 3)),
            headers: vec![("x-github-event".into(), "push".into())],
            body: push_payload("octo-org/x", &i.to_string()).into_bytes(),
            received_at_ms: 1,
            json_body: false,
        };
        dead_letter(sdk, dlq, &hook).await;
        ids.push(hook.delivery);
    }
    ids
}

/// Puts `hook` in `dlq` as the engine dead-letters it after a 404 (a group of its own, the reason).
async fn dead_letter(sdk: &spigot_aws::aws_config::SdkConfig, dlq: &str, hook: &spigot_core::Hook) {
    let reason = "target answered 404 (client error)";
    let mut env = spigot_core::Envelope::from_hook(hook);
    env.resend(Some(reason.into()));
    spigot_aws::aws_sdk_sqs::Client::new(sdk)
        .send_message()
        .queue_url(dlq)
        .message_body(env.encode())
        .message_group_id(env.dedup_id())
        .message_deduplication_id(env.dedup_id())
        .message_attributes(
            "Reason",
            spigot_aws::aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_list_and_redrive_max_moves_exactly_that_many() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 7).await;

    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "list", "--local", "--json"])
        .output()
        .unwrap();
    succeeded(&out);
    // One JSON array.
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(rows.len(), 7);
    assert!(
        rows.iter()
            .all(|r| r["reason"].as_str().unwrap().contains("404"))
    );
    assert!(
        rows.iter()
            .all(|r| ids.contains(&r["delivery"].as_str().unwrap().to_string()))
    );

    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--max", "3", "--local"])
        .output()
        .unwrap();
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved 3"));
    let in_buffer = peek_all(&sdk, stack.get(Resource::BufferUrl)).await;
    let in_dlq = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!((in_buffer.len(), in_dlq.len()), (3, 4));
    let mut all = deliveries(&in_buffer);
    all.extend(deliveries(&in_dlq));
    assert_eq!(all.len(), 7, "nothing lost, nothing doubled");
    let moved = spigot_core::Envelope::decode(&in_buffer[0].0).unwrap();
    assert_eq!(
        moved.attempts, 2,
        "a redrive is a new send with a fresh deduplication id"
    );

    let left: Vec<String> = deliveries(&in_dlq).into_iter().collect();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--delivery", &left[2], "--local"])
        .output()
        .unwrap();
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved 1"));
    assert!(deliveries(&peek_all(&sdk, stack.get(Resource::BufferUrl)).await).contains(&left[2]));
    let still: Vec<String> = deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await)
        .into_iter()
        .collect();
    assert_eq!(still.len(), 3);
    assert!(!still.contains(&left[2]));
    // A delivery id that is not there is not "fine": exit 1, saying so; nothing moves.
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--delivery", "no-such-id", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no dead letter has delivery id no-such-id")
    );
    assert_eq!(
        deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await).len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_redrive_loses_nothing() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 150).await;
    let mut child = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local", "--no-move-task", "--hold", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while depth(&sdk, stack.get(Resource::BufferUrl)).await.0 < 10 {
        assert!(
            Instant::now() < deadline,
            "the redrive did not start moving"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-redrive
    child.wait().unwrap();
    // What the killed process held comes back to the DLQ after its hold expires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let in_buffer = deliveries(&take_all(&sdk, stack.get(Resource::BufferUrl)).await);
    let in_dlq = deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await);
    println!(
        "interrupted redrive: {} in buffer, {} in DLQ, {} in both",
        in_buffer.len(),
        in_dlq.len(),
        in_buffer.intersection(&in_dlq).count()
    );
    assert!(
        in_buffer.len() < 150,
        "the redrive was interrupted before it finished"
    );
    for id in &ids {
        assert!(in_buffer.contains(id) || in_dlq.contains(id), "{id} lost");
    }
}

/// SQS's JSON protocol (awsJson1_0) on the shared fake endpoint, for the two
/// calls a server-side redrive makes; moto lacks StartMessageMoveTask.
async fn fake_sqs() -> FakeAws {
    let aws = FakeAws::start().await;
    let json = |v: serde_json::Value| Some((200, "application/x-amz-json-1.0", v.to_string()));
    aws.on("AmazonSQS.GetQueueAttributes", move |call| {
        let url = call.json["QueueUrl"].as_str().unwrap_or("");
        let name = url.rsplit('/').next().unwrap_or("");
        json(serde_json::json!({"Attributes": {"QueueArn": format!("arn:aws:sqs:us-east-1:123456789012:{name}")}}))
    })
    .on("AmazonSQS.StartMessageMoveTask", move |_| {
        json(serde_json::json!({"TaskHandle": "task-handle-1"}))
    });
    aws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_redrive_uses_start_message_move_task_where_sqs_has_it() {
    let dir = workdir();
    let aws = fake_sqs().await;
    let url = aws.url.clone();
    let q = |name: &str| format!("{url}/123456789012/{name}");
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "dlq",
            "redrive",
            "--move-task",
            "--endpoint",
            &url,
            "--api-id",
            "x",
        ])
        .args([
            "--buffer-url",
            &q("spigot-buffer.fifo"),
            "--dlq-url",
            &q("spigot-buffer-dlq.fifo"),
        ])
        .args([
            "--eval-url",
            &q("e"),
            "--eval-dlq-url",
            &q("ed"),
            "--bucket",
            "b",
        ])
        .output()
        .unwrap();
    succeeded(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("started SQS message move task task-handle-1")
    );
    let calls = aws.calls();
    let task = calls
        .iter()
        .find(|c| c.operation == "AmazonSQS.StartMessageMoveTask")
        .expect("a move task was started");
    assert_eq!(
        task.json["SourceArn"],
        "arn:aws:sqs:us-east-1:123456789012:spigot-buffer-dlq.fifo"
    );
    assert_eq!(
        task.json["DestinationArn"],
        "arn:aws:sqs:us-east-1:123456789012:spigot-buffer.fifo"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_redrive_falls_back_to_the_move_loop_where_sqs_lacks_the_move_task() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 12).await;
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local", "--move-task"])
        .output()
        .unwrap();
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved 12"));
    let moved = deliveries(&take_all(&sdk, stack.get(Resource::BufferUrl)).await);
    assert_eq!(moved, ids.into_iter().collect());
    assert!(peek_all(&sdk, stack.get(Resource::DlqUrl)).await.is_empty());
}

/// A letter SQS moved by itself (no Reason attribute) is listed with a clear reason.
#[tokio::test(flavor = "multi_thread")]
async fn dlq_list_explains_letters_sqs_moved_by_itself() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let hook = spigot_core::Hook {
        delivery: unique("moved"),
        event: "push".into(),
        repository: Some("octo-org/a".into()),
        headers: vec![("x-github-event".into(), "push".into())],
        body: push_payload("octo-org/a", "1").into_bytes(),
        received_at_ms: 1,
        json_body: false,
    };
    let env = spigot_core::Envelope::from_hook(&hook);
    spigot_aws::aws_sdk_sqs::Client::new(&sdk)
        .send_message()
        .queue_url(stack.get(Resource::DlqUrl))
        .message_body(env.encode())
        .message_group_id("octo-org_a")
        .message_deduplication_id(env.dedup_id())
        .send()
        .await
        .unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "list", "--local", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["delivery"], hook.delivery);
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .starts_with("moved by SQS after"),
        "{row}"
    );
}

/// Every stored copy of a delivery has its own claim-check object. A
/// large letter left in the DLQ by an interrupted redrive, whose twin was
/// then delivered (deleting that twin's body), is redriven: its body is gone,
/// which is a permanent failure with a reason, and it must not block its
/// repository: a later small hook arrives within two drain runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_redriven_letter_whose_twin_was_delivered_does_not_block_its_repository() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(&sdk);
    let big = serde_json::json!({"repository": {"full_name": "octo-org/big"}, "pad": "x".repeat(400_000)})
        .to_string()
        .into_bytes();
    let (status, _) = answer(
        &r.handle_event(&signed_request("push", "big-twin", &big, Some("OFF")), 1)
            .await,
    );
    assert_eq!(status, 202);
    // The twin: the same envelope in the DLQ, as an interrupted redrive leaves it.
    let buffered = peek_all(&sdk, stack.get(Resource::BufferUrl)).await;
    let mut twin = spigot_core::Envelope::decode(&buffered[0].0).unwrap();
    assert!(twin.claim_key().is_some(), "travels by claim-check");
    twin.resend(Some("target answered 404 (client error)".into()));
    sqs.send_message()
        .queue_url(stack.get(Resource::DlqUrl))
        .message_body(twin.encode())
        .message_group_id(twin.dedup_id())
        .message_deduplication_id(twin.dedup_id())
        .send()
        .await
        .unwrap();
    switch(&sdk, &stack)
        .set(spigot_core::State::On)
        .await
        .unwrap();
    d.drain(None).await;
    assert_eq!(target.accepted().len(), 1, "the buffered copy is delivered");

    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local", "--no-move-task"])
        .output()
        .unwrap();
    succeeded(&out);
    let small = push_payload("octo-org/big", "small").into_bytes();
    let (status, _) = answer(
        &r.handle_event(
            &signed_request("push", "small-after", &small, Some("OFF")),
            1,
        )
        .await,
    );
    assert_eq!(status, 202);
    d.drain(None).await;
    d.drain(None).await;
    let got: Vec<String> = target
        .accepted()
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_string())
        .collect();
    let dead = take_all(&sdk, stack.get(Resource::DlqUrl)).await;
    println!(
        "ledger twin: in 2 (+1 twin), delivered {got:?}, dlq {}",
        dead.len()
    );
    assert_eq!(
        got,
        ["big-twin", "small-after"],
        "the small hook was blocked"
    );
    assert_eq!(dead.len(), 1);
    assert!(dead[0].1["Reason"].contains("missing"), "{:?}", dead[0].1);
}

/// `spigot dlq --eval` lists and redrives the evaluation queue's dead
/// letters (back to the evaluation queue), under the operator's policy; the
/// buffer's DLQ is not touched (control: it lists nothing).
#[tokio::test(flavor = "multi_thread")]
async fn dlq_eval_lists_and_redrives_the_evaluation_dead_letters() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::EvalDlqUrl), 2).await;
    let list = |extra: &[&str]| {
        let out = spigot_as(&dir, Principal::Operator)
            .args(["dlq", "list", "--local", "--json"])
            .args(extra)
            .output()
            .unwrap();
        succeeded(&out);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .iter()
            .map(|row| row["delivery"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mut listed = list(&["--eval"]);
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
    assert!(list(&[]).is_empty(), "the buffer's DLQ holds none");
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--eval", "--local", "--no-move-task"])
        .output()
        .unwrap();
    succeeded(&out);
    let in_eval = peek_all(&sdk, stack.get(Resource::EvalUrl)).await;
    let in_dlq = peek_all(&sdk, stack.get(Resource::EvalDlqUrl)).await;
    let in_buffer = peek_all(&sdk, stack.get(Resource::BufferUrl)).await;
    println!(
        "ledger dlq --eval: in 2, redriven {}, left {}, buffer {}",
        in_eval.len(),
        in_dlq.len(),
        in_buffer.len()
    );
    assert_eq!((in_eval.len(), in_dlq.len(), in_buffer.len()), (2, 0, 0));
}

/// Dead letters of two repositories, interleaved and put in the DLQ out
/// of order, are redriven oldest first: each repository's letters rejoin its
/// group in the order they arrived, and a drain delivers them so.
#[tokio::test(flavor = "multi_thread")]
async fn a_redrive_keeps_each_repositorys_order() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    // Arrival order: a1 b1 a2 b2 a3; dead-lettered in another order.
    let arrived = [
        ("a1", "octo-org/a"),
        ("b1", "octo-org/b"),
        ("a2", "octo-org/a"),
        ("b2", "octo-org/b"),
        ("a3", "octo-org/a"),
    ];
    for i in [4usize, 1, 2, 0, 3] {
        let (id, repo) = arrived[i];
        let hook = spigot_core::Hook {
            delivery: id.to_string(),
            event: "push".into(),
            repository: Some(repo.into()),
            headers: vec![("x-github-event".into(), "push".into())],
            body: push_payload(repo, id).into_bytes(),
            received_at_ms: 1_000 + i as u64,
            json_body: false,
        };
        dead_letter(&sdk, stack.get(Resource::DlqUrl), &hook).await;
    }
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local"])
        .output()
        .unwrap();
    succeeded(&out);
    switch(&sdk, &stack)
        .set(spigot_core::State::On)
        .await
        .unwrap();
    let d = drainer(&sdk, &stack, &target.url, 2).await;
    while depth(&sdk, stack.get(Resource::BufferUrl)).await != (0, 0) {
        d.drain(None).await;
    }
    // Each body carries its id as its marker.
    let got: Vec<String> = target
        .accepted()
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["marker"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let of = |p: char| {
        got.iter()
            .filter(|g| g.starts_with(p))
            .cloned()
            .collect::<Vec<_>>()
    };
    println!(
        "ledger redrive order: in 5, delivered {got:?}, dlq {}",
        peek_all(&sdk, stack.get(Resource::DlqUrl)).await.len()
    );
    assert_eq!(got.len(), 5);
    assert_eq!(of('a'), ["a1", "a2", "a3"]);
    assert_eq!(of('b'), ["b1", "b2"]);
}

/// `dlq show ID` prints one dead letter whole (reason, headers, body)
/// and leaves it there; `dlq delete ID` removes that one for good and no
/// other; an id that is not there exits 1 for both. Under OperatorPolicy.
#[tokio::test(flavor = "multi_thread")]
async fn dlq_show_and_delete_one_letter_by_its_delivery_id() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 3).await;
    let op = |args: &[&str]| {
        spigot_as(&dir, Principal::Operator)
            .arg("dlq")
            .args(args)
            .arg("--local")
            .output()
            .unwrap()
    };
    let shown = op(&["show", &ids[1]]);
    succeeded(&shown);
    let out = text(&shown).0;
    assert!(
        out.contains(&ids[1]) && out.contains("target answered 404"),
        "{out}"
    );
    assert!(
        out.contains("x-github-event: push") && out.contains("\"ref\""),
        "{out}"
    );
    let as_json: serde_json::Value =
        serde_json::from_slice(&op(&["show", &ids[1], "--json"]).stdout).unwrap();
    assert_eq!(as_json["delivery"], ids[1].as_str());
    assert!(
        as_json["body"]["text"]
            .as_str()
            .unwrap()
            .contains("octo-org/x")
    );
    assert_eq!(
        deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await).len(),
        3,
        "show keeps it"
    );
    let deleted = op(&["delete", &ids[1]]);
    succeeded(&deleted);
    assert!(
        text(&deleted)
            .0
            .contains(&format!("deleted dead letter {}", ids[1]))
    );
    let left = deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await);
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&ids[1]) && left.contains(&ids[0]) && left.contains(&ids[2]));
    for cmd in ["show", "delete"] {
        let missing = op(&[cmd, "no-such-id"]);
        assert_eq!(missing.status.code(), Some(1), "{cmd}");
        assert!(
            text(&missing)
                .1
                .contains("no dead letter has delivery id no-such-id")
        );
    }
    assert_eq!(
        deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await).len(),
        2
    );
}
