//! The config bucket's layout: every prefix, what lives under it, who writes
//! it and how long it is kept. Code names a prefix only through this module;
//! the template's lifecycle rules say the same, and `tests/tests/template.rs`
//! checks each prefix against its rule ([`LAYOUT`]).

/// Claim-checked bodies of buffered hooks (and of dead letters, each its own copy).
pub const PAYLOADS: &str = "payloads/";
/// Claim-checked bodies of pushes on their way to the evaluator.
pub const EVAL_PAYLOADS: &str = "payloads/eval/";
/// Pipeline filters, one object a pipeline (or trigger) and repository.
pub const FILTERS: &str = "filters/";
/// The engine's (and the evaluator's) record of failed attempts per message.
pub const ATTEMPTS: &str = "attempts/";
/// The newest push that started each pipeline from each branch.
pub const STARTS: &str = "starts/";
/// The reconciler's state: the deliveries it asked GitHub to redeliver.
pub const RECONCILE: &str = "reconcile/";
/// Pull deployments: heads, requests, receipts, push bodies, agents seen.
pub const TRIGGERS: &str = "triggers/";
/// Nonces of `POST /trigger` requests, each used once.
pub const TRIGGER_NONCES: &str = "trigger-nonces/";
/// `DEDUPE_WINDOW`: a mark per delivery id taken.
pub const DEDUPE: &str = "dedupe/";
/// The archive and timeline (Firehose writes `archive/YYYY/MM/DD/HH/`).
pub const ARCHIVE: &str = "archive/";
/// The archive's repository index (a mark per repository and hour).
pub const ARCHIVE_REPOS: &str = "archive/repos/";

/// How long what is under a prefix lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Objects expire this many days after they are written; old versions after a day.
    Days(u32),
    /// Objects expire after the template's `ArchiveDays` (a day once it is 0).
    ArchiveDays,
    /// Current objects are kept; overwritten versions expire after this many days.
    Kept {
        /// Days an overwritten version is kept.
        old_versions: u32,
    },
    /// Kept, every version (the bucket policy guards them).
    Forever,
}

/// One prefix of the bucket.
#[derive(Debug, Clone, Copy)]
pub struct Prefix {
    /// The prefix.
    pub prefix: &'static str,
    /// What lives there.
    pub holds: &'static str,
    /// Who writes it.
    pub writers: &'static str,
    /// How long it lives.
    pub lifetime: Lifetime,
}

/// Every prefix of the config bucket.
pub const LAYOUT: &[Prefix] = &[
    Prefix {
        prefix: PAYLOADS,
        holds: "claim-checked bodies; outlive a stay in the buffer (14 days) plus one in the DLQ (14 days)",
        writers: "receiver, drainer and relay (a dead letter's copy), dlq redrive, replay",
        lifetime: Lifetime::Days(30),
    },
    Prefix {
        prefix: FILTERS,
        holds: "pipeline filters",
        writers: "the filter custom resource, OperatorRoleArn (spigot filters put)",
        lifetime: Lifetime::Forever,
    },
    Prefix {
        prefix: ATTEMPTS,
        holds: "failed attempts per message, an operator's aside",
        writers: "drainer, relay, evaluator, dlq aside",
        lifetime: Lifetime::Days(30),
    },
    Prefix {
        prefix: STARTS,
        holds: "the newest push that started a pipeline from a branch (MAX_PUSH_AGE is at most 30 days)",
        writers: "evaluator",
        lifetime: Lifetime::Days(31),
    },
    Prefix {
        prefix: RECONCILE,
        holds: "the reconciler's state, rewritten every run",
        writers: "reconciler, spigot reconcile",
        lifetime: Lifetime::Kept { old_versions: 1 },
    },
    Prefix {
        prefix: TRIGGERS,
        holds: "pull deployments: a trigger's sequence must never restart",
        writers: "receiver (POST /trigger), evaluator, spigot trigger, agents (receipts)",
        lifetime: Lifetime::Kept { old_versions: 7 },
    },
    Prefix {
        prefix: TRIGGER_NONCES,
        holds: "nonces of POST /trigger, accepted within 5 minutes",
        writers: "receiver",
        lifetime: Lifetime::Days(1),
    },
    Prefix {
        prefix: DEDUPE,
        holds: "DEDUPE_WINDOW marks (the window is at most a day)",
        writers: "receiver",
        lifetime: Lifetime::Days(2),
    },
    Prefix {
        prefix: ARCHIVE,
        holds: "the archive, the timeline and the repository index",
        writers: "Firehose (records); receiver, drainer, relay, evaluator, dlq redrive, replay (index marks)",
        lifetime: Lifetime::ArchiveDays,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct_end_in_a_slash_and_cover_every_constant() {
        let mut seen = std::collections::HashSet::new();
        for p in LAYOUT {
            assert!(p.prefix.ends_with('/'), "{}", p.prefix);
            assert!(seen.insert(p.prefix), "{} twice", p.prefix);
        }
        // The nested ones live under a prefix of the table.
        for nested in [EVAL_PAYLOADS, ARCHIVE_REPOS, crate::reconcile::STATE_KEY] {
            assert!(
                LAYOUT.iter().any(|p| nested.starts_with(p.prefix)),
                "{nested}"
            );
        }
    }
}
