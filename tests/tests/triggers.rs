//! The triggers mailbox against a moto S3: conditional reads and writes, and
//! concurrent raisers each getting their own sequence number.

use std::collections::BTreeMap;
use std::sync::Arc;

use spigot_aws::S3Triggers;
use spigot_core::ports::{Read, Triggers, Write};
use spigot_core::trigger;
use spigot_e2e::*;

async fn store_at(endpoint: &str) -> S3Triggers {
    let sdk = spigot_aws::sdk_config(Some(endpoint)).await;
    let bucket = bucket(&sdk, "triggers").await;
    S3Triggers::new(spigot_aws::s3_client(&sdk), bucket)
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_reads_and_writes_behave_as_s3s() {
    let store = store_at(moto()).await;
    assert_eq!(store.read("k", None).await.unwrap(), Read::Missing);
    assert!(
        store
            .write("k", b"1".to_vec(), Write::IfAbsent)
            .await
            .unwrap()
    );
    // Taken: a second create is refused, the object unchanged.
    assert!(
        !store
            .write("k", b"2".to_vec(), Write::IfAbsent)
            .await
            .unwrap()
    );
    let Read::Found { bytes, etag } = store.read("k", None).await.unwrap() else {
        panic!("k is there")
    };
    assert_eq!(bytes, b"1");
    // A poll with the known entity tag is a 304.
    assert_eq!(store.read("k", Some(&etag)).await.unwrap(), Read::Unchanged);
    // Compare-and-swap: the right tag wins, a stale one loses.
    assert!(
        store
            .write("k", b"3".to_vec(), Write::IfMatches(&etag))
            .await
            .unwrap()
    );
    assert!(
        !store
            .write("k", b"4".to_vec(), Write::IfMatches(&etag))
            .await
            .unwrap()
    );
    let Read::Found { bytes, etag: new } = store.read("k", Some(&etag)).await.unwrap() else {
        panic!("k changed, so the poll gets it")
    };
    assert_eq!((bytes.as_slice(), new != etag), (b"3".as_slice(), true));
    assert!(
        !store
            .write("gone", b"5".to_vec(), Write::IfMatches(&new))
            .await
            .unwrap()
    );
    assert!(
        store
            .write("k", b"6".to_vec(), Write::Always)
            .await
            .unwrap()
    );
    assert_eq!(store.list("").await.unwrap(), vec!["k".to_string()]);
}

/// Twenty raisers at once, each its own task and connection.
async fn raise_twenty(store: Arc<S3Triggers>) -> Vec<u64> {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let data = BTreeMap::from([("RAISER".to_string(), i.to_string())]);
                trigger::raise(&*store, "deploy", &format!("ci-{i}"), data, 1, "")
                    .await
                    .unwrap()
                    .sequence
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn twenty_concurrent_raisers_get_twenty_numbers_and_none_is_lost() {
    // Raised under RaiserPolicy, as `spigot trigger` runs in CI (moto enforces it).
    let (sdk, stack) = stack().await;
    let raiser = as_principal(&sdk, &stack, Principal::Raiser).await;
    let store = Arc::new(S3Triggers::new(
        spigot_aws::s3_client(&raiser),
        stack.get(spigot_core::resources::Resource::Bucket),
    ));
    let mut got = raise_twenty(store.clone()).await;
    got.sort();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    // Every request is there, each raiser's own data in it.
    let requests = trigger::requests_after(&*store, "deploy", 0, 100)
        .await
        .unwrap();
    let mut raisers: Vec<String> = requests
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().data["RAISER"].clone())
        .collect();
    raisers.sort_by_key(|r| r.parse::<u32>().unwrap());
    assert_eq!(raisers, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    let (head, _) = trigger::head(&*store, "deploy").await.unwrap().unwrap();
    assert_eq!(head.sequence, 20);
}

/// POST /trigger under the receiver's own role (IAM enforced): the request,
/// the head and the nonce (`trigger-nonces/`) are written with what the
/// template grants; a replay is refused by the nonce already there.
#[tokio::test(flavor = "multi_thread")]
async fn the_trigger_door_raises_once_under_the_receivers_role() {
    let (sdk, stack) = stack().await;
    let role = as_principal(&sdk, &stack, Principal::Receiver).await;
    let mut settings = stack.settings();
    settings.trigger_secret = Some("spigot-test-trigger-secret".into());
    settings.trigger_endpoint = true;
    let door = spigot_receiver::trigger::build(&role, &settings)
        .await
        .unwrap();
    let now_ms = spigot_aws::now_ms();
    let body = br#"{"data": {"VERSION": "1.4.2"}}"#;
    let header = trigger::sign(
        b"spigot-test-trigger-secret",
        "web",
        now_ms / 1000,
        "nonce-under-the-role-1",
        body,
    );
    let inbound = spigot_receiver::Inbound {
        headers: vec![("X-Spigot-Signature".into(), header)],
        body: body.to_vec(),
        ..Default::default()
    };
    let raised = door.handle("web", &inbound, now_ms).await;
    assert_eq!(
        (raised.status, raised.body["sequence"].as_u64()),
        (202, Some(1)),
        "{:?}",
        raised.body
    );
    let replayed = door.handle("web", &inbound, now_ms).await;
    assert_eq!(replayed.status, 409, "{:?}", replayed.body);
}

/// Identities scoped to one trigger (examples/trigger-access.yaml, as
/// SAM translates it, IAM enforced): a staging agent can answer staging's
/// requests and neither read nor answer prod's; a staging raiser cannot raise
/// prod. Positive controls: prod's agent answers prod, staging's raiser
/// raises staging. And a request, once created, is never overwritten: the
/// raisers' policies (the stack's and the scoped one) allow a request's write
/// only with If-None-Match, so an overwrite is refused (403) and a second
/// create of the same number is taken (412), the request unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn a_staging_agent_cannot_answer_prod_and_a_request_is_never_overwritten() {
    use spigot_core::resources::Resource;
    use spigot_core::trigger::{Keys, Receipt, ScriptRef, Status};
    let (sdk, stack) = stack().await;
    let bucket = stack.get(Resource::Bucket).to_string();
    let admin = S3Triggers::new(spigot_aws::s3_client(&sdk), &bucket);
    for name in ["staging", "prod"] {
        trigger::raise(&admin, name, "ci", BTreeMap::new(), 1, "")
            .await
            .unwrap();
    }
    let cfn = spigot_e2e::iam::translate(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/trigger-access.yaml"
        ),
        &[],
    );
    let store_of = async |trigger: &str, policy: &str| {
        let docs = spigot_e2e::iam::Policies::new(&cfn, &stack)
            .with_parameter("ConfigBucket", &bucket)
            .with_parameter("TriggerName", trigger)
            .documents(policy);
        assert!(!docs.is_empty(), "{policy} of {trigger}");
        let (id, secret) = spigot_e2e::iam::iam_user(&unique("scoped-"), &docs).await;
        S3Triggers::new(
            spigot_aws::s3_client(&spigot_e2e::iam::with_keys(&sdk, &id, &secret)),
            &bucket,
        )
    };
    let receipt = |name: &str| Receipt {
        trigger: name.into(),
        sequence: 1,
        agent: "host-1".into(),
        status: Status::Done,
        attempt: 1,
        started_at: String::new(),
        finished_at: None,
        duration_ms: None,
        script: ScriptRef {
            path: "deploy.yaml".into(),
            sha256: String::new(),
        },
        steps: Vec::new(),
        failed_step: None,
        output_tail: Vec::new(),
        note: None,
    };
    let staging_agent = store_of("staging", "AgentPolicy").await;
    let prod_agent = store_of("prod", "AgentPolicy").await;
    let r = trigger::put_receipt(&staging_agent, &receipt("staging"), 2).await;
    assert!(r.is_ok(), "{r:?}");
    let refused = trigger::put_receipt(&staging_agent, &receipt("prod"), 2).await;
    assert!(refused.is_err(), "a staging agent wrote a prod receipt");
    assert!(
        trigger::request(&staging_agent, "prod", 1).await.is_err(),
        "read prod"
    );
    assert!(
        trigger::put_receipt(&prod_agent, &receipt("prod"), 2)
            .await
            .is_ok()
    );
    assert_eq!(
        trigger::receipt(&admin, "prod", 1, "host-1")
            .await
            .unwrap()
            .map(|r| r.status),
        Some(Status::Done)
    );
    let staging_raiser = store_of("staging", "RaiserPolicy").await;
    let raised = trigger::raise(&staging_raiser, "staging", "ci", BTreeMap::new(), 3, "").await;
    assert_eq!(raised.unwrap().sequence, 2);
    assert!(
        trigger::raise(&staging_raiser, "prod", "ci", BTreeMap::new(), 3, "")
            .await
            .is_err()
    );
    // Overwrites: refused to the scoped raiser and to the stack's RaiserPolicy.
    let (id, secret) = principal_keys(&stack, Principal::Raiser).await;
    let raiser = S3Triggers::new(
        spigot_aws::s3_client(&spigot_e2e::iam::with_keys(&sdk, &id, &secret)),
        &bucket,
    );
    for (who, store) in [("scoped", &staging_raiser), ("stack", &raiser)] {
        let key = Keys("staging").request(1);
        let overwrite = store.write(&key, b"{}".to_vec(), Write::Always).await;
        assert!(
            overwrite.is_err(),
            "{who}: an unconditional write went through"
        );
        let taken = store.write(&key, b"{}".to_vec(), Write::IfAbsent).await;
        assert!(
            !taken.unwrap(),
            "{who}: a second create of request 1 went through"
        );
    }
    let first = trigger::request(&admin, "staging", 1)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.by.as_str(), first.raised_at_ms),
        ("ci", 1),
        "unchanged"
    );
}
