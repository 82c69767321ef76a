//! Session tests over an in-memory pipe: exact transcripts and fuzz-ish inputs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::ServerConfig;
use crate::sink::BehaviourSink;

/// Runs one session over an in-memory pipe: sends `input`, closes, returns all output.
async fn run_session(input: &[u8], config: ServerConfig, sink: &BehaviourSink) -> String {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (server_read, server_write) = tokio::io::split(server);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let io = SmtpIo::new(server_read, server_write, config.idle_timeout, config.session_timeout);
    let settings = SessionSettings::new(config);
    let (_shutdown_tx, shutdown_rx) = watch::channel(false);
    let info = SessionInfo::new(1, "127.0.0.1:2525".parse().unwrap());
    let session = Session::new(io, sink, &settings, info, shutdown_rx).run();
    let client = async {
        client_write.write_all(input).await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut output = Vec::new();
        client_read.read_to_end(&mut output).await.unwrap();
        output
    };
    let ((), output) = tokio::join!(session, client);
    String::from_utf8(output).unwrap()
}

fn test_config() -> ServerConfig {
    ServerConfig {
        hostname: "sink.test".to_owned(),
        max_message_bytes: 1000,
        max_recipients: 2,
        idle_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

fn reply_lines(output: &str) -> Vec<&str> {
    output.split_terminator("\r\n").collect()
}

#[tokio::test]
async fn a_pipelined_transaction_gets_every_reply_in_order() {
    let sink = BehaviourSink::new();
    let input = b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n\
        RCPT TO:<permfail@x.test>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n";
    let output = run_session(input, test_config(), &sink).await;
    assert_eq!(
        reply_lines(&output),
        [
            "220 sink.test ESMTP ready",
            "250-sink.test",
            "250-SIZE 1000",
            "250-PIPELINING",
            "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES",
            "250 SMTPUTF8",
            "250 2.1.0 ok",
            "250 2.1.5 ok",
            "550 5.1.1 mailbox unavailable",
            "354 end data with <CR><LF>.<CR><LF>",
            "250 2.0.0 ok: queued",
            "221 2.0.0 bye",
        ]
    );
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipients, ["b@x.test"]);
    assert_eq!(messages[0].data, "hello\r\n");
}

#[tokio::test]
async fn commands_out_of_order_get_503_and_helo_sessions_get_no_enhanced_codes() {
    let sink = BehaviourSink::new();
    let input = b"MAIL FROM:<a@x.test>\r\nHELO c\r\nRCPT TO:<b@x.test>\r\nDATA\r\n\
        MAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\nDATA\r\nBOGUS\r\nRSET\r\n";
    let output = run_session(input, test_config(), &sink).await;
    assert_eq!(
        reply_lines(&output),
        [
            "220 sink.test ESMTP ready",
            "503 send EHLO or HELO first",
            "250 sink.test",
            "503 send MAIL first",
            "503 send MAIL first",
            "250 ok",
            "503 nested MAIL command",
            "554 no valid recipients",
            "500 command not recognized",
            "250 ok",
        ]
    );
}

#[tokio::test]
async fn limits_on_size_recipients_and_line_length_are_enforced() {
    let sink = BehaviourSink::new();
    let mut input = b"EHLO c\r\nMAIL FROM:<a@x.test> SIZE=1001\r\nMAIL FROM:<a@x.test> SIZE=1000\r\n\
        RCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nRCPT TO:<d@x.test>\r\nDATA\r\n"
        .to_vec();
    input.extend_from_slice(&b"0123456789\r\n".repeat(100));
    input.extend_from_slice(b".\r\nNOOP ");
    input.extend_from_slice(&[b'x'; 5000]);
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let output = run_session(&input, test_config(), &sink).await;
    assert_eq!(
        reply_lines(&output)[7..],
        [
            "552 5.3.4 message size exceeds fixed maximum",
            "250 2.1.0 ok",
            "250 2.1.5 ok",
            "250 2.1.5 ok",
            "452 4.5.3 too many recipients",
            "354 end data with <CR><LF>.<CR><LF>",
            "552 5.3.4 message size exceeds fixed maximum",
            "500 5.5.2 line too long",
            "250 2.0.0 ok",
        ]
    );
    assert_eq!(sink.num_accepted(), 0);
}

#[tokio::test]
async fn random_bytes_never_panic_the_session() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let vocabulary: [&[u8]; 14] = [
        b"EHLO c\r\n",
        b"HELO c\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
        b"MAIL FROM:<>",
        b"RCPT TO:<b@x.test>\r\n",
        b"RCPT TO:<drop@x.test>\r\n",
        b"DATA\r\n",
        b".\r\n",
        b"\r\n",
        b"\n",
        b"..",
        b"RSET\r\n",
        b"\xff\x00\xc3",
        b" SIZE=99999999999999999999",
    ];
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..rng.random_range(0..30) {
            if rng.random_bool(0.3) {
                let len = rng.random_range(0..64);
                input.extend((0..len).map(|_| rng.random::<u8>()));
            } else {
                input.extend_from_slice(vocabulary[rng.random_range(0..vocabulary.len())]);
            }
        }
        let sink = BehaviourSink::new();
        let output = run_session(&input, test_config(), &sink).await;
        assert!(output.starts_with("220 "), "{output}");
    }
}

#[tokio::test]
async fn a_session_cut_at_any_byte_ends_cleanly() {
    let transcript = b"EHLO c\r\nMAIL FROM:<a@x.test> SIZE=10\r\nRCPT TO:<b@x.test>\r\nDATA\r\n\
        ..dot\r\nbody\r\n.\r\nQUIT\r\n";
    for cut in 0..=transcript.len() {
        let sink = BehaviourSink::new();
        let output = run_session(&transcript[..cut], test_config(), &sink).await;
        assert!(output.starts_with("220 "), "{output}");
        let delivered = sink.messages();
        if cut < transcript.len() - b"QUIT\r\n".len() {
            assert!(delivered.is_empty(), "cut at {cut}");
        } else {
            assert_eq!(delivered[0].data, ".dot\r\nbody\r\n");
        }
    }
}
