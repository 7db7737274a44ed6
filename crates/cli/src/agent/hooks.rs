//! `spigot agent --on push:OWNER/REPO@BRANCH`: the deployment script as the
//! target of the relay's engine. Hooks are pulled from the buffer in pull mode
//! exactly as `spigot relay` pulls them (in order per repository, deleted only
//! when handled); a push matching a subscription (the pipeline filters'
//! matcher: repository, branch or branch glob; tags and deletions never
//! match) runs the script. A hook the script failed on, or that no
//! subscription wants, goes to the dead-letter queue with the reason: it is
//! kept, never dropped (`spigot dlq redrive` sends it round again).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use spigot_core::delivery::{Delivery, Failure};
use spigot_core::filter::{Filter, FilterSet, FilterSpec};
use spigot_core::ports::Target;
use spigot_core::push::Push;
use spigot_core::webhook::Hook;
use spigot_engine::{Counters, EngineConfig};

use super::AgentMetrics;
use super::script::Script;
use super::steps::Runner;
use crate::CliError;
use crate::resources::Resolved;

/// One `--on` subscription: `push:OWNER/REPO@BRANCH` (the branch may be a glob, `release/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The repository, `owner/name`.
    pub repository: String,
    /// The branch or branch glob.
    pub branch: String,
}

impl Subscription {
    /// Parses one `--on` value.
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let wrong = |why: &str| {
            CliError::Usage(format!(
                "--on {text:?} {why}: give EVENT:OWNER/REPO@BRANCH, e.g. push:octo-org/app@main"
            ))
        };
        let (event, rest) = text.split_once(':').ok_or_else(|| wrong("has no event"))?;
        if event != "push" {
            return Err(wrong("names an event other than push (only pushes deploy)"));
        }
        let (repository, branch) = rest
            .split_once('@')
            .ok_or_else(|| wrong("has no @BRANCH"))?;
        let ok_repo = repository
            .split_once('/')
            .is_some_and(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'));
        if !ok_repo || branch.is_empty() {
            return Err(wrong("is not a repository and a branch"));
        }
        Ok(Self {
            repository: repository.to_string(),
            branch: branch.to_string(),
        })
    }

    /// Every `--on` value.
    pub fn parse_all(texts: &[String]) -> Result<Vec<Self>, CliError> {
        texts.iter().map(|t| Self::parse(t)).collect()
    }

    /// As a pipeline filter (every path matches), so the filters' matcher decides.
    fn filter(&self) -> Result<Filter, CliError> {
        FilterSpec {
            repository: self.repository.clone(),
            branch: self.branch.clone(),
            pipeline: "agent".into(),
            include: Vec::new(),
            exclude: Vec::new(),
            syntax: None,
            source_action: None,
            owner_stack: None,
        }
        .compile()
        .map_err(|e| {
            CliError::Usage(format!(
                "--on push:{}@{}: {e}",
                self.repository, self.branch
            ))
        })
    }
}

/// The agent as a target: a hook in, the script run, a delivery outcome out.
pub struct HookAgent {
    /// What to run for.
    pub subscriptions: Vec<Subscription>,
    /// The script.
    pub script: Script,
    /// How its steps run.
    pub runner: Runner,
    /// This agent's name.
    pub id: String,
    /// Its Prometheus numbers.
    pub metrics: Arc<AgentMetrics>,
}

/// A hook the agent keeps in the dead-letter queue, with why.
fn kept(reason: String) -> Delivery {
    Delivery::Permanent(Failure {
        status: None,
        reason,
        retry_after: None,
    })
}

