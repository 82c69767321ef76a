//! `smtp::SmtpSession` against a scripted SMTP server on loopback: the envelope is pipelined
//! only when the server offers PIPELINING, replies are matched to their commands, rejected
//! transactions are reset and the connection goes on, and content is dot-stuffed.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use sendwerk_core::DeliveryOutcome;
use sendwerk_mail::smtp::{self, RelayConfig};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

/// How the scripted server behaves.
#[derive(Clone, Copy)]
struct Script {
    offers_pipelining: bool,
    /// Answer DATA with 354 even when no recipient was accepted (a broken server).
    data_without_recipients: bool,
}

/// What the scripted server saw.
#[derive(Default)]
struct Seen {
    /// Command lines in order, without the line ending.
    commands: Vec<String>,
    /// Message contents with dot-stuffing undone.
    messages: Vec<String>,
    /// Commands that arrived before the previous reply was written, from a client the server
    /// did not offer PIPELINING to.
    unasked_pipelining: Vec<String>,
}

async fn start_server(script: Script) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&shared);
            tokio::spawn(async move { serve(stream, script, &seen).await });
        }
    });
    (port, seen)
}

async fn serve(stream: tokio::net::TcpStream, script: Script, seen: &Mutex<Seen>) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    writer.write_all(b"220 scripted.test ESMTP\r\n").await.expect("greet");
    let mut accepted_recipients = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        {
            let mut seen = seen.lock().expect("lock");
            seen.commands.push(command.clone());
            if !script.offers_pipelining && !reader.buffer().is_empty() {
                seen.unasked_pipelining.push(command.clone());
            }
        }
        let verb = command.split([' ', ':']).next().unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if script.offers_pipelining => b"250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            "EHLO" => b"250-scripted.test\r\n250 8BITMIME\r\n",
            "MAIL" => {
                accepted_recipients = 0;
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" if command.contains("<reject") => b"550 5.1.1 no such user\r\n",
            "RCPT" => {
                accepted_recipients += 1;
                b"250 2.1.5 ok\r\n"
            }
            "DATA" if accepted_recipients == 0 && !script.data_without_recipients => {
                b"554 5.5.1 no valid recipients\r\n"
            }
            "DATA" => {
                writer.write_all(b"354 go ahead\r\n").await.expect("354");
                let content = read_content(&mut reader).await;
                let reply: &[u8] = if accepted_recipients == 0 {
                    b"554 5.5.1 no valid recipients\r\n"
                } else {
                    b"250 2.0.0 queued\r\n"
                };
                if accepted_recipients > 0 {
                    seen.lock().expect("lock").messages.push(content);
                }
                reply
            }
            "RSET" => b"250 2.0.0 reset\r\n",
            "QUIT" => {
                let _ = writer.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        writer.write_all(reply).await.expect("reply");
    }
}

/// Reads up to the lone `.` and undoes dot-stuffing.
async fn read_content(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut content = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == ".\r\n" {
            return content;
        }
        content.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

fn config(port: u16) -> RelayConfig {
    RelayConfig { host: "127.0.0.1".into(), port, hello_name: "client.test".into(), ..RelayConfig::default() }
}

const MESSAGE: &str = "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nplain\r\n";

async fn exchange(script: Script) -> (Vec<DeliveryOutcome>, Arc<Mutex<Seen>>) {
    let (port, seen) = start_server(script).await;
    let mut session = smtp::connect(&config(port)).await.expect("connect");
    let mut outcomes = Vec::new();
    for recipient in ["one@x.test", "reject@x.test", "two@x.test"] {
        outcomes.push(session.deliver("bounce@sender.test", recipient, MESSAGE.as_bytes()).await);
        assert!(session.is_reusable(), "the connection carries on after {recipient}");
    }
    session.quit().await;
    (outcomes, seen)
}

fn assert_outcomes(outcomes: &[DeliveryOutcome]) {
    assert!(matches!(&outcomes[0], DeliveryOutcome::Delivered(reply) if reply.code == 250), "{:?}", outcomes[0]);
    assert!(
        matches!(&outcomes[1], DeliveryOutcome::PermanentFailure(reply) if reply.code == 550 && reply.text.contains("no such user")),
        "the RCPT rejection decides, not DATA's reply: {:?}",
        outcomes[1]
    );
    assert!(matches!(&outcomes[2], DeliveryOutcome::Delivered(reply) if reply.code == 250), "{:?}", outcomes[2]);
}

fn verbs(seen: &Seen) -> Vec<String> {
    seen.commands.iter().map(|command| command.split([' ', ':']).next().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn a_server_offering_pipelining_gets_the_envelope_in_one_group_and_the_replies_are_matched() {
    let (outcomes, seen) = exchange(Script { offers_pipelining: true, data_without_recipients: false }).await;
    assert_outcomes(&outcomes);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.messages, [MESSAGE, MESSAGE], "content arrives whole, dot-stuffing undone");
    assert_eq!(
        verbs(&seen),
        [
            "EHLO", "EHLO", // the handshake, then the capability probe
            "MAIL", "RCPT", "DATA", // delivered
            "MAIL", "RCPT", "DATA", "RSET", // refused at RCPT, DATA answered 554, reset
            "MAIL", "RCPT", "DATA", "QUIT",
        ]
    );
}

#[tokio::test]
async fn without_pipelining_on_offer_the_client_waits_for_every_reply() {
    let (outcomes, seen) = exchange(Script { offers_pipelining: false, data_without_recipients: false }).await;
    assert_outcomes(&outcomes);
    let seen = seen.lock().expect("lock");
    assert!(seen.unasked_pipelining.is_empty(), "commands sent ahead of their reply: {:?}", seen.unasked_pipelining);
    assert_eq!(seen.messages, [MESSAGE, MESSAGE]);
    assert_eq!(
        verbs(&seen),
        ["EHLO", "EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA", "QUIT"],
        "after the refused RCPT there is no DATA"
    );
}

#[tokio::test]
async fn a_server_that_opens_data_for_no_recipient_gets_an_empty_message_and_a_reset() {
    let (outcomes, seen) = exchange(Script { offers_pipelining: true, data_without_recipients: true }).await;
    assert_outcomes(&outcomes);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.messages, [MESSAGE, MESSAGE], "nothing was stored for the refused recipient");
    assert_eq!(
        verbs(&seen)[5..9],
        ["MAIL", "RCPT", "DATA", "RSET"],
        "the empty content ended DATA and the transaction was reset"
    );
}

#[tokio::test]
async fn content_without_a_final_line_ending_is_terminated_properly() {
    let (port, seen) = start_server(Script { offers_pipelining: true, data_without_recipients: false }).await;
    let mut session = smtp::connect(&config(port)).await.expect("connect");
    let outcome = session.deliver("", "one@x.test", b"Subject: x\r\n\r\nno newline at the end").await;
    assert!(matches!(outcome, DeliveryOutcome::Delivered(_)), "{outcome:?}");
    session.quit().await;
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.messages, ["Subject: x\r\n\r\nno newline at the end\r\n"]);
    assert!(seen.commands.iter().any(|command| command == "MAIL FROM:<>"), "the null sender: {:?}", seen.commands);
}
