//! The ready-made sinks over real TCP: local-part behaviours and the maildir capture sink.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{RawClient, TEST_TIMEOUT, start_behaviour_sink, start_server, test_config};
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sendwerk_smtpd::sink::{BehaviourSink, MaildirSink};

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nbody\r\n.\r\n";

fn lettre_transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(port).build()
}

#[tokio::test]
async fn permfail_recipient_is_refused_at_rcpt_with_550() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    client.command("MAIL FROM:<a@example.test>").await?;
    let reply = client.command("RCPT TO:<permfail-42@example.test>").await?;
    let data_reply = client.command("DATA").await?;
    let quit_reply = client.command("QUIT").await?;

    assert_eq!(reply, "550 5.1.1 mailbox unavailable");
    assert_eq!(data_reply, "554 5.5.1 no valid recipients");
    assert_eq!(quit_reply, "221 2.0.0 bye");
    assert_eq!(sink.attempts_for("permfail-42@example.test"), 1);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn tempfail_recipient_is_deferred_once_then_accepted() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let transport = lettre_transport(server.local_addr().port());
    let envelope = Envelope::new(Some("a@example.test".parse()?), vec!["tempfail@example.test".parse()?])?;

    let first = transport.send_raw(&envelope, b"Subject: 1\r\n\r\nx").await;
    let second = transport.send_raw(&envelope, b"Subject: 1\r\n\r\nx").await;

    let first_error = first.expect_err("the first attempt must be deferred");
    assert!(first_error.is_transient(), "{first_error}");
    assert!(second?.is_positive());
    assert_eq!(sink.attempts_for("tempfail@example.test"), 2);
    assert_eq!(sink.num_accepted(), 1);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn slow_recipient_is_accepted_after_the_configured_delay() -> Result<()> {
    let delay = Duration::from_millis(150);
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new().with_slow_delay(delay)).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let started = Instant::now();
    let reply = client.send_message("a@example.test", "slow@example.test", MESSAGE).await?;

    assert_eq!(reply, "250 2.0.0 ok: queued");
    assert!(started.elapsed() >= delay);
    assert_eq!(sink.num_accepted(), 1);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn datafail_recipient_gets_554_after_data() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let reply = client.send_message("a@example.test", "datafail@example.test", MESSAGE).await?;
    let next = client.command("NOOP").await?;

    assert_eq!(reply, "554 5.6.0 message content rejected");
    assert_eq!(next, "250 2.0.0 ok");
    assert_eq!(sink.num_accepted(), 0);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn drop_recipient_closes_the_connection_after_data_without_reply() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let reply = client.send_message("a@example.test", "drop@example.test", MESSAGE).await;

    assert!(reply.is_err(), "expected no reply, got {reply:?}");
    assert_eq!(sink.num_accepted(), 0);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn sink_without_storage_only_counts_and_applies_data_latency() -> Result<()> {
    let sink = BehaviourSink::new().storing_messages(false).with_data_latency(Duration::from_millis(1));
    let (server, sink) = start_behaviour_sink(test_config(), sink).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    for _ in 0..3 {
        client.send_message("a@example.test", "b@example.test", MESSAGE).await?;
    }

    assert!(sink.wait_for_messages(3, TEST_TIMEOUT).await);
    assert!(sink.messages().is_empty());
    assert_eq!(sink.attempts_for("b@example.test"), 0);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn maildir_sink_stores_a_lettre_message_in_new() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sink = Arc::new(MaildirSink::new(dir.path().join("Maildir"))?);
    let server = start_server(test_config(), Arc::clone(&sink)).await;
    let transport = lettre_transport(server.local_addr().port());
    let envelope = Envelope::new(Some("a@example.test".parse()?), vec!["b@example.test".parse()?])?;

    let response = transport.send_raw(&envelope, b"Subject: stored\r\n\r\nhello\r\n").await?;

    assert!(response.is_positive());
    assert_eq!(sink.num_messages(), 1);
    let stored: Vec<_> = std::fs::read_dir(dir.path().join("Maildir/new"))?.collect::<Result<_, _>>()?;
    assert_eq!(stored.len(), 1);
    let content = std::fs::read(stored[0].path())?;
    assert_eq!(
        content,
        b"Return-Path: <a@example.test>\r\nDelivered-To: b@example.test\r\nSubject: stored\r\n\r\nhello\r\n\r\n"
    );
    server.shutdown().await?;
    Ok(())
}
