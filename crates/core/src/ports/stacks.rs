use std::future::Future;

use super::PortError;

/// One resource of a CloudFormation stack, as CloudFormation describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackResource {
    /// `Custom::PipelineFilter`, `AWS::CloudFormation::CustomResource`, ...
    pub resource_type: String,
    /// `CREATE_IN_PROGRESS`, `UPDATE_COMPLETE`, ...
    pub status: String,
}

/// CloudFormation, asked who is calling: the custom resource checks that the
/// stack a request names really has the resource it names, in progress.
pub trait Stacks: Send + Sync {
    /// Resource `logical_id` of stack `stack_id` (an ARN); `None` when the
    /// stack has no such resource (or there is no such stack).
    fn resource(
        &self,
        stack_id: &str,
        logical_id: &str,
    ) -> impl Future<Output = Result<Option<StackResource>, PortError>> + Send;
}

/// No CloudFormation to ask (`spigot dev`, unit tests): nothing is checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStacks;

impl Stacks for NoStacks {
    async fn resource(&self, _: &str, _: &str) -> Result<Option<StackResource>, PortError> {
        Err(PortError::new("no CloudFormation is configured"))
    }
}
