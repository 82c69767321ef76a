//! Protocol behaviour over real TCP on 127.0.0.1: delivery, pipelining, limits, shutdown.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{RawClient, TEST_TIMEOUT, start_behaviour_sink, test_config};
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sendwerk_smtpd::ServerConfig;
use sendwerk_smtpd::sink::BehaviourSink;

#[tokio::test]
async fn lettre_delivers_a_message_that_arrives_byte_for_byte() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(server.local_addr().port()).build();
    let envelope = Envelope::new(
        Some("sender@example.test".parse()?),
        vec!["rcpt1@example.test".parse()?, "rcpt2@example.test".parse()?],
    )?;
    let message = "From: sender@example.test\r\nTo: rcpt1@example.test\r\nSubject: grüße\r\n\r\n\
        first line\r\n.a line starting with a dot\r\n..two dots\r\n.\r\nlast line";

    let response = transport.send_raw(&envelope, message.as_bytes()).await?;

    assert!(response.is_positive());
    assert!(sink.wait_for_messages(1, TEST_TIMEOUT).await);
    let received = sink.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].reverse_path, "sender@example.test");
    assert_eq!(received[0].recipients, ["rcpt1@example.test", "rcpt2@example.test"]);
    // lettre ends the data with CRLF . CRLF, so the last line gains its line end.
    assert_eq!(received[0].data, format!("{message}\r\n").as_bytes());
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn dot_stuffed_lines_round_trip_and_bare_lf_is_kept() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let wire = b"..leading\r\n...\r\n..\r\nbare\n.lf\r\nend\r\n.\r\n";
    let reply = client.send_message("a@example.test", "b@example.test", wire).await?;

    assert_eq!(reply, "250 2.0.0 ok: queued");
    assert_eq!(sink.messages()[0].data, b".leading\r\n..\r\n.\r\nbare\n.lf\r\nend\r\n".as_slice());
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let (mut client, _greeting) = RawClient::connect(server.local_addr()).await?;

    client
        .send(
            b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n\
            RCPT TO:<permfail@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n",
        )
        .await?;
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(client.read_reply().await?);
    }
    client.send(b"body\r\n.\r\nNOOP\r\nRSET\r\nVRFY x\r\nHELP\r\nQUIT\r\n").await?;
    for _ in 0..6 {
        replies.push(client.read_reply().await?);
    }

    assert!(replies[0].starts_with("250-sink.test\n"));
    assert_eq!(
        replies[1..],
        [
            "250 2.1.0 ok",
            "250 2.1.5 ok",
            "550 5.1.1 mailbox unavailable",
            "250 2.1.5 ok",
            "354 end data with <CR><LF>.<CR><LF>",
            "250 2.0.0 ok: queued",
            "250 2.0.0 ok",
            "250 2.0.0 ok",
            "252 2.5.0 cannot verify user, but will accept message",
            "214 2.0.0 see https://www.rfc-editor.org/rfc/rfc5321",
            "221 2.0.0 bye",
        ]
    );
    client.expect_closed().await?;
    assert_eq!(sink.messages()[0].recipients, ["b@example.test", "c@example.test"]);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn oversize_message_gets_552_and_the_connection_stays_usable() -> Result<()> {
    let config = ServerConfig { max_message_bytes: 1024, ..test_config() };
    let (server, sink) = start_behaviour_sink(config, BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let refused = client.command("MAIL FROM:<a@example.test> SIZE=1025").await?;
    let mut oversize = b"0123456789abcdef\r\n".repeat(1000);
    oversize.extend_from_slice(b".\r\n");
    let too_big = client.send_message("a@example.test", "b@example.test", &oversize).await?;
    let fits = client.send_message("a@example.test", "b@example.test", b"small\r\n.\r\n").await?;

    assert_eq!(refused, "552 5.3.4 message size exceeds fixed maximum");
    assert_eq!(too_big, "552 5.3.4 message size exceeds fixed maximum");
    assert_eq!(fits, "250 2.0.0 ok: queued");
    assert_eq!(sink.num_accepted(), 1);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn too_long_command_line_gets_500_and_the_session_goes_on() -> Result<()> {
    let (server, _sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let long_line = format!("NOOP {}", "x".repeat(100_000));
    let too_long = client.command(&long_line).await?;
    let after = client.command("NOOP").await?;
    let bare_lf = {
        client.send(b"RSET\n").await?;
        client.read_reply().await?
    };

    assert_eq!(too_long, "500 5.5.2 line too long");
    assert_eq!(after, "250 2.0.0 ok");
    assert_eq!(bare_lf, "250 2.0.0 ok");
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn idle_session_is_closed_with_421_after_the_idle_timeout() -> Result<()> {
    let config = ServerConfig { idle_timeout: Duration::from_millis(200), ..test_config() };
    let (server, _sink) = start_behaviour_sink(config, BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let reply = client.read_reply().await?;

    assert_eq!(reply, "421 4.4.2 idle timeout, closing connection");
    client.expect_closed().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn session_timeout_ends_even_a_busy_session() -> Result<()> {
    let config = ServerConfig { session_timeout: Duration::from_millis(300), ..test_config() };
    let (server, _sink) = start_behaviour_sink(config, BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;

    let reply = loop {
        let reply = client.command("NOOP").await?;
        if reply != "250 2.0.0 ok" {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(reply, "421 4.4.2 session timeout, closing connection");
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_421() -> Result<()> {
    let config = ServerConfig { max_connections: 1, ..test_config() };
    let (server, _sink) = start_behaviour_sink(config, BehaviourSink::new()).await;
    let (_first, first_greeting) = RawClient::connect(server.local_addr()).await?;

    let (mut second, second_greeting) = RawClient::connect(server.local_addr()).await?;

    assert_eq!(first_greeting, "220 sink.test ESMTP ready");
    assert_eq!(second_greeting, "421 4.3.2 sink.test too many connections, try again later");
    second.expect_closed().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_lets_the_open_transaction_finish_and_closes_idle_sessions() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let mut idle = RawClient::connect_and_greet(server.local_addr()).await?;
    let mut busy = RawClient::connect_and_greet(server.local_addr()).await?;
    busy.command("MAIL FROM:<a@example.test>").await?;
    busy.command("RCPT TO:<b@example.test>").await?;

    let shutdown = tokio::spawn(server.shutdown());
    let idle_reply = idle.read_reply().await?;
    let data_reply = busy.command("DATA").await?;
    busy.send(b"finished\r\n.\r\n").await?;
    let message_reply = busy.read_reply().await?;
    let next_reply = busy.command("MAIL FROM:<a@example.test>").await?;

    assert_eq!(idle_reply, "421 4.3.0 server shutting down, try again later");
    assert_eq!(data_reply, "354 end data with <CR><LF>.<CR><LF>");
    assert_eq!(message_reply, "250 2.0.0 ok: queued");
    assert_eq!(next_reply, "421 4.3.0 server shutting down, try again later");
    busy.expect_closed().await?;
    tokio::time::timeout(TEST_TIMEOUT, shutdown).await.context("shutdown hangs")???;
    assert_eq!(sink.num_accepted(), 1);
    Ok(())
}

#[tokio::test]
async fn two_thousand_messages_over_one_connection_all_arrive() -> Result<()> {
    let (server, sink) = start_behaviour_sink(test_config(), BehaviourSink::new()).await;
    let mut client = RawClient::connect_and_greet(server.local_addr()).await?;
    let num_messages = 2000;

    for index in 0..num_messages {
        // MAIL, RCPT and DATA pipelined in one write, as RFC 2920 allows.
        let envelope = format!("MAIL FROM:<a@example.test>\r\nRCPT TO:<user{index}@example.test>\r\nDATA\r\n");
        client.send(envelope.as_bytes()).await?;
        for expected in ["250", "250", "354"] {
            let reply = client.read_reply().await?;
            assert!(reply.starts_with(expected), "message {index}: {reply}");
        }
        client.send(format!("Subject: {index}\r\n\r\nbody\r\n.\r\n").as_bytes()).await?;
        let reply = client.read_reply().await?;
        assert_eq!(reply, "250 2.0.0 ok: queued", "message {index}");
    }

    assert_eq!(sink.num_accepted(), num_messages);
    let received = sink.messages();
    assert_eq!(received[1999].data, "Subject: 1999\r\n\r\nbody\r\n");
    server.shutdown().await?;
    Ok(())
}
