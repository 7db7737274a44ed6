//! Test harness: a moto server on loopback, local stacks in it, a switchable
//! fake target that records every request, local endpoints speaking AWS wire
//! protocols moto lacks, the handlers wired to real adapters, and ledgers.

pub mod apigatewayv2;
pub mod fake_aws;
pub mod github;
pub mod github_hooks;
pub mod iam;
pub mod ledger;
pub mod moto;
pub mod proxy;
pub mod runtime;
pub mod sqs;
pub mod target;
pub mod wiring;

pub use apigatewayv2::ApiGatewayV2;
pub use fake_aws::{Call, FakeAws, FakeCodePipeline};
pub use github::{CompareMode, FakeGitHub, GitHubCall};
pub use github_hooks::{Attempt, FakeHooks, Fault};
pub use iam::{
    Policies, Principal, as_principal, as_principal_listing_only, principal_documents,
    principal_keys, principal_keys_with, translated,
};
pub use ledger::Ledger;
pub use moto::{free_port, moto, plain_moto, python, sdk, stack, unique};
pub use proxy::Proxy;
pub use runtime::FakeRuntime;
pub use sqs::{depth, peek_all, set_visibility_timeout, take_all, take_as_sqs_event};
pub use target::{FakeTarget, Recorded};
pub use wiring::*;

/// Serves `app` on a free loopback port in the background; its address.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    address
}

/// A new bucket in the moto server behind `sdk`, named `prefix` and a unique tail.
pub async fn bucket(sdk: &spigot_aws::aws_config::SdkConfig, prefix: &str) -> String {
    let name = unique(prefix);
    spigot_aws::s3_client(sdk)
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    name
}
