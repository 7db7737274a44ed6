//! Ledgers: what went in, what the target got, in order per repository.

use crate::moto::unique;
use crate::target::Recorded;
use crate::wiring::{RealReceiver, answer, push_payload, signed_request};

/// The ledger of a scenario: what went in and what came out at the target.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Delivery ids sent in, in order, with their repository and body.
    pub sent: Vec<(String, String, Vec<u8>)>,
}

impl Ledger {
    /// Sends `n` hooks across `repos` through the receiver (spigot state `state`).
    pub async fn send_round_robin(
        &mut self,
        r: &RealReceiver,
        n: usize,
        repos: &[&str],
        state: &str,
    ) {
        for i in 0..n {
            let repo = repos[i % repos.len()];
            let delivery = unique("h");
            let body = push_payload(repo, &format!("{i}")).into_bytes();
            let (status, json) = answer(
                &r.handle_event(&signed_request("push", &delivery, &body, Some(state)), 1)
                    .await,
            );
            assert!(status == 202 || status == 200, "hook {i}: {status} {json}");
            self.sent.push((delivery, repo.to_string(), body));
        }
    }

    /// Hooks of the ledger in `got` (whatever the order, several targets
    /// together): (distinct, duplicates). Unknown deliveries fail.
    pub fn check_any_order(&self, got: &[Recorded]) -> (usize, usize) {
        let mut seen = std::collections::HashSet::new();
        let mut duplicates = 0;
        for rec in got {
            let id = rec.header("x-github-delivery").unwrap_or_default();
            assert!(
                self.sent.iter().any(|(d, _, _)| d == id),
                "target got unknown delivery {id}"
            );
            if !seen.insert(id.to_string()) {
                duplicates += 1;
            }
        }
        (seen.len(), duplicates)
    }

    /// Checks the target's log against the ledger: every hook delivered byte-identical,
    /// in send order within each repository. Returns (delivered distinct, duplicates).
    pub fn check(&self, got: &[Recorded], expect_missing: &[String]) -> (usize, usize) {
        let mut seen = std::collections::HashMap::new();
        let mut duplicates = 0;
        let mut last_index: std::collections::HashMap<String, usize> = Default::default();
        for rec in got {
            let id = rec.header("x-github-delivery").unwrap().to_string();
            let (index, (_, repo, body)) = self
                .sent
                .iter()
                .enumerate()
                .find(|(_, (d, _, _))| *d == id)
                .unwrap_or_else(|| panic!("target got unknown delivery {id}"));
            assert_eq!(&rec.body, body, "delivery {id} not byte-identical");
            if seen.insert(id.clone(), ()).is_some() {
                duplicates += 1;
                continue;
            }
            if let Some(prev) = last_index.insert(repo.clone(), index) {
                assert!(
                    prev < index,
                    "repository {repo}: delivery {id} arrived out of order"
                );
            }
        }
        for (d, _, _) in &self.sent {
            if expect_missing.contains(d) {
                assert!(!seen.contains_key(d), "{d} should not have been delivered");
            } else {
                assert!(seen.contains_key(d), "hook {d} was lost");
            }
        }
        (seen.len(), duplicates)
    }
}
