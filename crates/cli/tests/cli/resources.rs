//! Where the resources are: missing ids and `spigot where`.

use crate::prelude::*;

#[test]
fn a_missing_id_names_the_ways_to_give_it_and_exits_2() {
    let dir = workdir();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["status", "--stack", "no-such-stack", "--endpoint", moto()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for hint in ["--api-id", "SPIGOT_API_ID", "--stack", "--local"] {
        assert!(err.contains(hint), "{err}");
    }
    let out = spigot_as(&dir, Principal::Operator)
        .args(["on", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("make run"));
}

/// Subcommand help is no longer a wall of ten resource flags; `spigot
/// where` lists them (flag, variable, stack output) with the value each
/// resolves to here. The flags still work (control: --bucket overrides).
#[tokio::test(flavor = "multi_thread")]
async fn where_lists_the_resource_flags_that_help_no_longer_repeats() {
    let dir = workdir();
    let (_sdk, stack) = local_stack(&dir, None).await;
    let help = spigot(&dir).args(["on", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(
        !help.contains("--buffer-url") && help.contains("spigot where"),
        "{help}"
    );
    let out = spigot(&dir).args(["where", "--local"]).output().unwrap();
    succeeded(&out);
    let listed = text(&out).0;
    assert!(
        listed.contains("--buffer-url")
            && listed.contains("SPIGOT_BUFFER_URL")
            && listed.contains("BufferQueueUrl"),
        "{listed}"
    );
    assert!(listed.contains(stack.get(Resource::Bucket)), "{listed}");
    let over = spigot(&dir)
        .args(["where", "--local", "--bucket", "another-bucket"])
        .output()
        .unwrap();
    assert!(
        text(&over).0.contains("another-bucket"),
        "{}",
        text(&over).0
    );
}
