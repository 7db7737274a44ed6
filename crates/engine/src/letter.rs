//! Dead letters, built one way for the receiver and the engine.

use spigot_core::envelope::Envelope;
use spigot_core::ports::{DeadLetter, Received};

/// The dead letter of `env`: sent again (fresh deduplication id, the reason
/// recorded), in a FIFO group of its own so any letter can be listed or
/// redriven alone.
pub fn dead_letter(mut env: Envelope, reason: String, status: Option<u16>) -> DeadLetter {
    env.resend(Some(reason.clone()));
    DeadLetter {
        body: env.encode(),
        group: env.dedup_id(),
        dedup_id: env.dedup_id(),
        reason,
        status,
    }
}

/// The dead letter of a message that is not an envelope: its text as received.
pub fn poison_letter(m: &Received, reason: String) -> DeadLetter {
    DeadLetter {
        body: m.body.clone(),
        group: if m.group.is_empty() {
            "poison".into()
        } else {
            m.group.clone()
        },
        dedup_id: format!("poison-{}", m.message_id),
        reason,
        status: None,
    }
}
