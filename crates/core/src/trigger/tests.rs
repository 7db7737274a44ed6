//! Unit tests of pull deployments' core: redaction, stamps, params, raise and receipts.

mod redact_tests {
    use crate::trigger::redact;

    #[test]
    fn obvious_secrets_are_redacted_and_the_rest_kept() {
        let cases = [
            (
                "DB_PASSWORD=hunter2 connecting",
                "DB_PASSWORD=*** connecting",
            ),
            ("token: abc.def", "token: ***"),
            ("Authorization: Bearer eyJhbGc", "Authorization: Bearer ***"),
            ("key AKIAIOSFODNN7EXAMPLE used", "key *** used"),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "***"),
            (
                "cloning https://ci:s3cr3t@git.example.com/r",
                "cloning https://ci:***@git.example.com/r",
            ),
            (
                "deploying web 1.4.2 to eu-west-1",
                "deploying web 1.4.2 to eu-west-1",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }
}

mod stamp_tests {
    use crate::trigger::*;

    #[test]
    fn a_stamp_signs_the_name_time_nonce_and_body() {
        let header = sign(b"secret", "web", 1_700_000_000, "0123456789abcdef", b"{}");
        let stamp = Stamp::parse(&header).unwrap();
        assert_eq!(
            (stamp.t, stamp.nonce.as_str()),
            (1_700_000_000, "0123456789abcdef")
        );
        let verifier = crate::Verifier::new(Some(crate::Secrets::parse("secret").unwrap()), false);
        let v1 = format!("sha256={}", stamp.v1);
        let ok = |name: &str, t: u64, body: &[u8]| {
            verifier
                .verify(&canonical(name, t, &stamp.nonce, body), Some(&v1), None)
                .is_ok()
        };
        assert!(ok("web", 1_700_000_000, b"{}"));
        assert!(!ok("prod", 1_700_000_000, b"{}"), "another trigger");
        assert!(!ok("web", 1_700_000_001, b"{}"), "another time");
        assert!(!ok("web", 1_700_000_000, b"{ }"), "another body");
        assert!(stamp.fresh(1_700_000_300) && !stamp.fresh(1_700_000_301));
        for bad in [
            "",
            "t=1,n=short,v1=00",
            "t=x,n=0123456789abcdef,v1=00",
            "sha256=abc",
        ] {
            assert!(Stamp::parse(bad).is_err(), "{bad}");
        }
    }
}

mod params_tests {
    use crate::trigger::*;

