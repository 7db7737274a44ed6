//! Finding the resources a command acts on:
//! flags > environment (`SPIGOT_*`) > stack outputs (`--stack`) > `--local` (`.spigot/dev.json`).
//! The flags, variables and outputs come from one table, [`spigot_core::resources::TABLE`].

use std::path::Path;

use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;
use spigot_core::resources::{Resource, Resources, TABLE};

use crate::CliError;

/// Where `spigot dev` writes the ids of the local stack.
pub(crate) const DEV_FILE: &str = ".spigot/dev.json";

/// Flags that say where the Spigot resources are.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Where {
    /// Use the local stack of `spigot dev` (.spigot/dev.json).
    #[arg(long, global = true, help_heading = "Where (any command)")]
    pub local: bool,
    /// CloudFormation stack whose outputs name the resources [default: stack_name in samconfig.toml, else spigot]; each resource also has a flag of its own (`spigot where`).
    #[arg(
        long,
        global = true,
        help_heading = "Where (any command)",
        env = "SPIGOT_STACK"
    )]
    pub stack: Option<String>,
    /// One flag per resource of the table (`--buffer-url`, `--api-id`, ...).
    #[command(flatten)]
    pub named: Named,
    /// AWS endpoint override (a moto server, say).
    #[arg(
        long,
        global = true,
        help_heading = "Where (any command)",
        env = "AWS_ENDPOINT_URL"
    )]
    pub endpoint: Option<String>,
    /// AWS region.
    #[arg(long, global = true, help_heading = "Where (any command)")]
    pub region: Option<String>,
    /// AWS profile.
    #[arg(long, global = true, help_heading = "Where (any command)")]
    pub profile: Option<String>,
}

/// The resources named by flags or `SPIGOT_*` variables: one global flag per row of the table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Named(pub Resources);

impl clap::FromArgMatches for Named {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut named = Self::default();
        named.update_from_arg_matches(m)?;
        Ok(named)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for row in TABLE {
            if let Some(v) = m.get_one::<String>(row.flag) {
                self.0.set(row.resource, v.clone());
            }
        }
        Ok(())
    }
}

