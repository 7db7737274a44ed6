//! The drainer: on a schedule, while the spigot is ON and the target answers,
//! deliver the buffer in order per repository.

pub mod engine;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use engine::{Counters, Engine, Summary};
use spigot_core::metrics::Metrics;
use spigot_core::ports::{Buffer, PayloadStore, Switch, Target};
use spigot_core::spigot::State;

/// The drainer: the engine plus the switch it obeys.
pub struct Drainer<B, P, T, S> {
    /// The drain engine.
    pub engine: Engine<B, P, T>,
    /// The spigot's switch.
    pub switch: S,
}

impl<B: Buffer, P: PayloadStore, T: Target, S: Switch> Drainer<B, P, T, S> {
    /// One scheduled run: OFF or target down → return at once without receiving.
    pub async fn drain(&self, deadline: Option<Instant>) -> Summary {
        let summary = self.drain_inner(deadline).await;
        tracing::info!(
            delivered = summary.delivered,
            retried = summary.retried,
            dead_lettered = summary.dead_lettered,
            released = summary.released,
            held = summary.held,
            stop = ?summary.stop,
            skipped = ?summary.skipped,
            "drain finished"
        );
        let m = Metrics::new("drainer")
            .count("Delivered", summary.delivered)
            .count("Retried", summary.retried)
            .count("DeadLettered", summary.dead_lettered)
            .count("Released", summary.released);
        println!("{}", m.line(spigot_aws::now_ms()));
        summary
    }

    async fn drain_inner(&self, deadline: Option<Instant>) -> Summary {
        match self.switch.read().await {
            Err(e) => return Summary::skipped(format!("cannot read the spigot state: {e}")),
            Ok(raw) => match State::from_stage_variable(raw.as_deref()) {
                Ok(State::On) => {}
                Ok(State::Off) => return Summary::skipped("spigot is OFF"),
                Err(e) => {
                    tracing::error!(error = %e, "not draining");
                    return Summary::skipped(e.to_string());
                }
            },
        }
        if !self.engine.target.probe().await {
            return Summary::skipped("target is down (health probe failed)");
        }
        let counters = Counters::default();
        self.engine
            .run(deadline, &AtomicBool::new(false), &counters)
            .await
    }
}