impl HookAgent {
    /// Runs the script for `hook` when a subscription wants it.
    async fn handle(&self, hook: &Hook, filters: &FilterSet) -> Delivery {
        if hook.event != "push" {
            return kept(format!(
                "agent {} runs for push events only; this {} event is kept here",
                self.id, hook.event
            ));
        }
        let payload = match hook.payload() {
            Ok(p) => p,
            Err(e) => return kept(format!("unreadable push: {e}")),
        };
        let push = match Push::parse(&payload) {
            Ok(p) => p,
            Err(e) => return kept(format!("unreadable push: {e}")),
        };
        let decisions = filters.evaluate(&push);
        if !decisions.iter().any(|d| d.start) {
            let why = decisions
                .first()
                .map(|d| d.why.to_string())
                .unwrap_or_default();
            return kept(format!(
                "no --on subscription of agent {} matches {}@{} ({why})",
                self.id,
                push.repository,
                push.branch().unwrap_or(&push.git_ref)
            ));
        }
        let mut env = super::base_environment(&self.script, &self.runner.shell);
        env.extend([
            ("SPIGOT_EVENT".to_string(), hook.event.clone()),
            ("SPIGOT_DELIVERY".to_string(), hook.delivery.clone()),
            ("SPIGOT_REPOSITORY".to_string(), push.repository.to_string()),
            ("SPIGOT_REF".to_string(), push.git_ref.to_string()),
            (
                "SPIGOT_BRANCH".to_string(),
                push.branch().unwrap_or_default().to_string(),
            ),
            ("SPIGOT_SHA".to_string(), push.after.to_string()),
            ("SPIGOT_AGENT".to_string(), self.id.clone()),
        ]);
        eprintln!(
            "push {} to {}@{} ({}): running {}",
            hook.delivery,
            push.repository,
            push.branch().unwrap_or_default(),
            push.after,
            self.script.path
        );
        let outcome = self.runner.run(&self.script, &env).await;
        self.metrics.hooks.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .ran(outcome.failed.is_none(), outcome.duration_ms);
        match &outcome.failed {
            None => {
                eprintln!("push {}: done in {} ms", hook.delivery, outcome.duration_ms);
                Delivery::Delivered(200)
            }
            Some(step) => kept(format!(
                "the deployment script failed at step {} ({}){}: {}",
                step.index,
                step.kind,
                step.exit_code
                    .map(|c| format!(", exit code {c}"))
                    .unwrap_or_default(),
                step.error.clone().unwrap_or_default()
            )),
        }
    }
}

/// The agent and its subscriptions compiled once.
pub struct ScriptTarget {
    agent: HookAgent,
    filters: FilterSet,
}

impl Target for ScriptTarget {
    async fn deliver(&self, hook: &Hook) -> Delivery {
        self.agent.handle(hook, &self.filters).await
    }

    /// The script runs here: always reachable.
    async fn probe(&self) -> bool {
        true
    }
}

/// Pulls hooks from the buffer and runs the script for the subscribed ones, until stopped.
pub async fn run(
    r: &Resolved,
    agent: HookAgent,
    once: bool,
    stop: Arc<AtomicBool>,
) -> Result<(), CliError> {
    let filters: Vec<Filter> = agent
        .subscriptions
        .iter()
        .map(Subscription::filter)
        .collect::<Result<_, _>>()?;
    let (filters, unfit) = FilterSet::new(filters);
    if let Some(u) = unfit.first() {
        return Err(CliError::Usage(format!("--on: {u:?}")));
    }
    eprintln!(
        "spigot agent {}: running {} for {}",
        agent.id,
        agent.script.path,
        agent
            .subscriptions
            .iter()
            .map(|s| format!("push:{}@{}", s.repository, s.branch))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let switch = crate::switch::switch(r)?;
    // One deployment at a time; the script's own steps have their time limits.
    let mut config = EngineConfig::relay(1, if once { 1 } else { 20 }, once, 100);
    config.policy.max_attempts = 1;
    let engine = crate::relay::pull_engine(r, ScriptTarget { agent, filters }, config)?;
    let counters = Counters::default();
    crate::relay::pull(&switch, &engine, &counters, once, &stop).await;
    let s = counters.summary(None);
    eprintln!(
        "spigot agent stopped: {} hooks deployed, {} kept in the dead-letter queue",
        s.delivered, s.dead_lettered
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_and_refuse_clearly() {
        assert_eq!(
            Subscription::parse("push:octo-org/app@release/*").unwrap(),
            Subscription {
                repository: "octo-org/app".into(),
                branch: "release/*".into()
            }
        );
        for bad in [
            "octo-org/app@main",
            "pull_request:octo-org/app@main",
            "push:octo-org/app",
            "push:octo-org@main",
            "push:/app@main",
            "push:octo-org/app@",
        ] {
            let e = Subscription::parse(bad).unwrap_err().to_string();
            assert!(e.contains("EVENT:OWNER/REPO@BRANCH"), "{bad}: {e}");
        }
    }
}