    fn declared(pairs: &[(&str, &str)]) -> Result<Params, TriggerError> {
        Params::new(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_declared_keys_with_whole_matching_values_pass() {
        let p = declared(&[("VERSION", r"[0-9]+(\.[0-9]+)*")]).unwrap();
        assert!(p.check(&data(&[("VERSION", "1.4.2")])).is_ok());
        assert!(p.check(&data(&[])).is_ok());
        let e = p
            .check(&data(&[("VERSION", "1.4.2; rm -rf /")]))
            .unwrap_err();
        assert!(e.to_string().contains("VERSION"), "{e}");
        let e = p.check(&data(&[("TARGET", "prod")])).unwrap_err();
        assert!(e.to_string().contains("\"TARGET\" is not declared"), "{e}");
        let e = p.check(&data(&[("BASH_ENV", "/tmp/x")])).unwrap_err();
        assert!(e.to_string().contains("BASH_ENV"), "{e}");
        // Declaring a denied name is refused too.
        assert!(declared(&[("LD_PRELOAD", ".*")]).is_err());
        assert!(declared(&[("V", "(")]).is_err());
    }
}

mod raise_tests {
    use crate::ports::memory::MemoryTriggers;
    use crate::trigger::*;
    use std::sync::Arc;

    fn data(items: &[&str]) -> BTreeMap<String, String> {
        parse_data(items.iter().copied()).unwrap()
    }

    #[tokio::test]
    async fn raises_take_consecutive_numbers_and_move_the_head() {
        let store = MemoryTriggers::default();
        for n in 1..=3 {
            let r = raise(&store, "web", "ci", data(&["VERSION=1.2"]), 1_000 * n, "")
                .await
                .unwrap();
            assert_eq!(r.sequence, n);
        }
        assert_eq!(head(&store, "web").await.unwrap().unwrap().0.sequence, 3);
        let after = requests_after(&store, "web", 1, 10).await.unwrap();
        assert_eq!(
            after.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(after[0].1.as_ref().unwrap().data["VERSION"], "1.2");
    }

    /// Numbers read from the bucket never overflow: a head at the last
    /// sequence number refuses a raise, saying why, and a reader past the last
    /// number finds nothing (debug builds would panic, release ones wrap).
    #[tokio::test]
    async fn a_head_at_the_last_number_refuses_a_raise_and_never_wraps() {
        let store = MemoryTriggers::default();
        store
            .write(
                &Keys("web").head(),
                encode(&Head { sequence: u64::MAX }),
                Write::Always,
            )
            .await
            .unwrap();
        let refused = raise(&store, "web", "ci", BTreeMap::new(), 1, "").await;
        assert!(
            matches!(&refused, Err(TriggerError::Invalid(m)) if m.contains("last sequence number")),
            "{refused:?}"
        );
        assert!(
            requests_after(&store, "web", u64::MAX, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Control: one below the last still raises, at the last number.
        store
            .write(
                &Keys("web").head(),
                encode(&Head {
                    sequence: u64::MAX - 1,
                }),
                Write::Always,
            )
            .await
            .unwrap();
        let r = raise(&store, "web", "ci", BTreeMap::new(), 1, "")
            .await
            .unwrap();
        assert_eq!(r.sequence, u64::MAX);
    }

    #[tokio::test]
    async fn a_push_raise_keeps_the_exact_bytes_beside_a_request_that_names_them() {
        let store = MemoryTriggers::default();
        let body = br#"{"ref":"refs/heads/main"}"#;
        let hook = |delivery: &str| crate::webhook::Hook {
            delivery: delivery.into(),
            event: "push".into(),
            repository: None,
            headers: vec![("x-hub-signature-256".into(), "sha256=ab".into())],
            body: body.to_vec(),
            received_at_ms: 1,
            json_body: true,
        };
        let r = raise_push(&store, "web", &hook("d-1\x1b[2J"), 5_000)
            .await
            .unwrap();
        assert_eq!(r.sequence, 1);
        let push = r.push.clone().unwrap();
        assert_eq!(push.sha256, crate::envelope::sha256_hex(body));
        assert_eq!(push.signature, "sha256=ab");
        assert!(!push.delivery.contains('\x1b'), "{}", push.delivery);
        assert_eq!(push.content_type, None);
        match store
            .read(&Keys("web").body(&push.sha256), None)
            .await
            .unwrap()
        {
            Read::Found { bytes, .. } => assert_eq!(bytes, body),
            other => panic!("{other:?}"),
        }
        // Read back as the agent reads it.
        let (_, fetched) = requests_after(&store, "web", 0, 10)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(fetched.unwrap().push, Some(push));
        // The same bytes again (a redelivery): the body is kept once, a new request raised.
        let again = raise_push(&store, "web", &hook("d-2"), 6_000)
            .await
            .unwrap();
        assert_eq!(again.sequence, 2);
        assert_eq!(store.list("triggers/web/bodies/").await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_raisers_never_share_a_number() {
        let store = Arc::new(MemoryTriggers::default());
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    raise(
                        &*store,
                        "web",
                        &format!("raiser-{i}"),
                        BTreeMap::new(),
                        5,
                        "",
                    )
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
        got.sort();
        assert_eq!(got, (1..=20).collect::<Vec<_>>());
        assert_eq!(head(&*store, "web").await.unwrap().unwrap().0.sequence, 20);
        // The race was real: some creates found their number taken.
        assert!(store.refused.load(std::sync::atomic::Ordering::SeqCst) > 0);
    }

    #[tokio::test]
    async fn a_lagging_head_is_walked_past() {
        let store = MemoryTriggers::default();
        raise(&store, "web", "ci", BTreeMap::new(), 1, "")
            .await
            .unwrap();
        // A raiser that created request 2 and died before moving the head.
        let orphan = Request {
            trigger: "web".into(),
            sequence: 2,
            by: "ci".into(),
            data: BTreeMap::new(),
            raised_at: rfc3339(2),
            raised_at_ms: 2,
            token: String::new(),
            push: None,
        };
        store
            .write(&Keys("web").request(2), encode(&orphan), Write::IfAbsent)
            .await
            .unwrap();
        assert_eq!(head(&store, "web").await.unwrap().unwrap().0.sequence, 1);
        let next = raise(&store, "web", "ci", BTreeMap::new(), 3, "")
            .await
            .unwrap();
        assert_eq!(next.sequence, 3);
        let seqs: Vec<u64> = requests_after(&store, "web", 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    /// A store whose first create succeeds but answers "taken" (412), as S3
    /// does to an SDK retry of a create whose first answer was lost.
    #[derive(Default)]
    struct LostAnswer {
        inner: MemoryTriggers,
        lost: std::sync::atomic::AtomicBool,
    }

    impl Triggers for LostAnswer {
        async fn read(&self, key: &str, known: Option<&str>) -> Result<Read, PortError> {
            self.inner.read(key, known).await
        }
        async fn read_at_most(&self, key: &str, at_most: usize) -> Result<Read, PortError> {
            self.inner.read_at_most(key, at_most).await
        }
        async fn write(
            &self,
            key: &str,
            bytes: Vec<u8>,
            when: Write<'_>,
        ) -> Result<bool, PortError> {
            let wrote = self.inner.write(key, bytes, when).await?;
            let first = key.contains("/requests/")
                && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst);
            Ok(wrote && !first)
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
            self.inner.list(prefix).await
        }
    }

    #[tokio::test]
    async fn a_create_whose_answer_was_lost_is_recognised_by_its_token() {
        let store = LostAnswer::default();
        let r = raise(&store, "web", "ci", BTreeMap::new(), 1, "token-1")
            .await
            .unwrap();
        assert_eq!(r.sequence, 1, "its own write, not a second request");
        assert!(request(&store, "web", 2).await.unwrap().is_none());
        // Control: without a token the lost answer costs a number (the old behaviour).
        let store = LostAnswer::default();
        let r = raise(&store, "web", "ci", BTreeMap::new(), 1, "")
            .await
            .unwrap();
        assert_eq!(r.sequence, 2);
    }

    #[tokio::test]
    async fn a_request_reads_by_its_key_and_a_corrupt_or_huge_one_is_said_so() {
        let store = MemoryTriggers::default();
        let lying = Request {
            trigger: "prod".into(),
            sequence: 7,
            by: "x".into(),
            data: BTreeMap::new(),
            raised_at: rfc3339(1),
            raised_at_ms: 1,
            token: String::new(),
            push: None,
        };
        let put = |n: u64, bytes: Vec<u8>| {
            let store = &store;
            async move {
                store
                    .write(&Keys("web").request(n), bytes, Write::Always)
                    .await
                    .unwrap()
            }
        };
        put(1, encode(&lying)).await;
        put(2, b"{not json".to_vec()).await;
        put(3, vec![b' '; MAX_OBJECT_BYTES + 1]).await;
        let got = requests_after(&store, "web", 0, 10).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1.as_ref().unwrap().sequence, 1, "the key's number");
        assert!(got[1].1.as_ref().unwrap_err().contains("not a request"));
        assert!(got[2].1.as_ref().unwrap_err().contains("larger than"));
    }

    #[test]
    fn names_and_data_are_checked() {
        assert!(check_name("trigger", "web-prod.eu_1").is_ok());
        for bad in ["", ".hidden", "a/b", "sp ace", &"x".repeat(65)] {
            assert!(check_name("trigger", bad).is_err(), "{bad:?}");
        }
        assert_eq!(data(&["A=1", "B=x=y"])["B"], "x=y");
        for bad in [
            "novalue",
            "1A=2",
            "A-B=3",
            "SPIGOT_SEQUENCE=4",
            "=5",
            "BASH_ENV=/tmp/x",
            "LD_PRELOAD=/tmp/x.so",
            "GIT_CONFIG_COUNT=1",
            "PYTHONWARNINGS=x",
            "http_proxy=http://evil",
            "SHELLOPTS=xtrace",
            "AWS_ENDPOINT_URL=http://evil",
        ] {
            let e = parse_data([bad]).unwrap_err().to_string();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[tokio::test]
    async fn receipts_and_agents_are_read_back() {
        let store = MemoryTriggers::default();
        let r = raise(&store, "web", "ci", BTreeMap::new(), 1, "")
            .await
            .unwrap();
        let receipt = Receipt {
            trigger: "web".into(),
            sequence: r.sequence,
            agent: "host-a".into(),
            status: Status::Done,
            attempt: 1,
            started_at: rfc3339(2),
            finished_at: Some(rfc3339(3)),
            duration_ms: Some(1),
            script: ScriptRef {
                path: "deploy.yaml".into(),
                sha256: "00".into(),
            },
            steps: vec![],
            failed_step: None,
            output_tail: vec![],
            note: None,
        };
        put_receipt(&store, &receipt, 10_000).await.unwrap();
        let all = receipts(&store, "web", 1).await.unwrap();
        assert_eq!(all["host-a"], receipt);
        assert_eq!(
            agents_since(&store, "web", 9_000).await.unwrap(),
            vec!["host-a"]
        );
        assert!(
            agents_since(&store, "web", 11_000)
                .await
                .unwrap()
                .is_empty()
        );
        let big = BTreeMap::from([("X".to_string(), "y".repeat(MAX_REQUEST_BYTES))]);
        assert!(matches!(
            raise(&store, "web", "ci", big, 1, "").await,
            Err(TriggerError::Invalid(_))
        ));
    }
}
