//! `spigot secret show`: the webhook secret to paste into GitHub.

use anyhow::Context;
use spigot_core::resources::Resource;

use crate::CliError;
use crate::resources::Where;

#[derive(clap::Subcommand)]
pub(crate) enum SecretCommand {
    /// Print the webhook secret(s) the receiver accepts (stack output WebhookSecretArn).
    #[command(
        after_help = "Examples:\n  spigot secret show --stack spigot\n  aws secretsmanager get-secret-value --secret-id ARN --query SecretString --output text"
    )]
    Show,
}

pub(crate) async fn run(place: &Where, cmd: SecretCommand) -> Result<(), CliError> {
    match cmd {
        SecretCommand::Show => {
            let r = place.resolve().await?;
            if r.local.is_some() && r.get(Resource::WebhookSecret).is_none() {
                return Err(CliError::Usage(format!(
                    "the local stack keeps no secret in Secrets Manager: `spigot dev` verifies with its --secret (or WEBHOOK_SECRET), else the public test secret {}",
                    crate::local::TEST_SECRET
                )));
            }
            let arn = r.need(Resource::WebhookSecret)?;
            let secret = spigot_aws::fetch_secret(&r.sdk, arn)
                .await
                .context("cannot read the webhook secret")?;
            println!("{secret}");
            Ok(())
        }
    }
}
