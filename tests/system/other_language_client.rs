use std::time::Duration;

use sendwerk_tests::TestCluster;
use sendwerk_tests::python::{python, workspace_root};

/// A Python grpcio client generated from `proto/` creates a mailing, streams recipients,
/// starts it and watches it complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_runs_a_mailing_to_completion() -> anyhow::Result<()> {
    let python = python()?;
    let cluster = TestCluster::start().await?;
    let target = cluster.control.as_ref().expect("control runs").address.to_string();
    let script = workspace_root().join("tests/python/grpc_client.py");
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&python).arg(script).arg(&target).arg("250").output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    assert_eq!(result["sent"], 250);
    assert_eq!(cluster.sink.num_accepted(), 250);
    let message = &cluster.sink.messages()[0];
    let text = String::from_utf8_lossy(&message.data);
    assert!(text.contains("Subject: Hallo Py"), "personalised from python's variables");
    cluster.shutdown().await
}
