use std::net::Ipv4Addr;
use std::time::Duration;

use sendwerk_mail::mx::MxResolverConfig;
use sendwerk_proto::v1;
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions};

use crate::dns_server::{DnsServer, Record};

/// Direct-to-MX against a DNS server on loopback: MX hosts in preference order, a dead primary
/// falls through to the backup, a null MX and a non-existent domain fail permanently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_mx_delivery_follows_the_mx_records() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let dns = DnsServer::start(vec![
        Record::mx("direct.test", 10, "mx1.direct.test", 60),
        Record::a("mx1.direct.test", Ipv4Addr::LOCALHOST, 60),
        // The preferred MX does not answer (nothing listens on 127.0.0.2), the backup does.
        Record::mx("backup.test", 5, "dead.backup.test", 60),
        Record::mx("backup.test", 20, "mx2.backup.test", 60),
        Record::a("dead.backup.test", Ipv4Addr::new(127, 0, 0, 2), 60),
        Record::a("mx2.backup.test", Ipv4Addr::LOCALHOST, 60),
        Record::mx("nullmx.test", 0, ".", 60),
        Record::nxdomain("nowhere.test"),
    ]);
    let mut config = cluster.sender_config();
    config.mx = Some(MxResolverConfig {
        nameservers: vec![dns.addr()],
        timeout: Duration::from_secs(2),
        smtp_port: cluster.sink_port(),
        ..MxResolverConfig::default()
    });
    config.allow_private_mx_addresses = true;
    cluster.start_sender_with(config)?;

    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster
        .add_recipients(
            id,
            vec![
                row("a@direct.test", "", &[]),
                row("b@backup.test", "", &[]),
                row("c@nullmx.test", "", &[]),
                row("d@nowhere.test", "", &[]),
            ],
            10,
        )
        .await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let counts = done.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.failed), (2, 2));
    let recipients = cluster.recipients(id).await?;
    let reply = |email: &str| {
        let recipient = recipients.iter().find(|r| r.email == email).expect("present");
        (recipient.state, recipient.last_reply.clone().unwrap_or_default())
    };
    assert_eq!(reply("a@direct.test").0, v1::RecipientState::Sent as i32);
    assert_eq!(reply("b@backup.test").0, v1::RecipientState::Sent as i32, "the backup MX took it");
    let (state, null_mx) = reply("c@nullmx.test");
    assert_eq!((state, null_mx.enhanced_status.as_str()), (v1::RecipientState::Failed as i32, "5.1.10"));
    let (state, missing) = reply("d@nowhere.test");
    assert_eq!((state, missing.enhanced_status.as_str()), (v1::RecipientState::Failed as i32, "5.1.2"));
    let delivered: Vec<String> = cluster.sink.messages().iter().flat_map(|m| m.recipients.clone()).collect();
    assert_eq!(delivered.len(), 2);
    assert!(dns.queries_for("direct.test") >= 1);
    cluster.shutdown().await
}
