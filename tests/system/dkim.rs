use std::process::Command;
use std::time::Duration;

use sendwerk_mail::dkim::{DkimAlgorithm, DkimKeyConfig};
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::python::{python, workspace_root};
use sendwerk_tests::{TestCluster, TestClusterOptions};

fn fixture(name: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(workspace_root().join("tests/fixtures/dkim").join(name))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_messages_carry_rsa_and_ed25519_signatures_an_independent_verifier_accepts() -> anyhow::Result<()> {
    let python = python()?;
    let keys = vec![
        DkimKeyConfig {
            domain: "shop.example".into(),
            selector: "rsa2048".into(),
            algorithm: DkimAlgorithm::Rsa,
            private_key_pem: fixture("rsa.pem")?,
        },
        DkimKeyConfig {
            domain: "shop.example".into(),
            selector: "ed25519".into(),
            algorithm: DkimAlgorithm::Ed25519,
            private_key_pem: fixture("ed25519.pem")?,
        },
    ];
    let mut cluster = TestCluster::start_with(TestClusterOptions { dkim_keys: keys, ..Default::default() }).await?;
    let mut content =
        simple_content("Grüße an {{ name }} 👋", "Hallo {{ name }},\n\nzeilen mit Leerzeichen am Ende   \n\n   \n");
    content.html_template = "<p>Hallo {{ name }}</p>\n\n".into();
    content.attachments = vec![sendwerk_proto::v1::Attachment {
        filename: "preise.txt".into(),
        content_type: "text/plain".into(),
        content: b"a;b\n1;2\n".to_vec(),
        content_id: String::new(),
    }];
    let id = cluster.create_mailing(content).await?;
    cluster
        .add_recipients(
            id,
            vec![row("a@dkim.example", "", &[("name", "Jörg")]), row("b@dkim.example", "", &[("name", ". dot")])],
            10,
        )
        .await?;
    cluster.schedule_now(id).await?;
    cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let messages = cluster.sink.messages();
    assert_eq!(messages.len(), 2);
    let scratch = tempfile::tempdir()?;
    for (index, message) in messages.iter().enumerate() {
        let path = scratch.path().join(format!("m{index}.eml"));
        std::fs::write(&path, &message.data)?;
        let output = Command::new(&python)
            .arg(workspace_root().join("tests/python/verify_dkim.py"))
            .arg(&path)
            .arg(format!("--txt=rsa2048._domainkey.shop.example={}", fixture("rsa.txt")?.trim()))
            .arg(format!("--txt=ed25519._domainkey.shop.example={}", fixture("ed25519.txt")?.trim()))
            .output()?;
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "dkimpy rejected the signatures:\n{report}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(report.lines().filter(|line| line.starts_with("ok")).count(), 2, "two good signatures:\n{report}");
    }
    cluster.shutdown().await
}