impl clap::Args for Named {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        TABLE.iter().fold(cmd, |cmd, row| {
            cmd.arg(
                clap::Arg::new(row.flag)
                    .long(row.flag)
                    .help_heading("Where (any command)")
                    .env(row.cli_env)
                    .global(true)
                    // Ten of them in every command's help were a wall: `spigot where` lists them.
                    .hide(true)
                    .value_name("VALUE")
                    .help(format!("{} [stack output {}]", row.what, row.output)),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The resolved resources (any may still be missing; [`Resolved::need`] says how to give it).
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// SDK configuration for them.
    pub sdk: SdkConfig,
    /// The resources found.
    pub resources: Resources,
    /// The local stack, with `--local`.
    pub local: Option<LocalStack>,
    /// Where the stack lookup went (for error messages).
    pub source: String,
}

impl Where {
    /// Resolves every id, consulting the stack or the local file only for what flags and env leave out.
    pub(crate) async fn resolve(&self) -> Result<Resolved, CliError> {
        let (region, profile) = (self.region.as_deref(), self.profile.as_deref());
        let mut r = if self.local {
            let stack = read_dev_file(Path::new(DEV_FILE))?;
            let endpoint = self.endpoint.clone().unwrap_or(stack.endpoint.clone());
            check_local_endpoint(&endpoint)?;
            Resolved {
                sdk: spigot_aws::sdk_config_with(Some(&endpoint), region, profile).await,
                resources: stack.resources.clone(),
                local: Some(stack),
                source: format!("local stack in {DEV_FILE}"),
            }
        } else {
            let sdk = spigot_aws::sdk_config_with(self.endpoint.as_deref(), region, profile).await;
            let all_given = TABLE
                .iter()
                .filter(|row| !row.optional)
                .all(|row| self.named.0.is_named(row.resource));
            let (resources, source) = if all_given {
                (Resources::default(), String::new())
            } else {
                let name = self.stack.clone().unwrap_or_else(stack_from_samconfig);
                match stack_outputs(&sdk, &name).await {
                    Ok(out) => (
                        Resources::from_outputs(out.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                        format!("outputs of stack {name}"),
                    ),
                    Err(e) => (
                        Resources::default(),
                        format!("stack {name} could not be read: {e}"),
                    ),
                }
            };
            Resolved {
                sdk,
                resources,
                local: None,
                source,
            }
        };
        r.resources.overlay(&self.named.0);
        Ok(r)
    }
}

impl Where {
    /// GitHub as the Lambdas reach it, from the same settings (`GITHUB_API_URL`,
    /// `GITHUB_TOKEN` or `GITHUB_TOKEN_SECRET_ARN`, or a GitHub App); `None` without credentials.
    pub(crate) async fn github(&self) -> Result<Option<spigot_aws::GitHubApi>, CliError> {
        let settings = spigot_core::config::Settings::from_env()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let sdk = spigot_aws::sdk_config_with(
            self.endpoint.as_deref(),
            self.region.as_deref(),
            self.profile.as_deref(),
        )
        .await;
        spigot_aws::GitHubApi::from_settings(&sdk, &settings)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))
    }
}

impl Resolved {
    /// The value of `resource`, or the error naming the three ways to give it.
    pub(crate) fn need(&self, resource: Resource) -> Result<&str, CliError> {
        let row = resource.row();
        self.resources.get(resource).ok_or_else(|| {
            CliError::Usage(format!(
                "no {output} known: pass --{flag}, set {env}, or name the deployed stack with --stack (its output {output}); \
                 for the local stack add --local. ({source})",
                output = row.output,
                flag = row.flag,
                env = row.cli_env,
                source = if self.source.is_empty() { "no stack consulted" } else { &self.source },
            ))
        })
    }

    /// The resource, when known.
    pub(crate) fn get(&self, resource: Resource) -> Option<&str> {
        self.resources.get(resource)
    }

    /// The archive's timeline, written to the stack's stream (none: steps are not kept).
    pub(crate) fn timeline(&self) -> spigot_core::ports::Timeline {
        spigot_aws::FirehoseArchive::timeline(&self.sdk, &self.resources)
    }
}

/// A local stack's moto must answer; when it does not, say what to start.
fn check_local_endpoint(endpoint: &str) -> Result<(), CliError> {
    let hostport = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                .is_ok()
        });
    if reachable {
        Ok(())
    } else {
        Err(CliError::Failed(anyhow::anyhow!(
            "the local stack's moto at {endpoint} does not answer: is `make run` running? (`make run` keeps it up; `make stop` ends it)"
        )))
    }
}

/// Reads the local stack file written by `spigot dev`.
pub(crate) fn read_dev_file(path: &Path) -> Result<LocalStack, CliError> {
    let text = std::fs::read_to_string(path).map_err(|_| {
        CliError::Usage(format!(
            "no local stack: {} does not exist; start one with `make run` (or `spigot dev`) in this directory",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a spigot dev file ({e}); restart `spigot dev`",
            path.display()
        ))
    })
}

/// `stack_name` from `samconfig.toml` in the current directory, else `spigot`.
pub(crate) fn stack_from_samconfig() -> String {
    std::fs::read_to_string("samconfig.toml")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "stack_name").then(|| v.trim().trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "spigot".to_string())
}

async fn stack_outputs(sdk: &SdkConfig, name: &str) -> Result<Vec<(String, String)>, String> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let out = cfn
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| spigot_aws::root_cause(&e))?;
    Ok(out
        .stacks
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|s| {
            s.outputs
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| Some((o.output_key?, o.output_value?)))
                .collect()
        })
        .unwrap_or_default())
}

/// `spigot where`: each resource's flag, variable and stack output, and the
/// value this invocation resolves it to (from flags, variables, `--stack` or `--local`).
pub(crate) async fn show(place: &Where) -> Result<(), CliError> {
    let r = place.resolve().await?;
    println!(
        "resources from {}",
        if r.source.is_empty() {
            "flags and variables"
        } else {
            &r.source
        }
    );
    println!(
        "{:<20} {:<26} {:<18} VALUE",
        "FLAG", "VARIABLE", "STACK OUTPUT"
    );
    for row in TABLE {
        println!(
            "{:<20} {:<26} {:<18} {}",
            format!("--{}", row.flag),
            row.cli_env,
            row.output,
            r.get(row.resource).unwrap_or("-")
        );
    }
    Ok(())
}
