//! sendwerk-loadtest: queues N recipients across M destination domains through the real gRPC
//! API (a `sendwerk control` process), drives `sendwerk sender` processes to completion against
//! a fast SMTP sink (its own, or any relay given with `--relay`), bounded by count and time, on
//! loopback only. Prints a human summary and, on its last line, one JSON object.

mod procstat;
mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use sendwerk::client::Api;
use sendwerk_proto::v1;
use sendwerk_smtpd::{ServerConfig, SmtpServer};
use sendwerk_store::embedded::{EmbeddedPostgres, EmbeddedPostgresOptions};
use tokio::process::{Child, Command};

#[derive(Parser, Clone)]
#[command(about = "Load test for sendwerk (loopback only)")]
struct Options {
    /// Recipients to queue and deliver.
    #[arg(long, default_value_t = 100_000)]
    recipients: u64,
    /// Distinct destination domains.
    #[arg(long, default_value_t = 50)]
    domains: u64,
    /// Sender processes.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// SMTP connections per sender.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Recipients per claim.
    #[arg(long, default_value_t = 1024)]
    claim_batch: i64,
    /// DKIM signing: none, ed25519 or dual (RSA-2048 + Ed25519), with the test-only keys in
    /// tests/fixtures/dkim.
    #[arg(long, default_value = "none")]
    dkim: String,
    /// Deliver to this SMTP server (loopback) instead of the built-in sink, e.g. Postfix's
    /// smtp-sink on 127.0.0.1:2525. Duplicates and losses are then not counted by the sink.
    #[arg(long)]
    relay: Option<SocketAddr>,
    /// Latency the built-in sink adds to every message, in milliseconds.
    #[arg(long, default_value_t = 0)]
    sink_latency_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Approximate size of the personalised body in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// A fault to inject when 30% of the recipients are done: `kill-sender` (kill -9 one of the
    /// senders), `stop-sender` (SIGSTOP one past its lease, then SIGCONT), `restart-postgres`,
    /// or `sink-faults` (the sink answers 421/451/550, hangs or drops after the final dot for a
    /// share of recipients). Every run then checks: every recipient in exactly one final state,
    /// none lost, every duplicate delivery matched by an outcome-unknown event.
    #[arg(long, default_value = "none")]
    chaos: Chaos,
    /// Shard lease of the senders, in seconds.
    #[arg(long, default_value_t = 15.0)]
    lease_secs: f64,
    /// After the mailing, send this many DSNs (one per recipient, to its VERP address) to a
    /// `sendwerk bounce` listener over 16 connections and measure how fast they are applied.
    #[arg(long, default_value_t = 0)]
    bounce_reports: u64,
}

const BOUNCE_DOMAIN: &str = "bounces.loadtest.example";
const BOUNCE_SECRET: &str = "loadtest-bounce-secret-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Chaos {
    None,
    KillSender,
    StopSender,
    RestartPostgres,
    SinkFaults,
}

fn sendwerk_binary() -> anyhow::Result<PathBuf> {
    let own = std::env::current_exe()?;
    let candidate = own.with_file_name("sendwerk");
    anyhow::ensure!(
        candidate.exists(),
        "{} not found: build it with `cargo build --release -p sendwerk -p sendwerk-loadtest`",
        candidate.display()
    );
    Ok(candidate)
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn dkim_config(mode: &str) -> anyhow::Result<String> {
    let keys = workspace_root().join("tests/fixtures/dkim");
    let entry = |selector: &str, algorithm: &str, file: &str| {
        format!(
            "[[dkim]]\ndomain = \"loadtest.example\"\nselector = \"{selector}\"\nalgorithm = \"{algorithm}\"\nkey_file = \"{}\"\n",
            keys.join(file).display()
        )
    };
    Ok(match mode {
        "none" => String::new(),
        "ed25519" => entry("ed25519", "ed25519", "ed25519.pem"),
        "dual" => entry("rsa2048", "rsa", "rsa.pem") + &entry("ed25519", "ed25519", "ed25519.pem"),
        other => anyhow::bail!("--dkim {other:?}: use none, ed25519 or dual"),
    })
}

fn spawn_role(binary: &PathBuf, config: &PathBuf, role: &str) -> anyhow::Result<Child> {
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .arg(role)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting `sendwerk {role}`"))
}

/// Sends a signal to a process with kill(1) (no libc needed).
async fn signal(pid: Option<u32>, signal: &str) {
    if let Some(pid) = pid {
        let _ = Command::new("kill").arg(signal).arg(pid.to_string()).status().await;
    }
}

async fn terminate(child: &mut Child) {
    signal(child.id(), "-TERM").await;
    if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

fn postmaster_pid(data_dir: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
}

fn content(body_bytes: usize) -> v1::MailingContent {
    let filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(body_bytes / 58 + 1);
    v1::MailingContent {
        name: "load test".into(),
        from: Some(v1::Address { email: "news@loadtest.example".into(), name: "Load Test".into() }),
        subject_template: "Hallo {{ first_name }}, Ihre Nummer {{ n }}".into(),
        text_template: format!(
            "Hallo {{{{ first_name }}}},\r\n\r\n{}\r\n\r\nKunde {{{{ n }}}}\r\n",
            &filler[..body_bytes.min(filler.len())]
        ),
        ..Default::default()
    }
}

fn rows(start: u64, end: u64, domains: u64) -> Vec<v1::RecipientRow> {
    (start..end)
        .map(|i| {
            let string = |text: String| prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(text)) };
            v1::RecipientRow {
                email: format!("r{i}@d{}.loadtest.example", i % domains.max(1)),
                external_id: i.to_string(),
                variables: Some(prost_types::Struct {
                    fields: [
                        ("first_name".to_owned(), string(format!("Name{i}"))),
                        ("n".to_owned(), string(i.to_string())),
                    ]
                    .into(),
                }),
            }
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if let Some(relay) = options.relay {
        anyhow::ensure!(
            relay.ip().is_loopback(),
            "--relay must be a loopback address: load is only ever sent to this machine"
        );
    }
    let binary = sendwerk_binary()?;
    let deadline = Instant::now() + Duration::from_secs(options.timeout_secs);

    // Database: DATABASE_URL, or an embedded cluster of our own.
    let (database_url, embedded) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let embedded =
                EmbeddedPostgres::start(EmbeddedPostgresOptions { max_connections: 300, ..Default::default() }).await?;
            sendwerk::cluster::create_database(&embedded.admin_url(), "loadtest").await?;
            (embedded.connection_url("loadtest"), Some(embedded))
        }
    };
    let postgres_pid = embedded.as_ref().and_then(|embedded| postmaster_pid(embedded.data_dir()));

    // The sink.
    let chaos = options.chaos;
    let sink = Arc::new(sink::LoadSink::new(
        Duration::from_millis(options.sink_latency_ms),
        chaos == Chaos::SinkFaults,
        Duration::from_secs(8),
    ));
    let (relay, sink_server) = match options.relay {
        Some(relay) => (relay, None),
        None => {
            let config = ServerConfig { max_connections: 4096, ..ServerConfig::default() };
            let server =
                SmtpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config, Arc::clone(&sink)).await?.spawn();
            (server.local_addr(), Some(server))
        }
    };

    // Configuration shared by the control plane and the senders.
    let grpc_port = free_port()?;
    let bounce_port = free_port()?;
    let scratch = tempfile_dir()?;
    let config_path = scratch.join("sendwerk.toml");
    let config = format!(
        "database_url = \"{database_url}\"\ndatabase_max_connections = {pool}\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n\n\
         [relay]\nhost = \"{}\"\nport = {}\nhello_name = \"loadtest.example\"\nmax_messages_per_connection = 1000000\n\
         command_timeout = 3\n\n\
         [sender]\nconnections = {}\nclaim_batch_size = {}\npoll_interval_ms = 100\nlease_secs = {}\n\
         retry_initial_secs = 0.5\nretry_max_secs = 2\ndomain_backoff_secs = 1\nshutdown_grace_secs = 5\n\n\
         [bounce]\ndomain = \"{BOUNCE_DOMAIN}\"\nsecret = \"{BOUNCE_SECRET}\"\nlisten = \"127.0.0.1:{bounce_port}\"\n\n{}",
        relay.ip(),
        relay.port(),
        options.connections,
        options.claim_batch,
        options.lease_secs,
        dkim_config(&options.dkim)?,
        pool = 8,
    );
    std::fs::write(&config_path, config)?;

    let mut control = spawn_role(&binary, &config_path, "control")?;
    let endpoint = format!("http://127.0.0.1:{grpc_port}");
    let mut api = loop {
        match Api::connect(&endpoint, None).await {
            Ok(api) => break api,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => return Err(error),
        }
    };

    let mailing = api
        .mailings
        .create_mailing(v1::CreateMailingRequest { content: Some(content(options.body_bytes)) })
        .await?
        .into_inner();
    let control_pid = control.id().context("the control process exited")?;
    let ingest_cpu_before = (
        procstat::process_cpu(control_pid),
        postgres_pid.map(procstat::process_tree_cpu).unwrap_or_default(),
        procstat::process_cpu(std::process::id()),
    );
    let ingest_started = Instant::now();
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(16);
    let total = options.recipients;
    let domains = options.domains;
    let mailing_id = mailing.id;
    let generator = tokio::spawn(async move {
        let mut start = 0;
        while start < total {
            let end = (start + 1000).min(total);
            if batch_tx.send(v1::AddRecipientsRequest { mailing_id, rows: rows(start, end, domains) }).await.is_err() {
                break;
            }
            start = end;
        }
    });
    let added = api.mailings.add_recipients(tokio_stream::wrappers::ReceiverStream::new(batch_rx)).await?.into_inner();
    generator.await?;
    let ingest_seconds = ingest_started.elapsed().as_secs_f64();
    let per_row = |after: Duration, before: Duration| {
        (after.saturating_sub(before).as_secs_f64() * 1e7 / total.max(1) as f64).round() / 10.0
    };
    let ingest_cpu_us_per_row = serde_json::json!({
        "control": per_row(procstat::process_cpu(control_pid), ingest_cpu_before.0),
        "postgres": per_row(postgres_pid.map(procstat::process_tree_cpu).unwrap_or_default(), ingest_cpu_before.1),
        "client": per_row(procstat::process_cpu(std::process::id()), ingest_cpu_before.2),
    });
    anyhow::ensure!(added.accepted as u64 == total, "only {} of {total} recipients accepted", added.accepted);
    eprintln!("ingested {total} recipients in {ingest_seconds:.2} s ({:.0}/s)", total as f64 / ingest_seconds);

    let mut senders = Vec::new();
    for _ in 0..options.senders {
        senders.push(spawn_role(&binary, &config_path, "sender")?);
    }
    // Measure the steady state: wait until the senders share the shards evenly.
    let balance_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let senders = api.admin.list_senders(v1::ListSendersRequest {}).await?.into_inner().senders;
        let shares: Vec<i32> = senders.iter().map(|sender| sender.num_shards).filter(|n| *n > 0).collect();
        let balanced = shares.len() == options.senders
            && shares.iter().max().zip(shares.iter().min()).is_some_and(|(max, min)| max - min <= 2);
        if balanced || Instant::now() >= balance_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sender_pids: Vec<u32> = senders.iter().filter_map(Child::id).collect();
    let self_pid = std::process::id();
    let cpu_before = (
        sender_pids.iter().map(|&pid| procstat::process_cpu(pid)).sum::<Duration>(),
        postgres_pid.map(procstat::process_tree_cpu).unwrap_or_default(),
        procstat::process_cpu(self_pid),
    );

    api.mailings.schedule(v1::ScheduleRequest { mailing_id, send_at: None, max_per_hour: 0 }).await?;
    let send_started = Instant::now();
    let mut fault_injected = chaos == Chaos::None || chaos == Chaos::SinkFaults;
    let mut resume_stopped: Option<tokio::task::JoinHandle<()>> = None;
    let final_mailing = loop {
        // The control plane may be briefly unavailable (e.g. while PostgreSQL restarts).
        let current = match api.mailings.get_mailing(v1::MailingRef { mailing_id }).await {
            Ok(response) => response.into_inner(),
            Err(status) if Instant::now() < deadline => {
                eprintln!("status poll failed ({}); retrying", status.message());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        let counts = current.counts.unwrap_or_default();
        if !fault_injected && (counts.sent + counts.failed) * 10 >= total as i64 * 3 {
            fault_injected = true;
            let victim = sender_pids.first().copied();
            match chaos {
                Chaos::KillSender => {
                    eprintln!("chaos: kill -9 sender {victim:?} at {} done", counts.sent + counts.failed);
                    signal(victim, "-KILL").await;
                }
                Chaos::StopSender => {
                    eprintln!("chaos: SIGSTOP sender {victim:?} for longer than its lease");
                    signal(victim, "-STOP").await;
                    let pause = Duration::from_secs_f64(options.lease_secs + 3.0);
                    resume_stopped = Some(tokio::spawn(async move {
                        tokio::time::sleep(pause).await;
                        eprintln!("chaos: SIGCONT sender {victim:?}");
                        signal(victim, "-CONT").await;
                    }));
                }
                Chaos::RestartPostgres => {
                    eprintln!("chaos: restarting PostgreSQL");
                    match &embedded {
                        Some(embedded) => embedded.restart().await?,
                        None => {
                            anyhow::bail!("--chaos restart-postgres needs the embedded PostgreSQL (unset DATABASE_URL)")
                        }
                    }
                }
                Chaos::None | Chaos::SinkFaults => {}
            }
        }
        if current.state == v1::MailingState::Completed as i32 || Instant::now() >= deadline {
            break current;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Some(resume) = resume_stopped {
        resume.await?;
    }
    let wall_seconds = send_started.elapsed().as_secs_f64();
    let cpu_after = (
        sender_pids.iter().map(|&pid| procstat::process_cpu(pid)).sum::<Duration>(),
        postgres_pid.map(procstat::process_tree_cpu).unwrap_or_default(),
        procstat::process_cpu(self_pid),
    );
    let sender_max_rss_mb = sender_pids.iter().map(|&pid| procstat::peak_rss_mib(pid)).fold(0.0, f64::max);

    let (client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let window = client
        .query_one(
            "SELECT extract(epoch FROM max(updated_at) - min(first_attempt_at))::float8, count(*) FILTER (WHERE state = 'sent') FROM recipients WHERE mailing_id = $1",
            &[&mailing_id],
        )
        .await?;
    let delivery_seconds: f64 = window.get::<_, Option<f64>>(0).unwrap_or(wall_seconds);
    let sent_rows: i64 = window.get(1);
    let unknown: i64 = client
        .query_one(
            "SELECT count(*) FROM delivery_events WHERE mailing_id = $1 AND kind = 'outcome-unknown'",
            &[&mailing_id],
        )
        .await?
        .get(0);
    // Checked before any bounce run turns `sent` rows into `bounced`.
    let reported = final_mailing.counts.unwrap_or_default();
    let invariants =
        check_invariants(&client, mailing_id, &reported, options.relay.is_none().then(|| sink.deliveries())).await?;
    let bounce_result = if options.bounce_reports > 0 {
        let mut listener = spawn_role(&binary, &config_path, "bounce")?;
        let result = run_bounce_reports(&client, mailing_id, options.bounce_reports, bounce_port, postgres_pid).await;
        terminate(&mut listener).await;
        Some(result?)
    } else {
        None
    };

    for sender in &mut senders {
        terminate(sender).await;
    }
    terminate(&mut control).await;
    let totals = sink.totals();
    if let Some(server) = sink_server {
        server.shutdown().await?;
    }
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let counts = reported;
    let completed = final_mailing.state == v1::MailingState::Completed as i32;
    let sender_cpu = cpu_after.0.saturating_sub(cpu_before.0).as_secs_f64();
    let postgres_cpu = cpu_after.1.saturating_sub(cpu_before.1).as_secs_f64();
    let sink_cpu = cpu_after.2.saturating_sub(cpu_before.2).as_secs_f64();
    let per_msg = |seconds: f64| if counts.sent > 0 { seconds * 1e6 / counts.sent as f64 } else { 0.0 };
    let own_sink = options.relay.is_none();
    // Never delivered and not failed for a reason (a 550 from the sink is a final outcome).
    let failed_rows = counts.failed as u64 + counts.expired as u64;
    let lost = if own_sink {
        total.saturating_sub(totals.unique_recipients + failed_rows)
    } else {
        total.saturating_sub(sent_rows as u64 + failed_rows)
    };
    let summary = serde_json::json!({
        "recipients": total,
        "domains": options.domains,
        "senders": options.senders,
        "connections_per_sender": options.connections,
        "dkim": options.dkim,
        "body_bytes": options.body_bytes,
        "sink_latency_ms": options.sink_latency_ms,
        "relay": options.relay.map(|relay| relay.to_string()),
        "completed": completed,
        "sent": counts.sent,
        "ingest_per_sec": (total as f64 / ingest_seconds).round(),
        "ingest_cpu_us_per_row": ingest_cpu_us_per_row,
        "delivered_per_sec": (counts.sent as f64 / delivery_seconds.max(1e-3)).round(),
        "delivery_seconds": (delivery_seconds * 1000.0).round() / 1000.0,
        "cpu_us_per_msg": (per_msg(sender_cpu + postgres_cpu + sink_cpu) * 10.0).round() / 10.0,
        "sender_cpu_us_per_msg": (per_msg(sender_cpu) * 10.0).round() / 10.0,
        "postgres_cpu_us_per_msg": (per_msg(postgres_cpu) * 10.0).round() / 10.0,
        "sink_cpu_us_per_msg": (per_msg(sink_cpu) * 10.0).round() / 10.0,
        "sender_max_rss_mb": (sender_max_rss_mb * 10.0).round() / 10.0,
        "sink_accepted": if own_sink { serde_json::json!(totals.accepted) } else { serde_json::Value::Null },
        "duplicates": if own_sink { serde_json::json!(totals.duplicates) } else { serde_json::Value::Null },
        "outcome_unknown_events": unknown,
        "lost": lost,
        "chaos": format!("{chaos:?}"),
        "bounce_reports": bounce_result.as_ref().map(|r| r.reports),
        "bounce_reports_per_sec": bounce_result.as_ref().map(|r| r.per_sec.round()),
        "bounce_postgres_cpu_us_per_report": bounce_result.as_ref().map(|r| (r.postgres_cpu_us * 10.0).round() / 10.0),
        "final_states": invariants.final_states.clone(),
        "counters_agree": invariants.counters_agree,
        "unfinished": invariants.unfinished,
        "sent_but_never_received": invariants.sent_but_never_received,
        "duplicates_without_outcome_unknown": invariants.duplicates_without_outcome_unknown,
    });
    eprintln!(
        "delivered {} of {total} in {delivery_seconds:.2} s ({:.0}/s), {:.1} µs CPU per message",
        counts.sent,
        counts.sent as f64 / delivery_seconds.max(1e-3),
        per_msg(sender_cpu + postgres_cpu + sink_cpu)
    );
    println!("{summary}");
    anyhow::ensure!(completed, "the mailing did not complete within {} s", options.timeout_secs);
    anyhow::ensure!(
        invariants.unfinished == 0 && invariants.sent_but_never_received == 0 && lost == 0,
        "recipients were lost: {} unfinished, {} sent but never received, {lost} never delivered",
        invariants.unfinished,
        invariants.sent_but_never_received
    );
    anyhow::ensure!(
        invariants.counters_agree,
        "the per-state counters {} disagree with the recipients' states {}",
        invariants.counters,
        invariants.final_states
    );
    anyhow::ensure!(
        invariants.duplicates_without_outcome_unknown == 0,
        "{} duplicate deliveries have no outcome-unknown event",
        invariants.duplicates_without_outcome_unknown
    );
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sendwerk-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What a run must guarantee whatever went wrong on the way.
struct Invariants {
    final_states: serde_json::Value,
    /// The per-state counts `GetMailing` reported, non-zero ones.
    counters: serde_json::Value,
    /// The counters equal the recipients' states.
    counters_agree: bool,
    /// Recipients still queued, sending or deferred.
    unfinished: i64,
    /// Recipients recorded `sent` that the sink never received (own sink only).
    sent_but_never_received: u64,
    /// Recipients the sink received more than once without an `outcome-unknown` event.
    duplicates_without_outcome_unknown: u64,
}

async fn check_invariants(
    client: &tokio_postgres::Client,
    mailing_id: i64,
    reported: &v1::RecipientCounts,
    deliveries: Option<std::collections::HashMap<String, u32>>,
) -> anyhow::Result<Invariants> {
    let rows = client
        .query("SELECT state, count(*) FROM recipients WHERE mailing_id = $1 GROUP BY state", &[&mailing_id])
        .await?;
    let mut final_states = serde_json::Map::new();
    let mut unfinished = 0;
    for row in &rows {
        let (state, n): (String, i64) = (row.get(0), row.get(1));
        if matches!(state.as_str(), "queued" | "sending" | "deferred") {
            unfinished += n;
        }
        final_states.insert(state, serde_json::json!(n));
    }
    // The per-state counts `GetMailing` reported at the end (the counters the statements keep),
    // against the rows.
    let counted: serde_json::Map<String, serde_json::Value> = [
        ("queued", reported.queued),
        ("sending", reported.sending),
        ("deferred", reported.deferred),
        ("sent", reported.sent),
        ("failed", reported.failed),
        ("expired", reported.expired),
        ("bounced", reported.bounced),
        ("complained", reported.complained),
        ("suppressed", reported.suppressed),
        ("skipped", reported.skipped),
        ("cancelled", reported.cancelled),
    ]
    .into_iter()
    .filter(|&(_, n)| n != 0)
    .map(|(state, n)| (state.to_owned(), serde_json::json!(n)))
    .collect();
    let counters_agree = counted == final_states;
    let (mut sent_but_never_received, mut duplicates_without_outcome_unknown) = (0, 0);
    if let Some(deliveries) = deliveries {
        let sent = client
            .query("SELECT email FROM recipients WHERE mailing_id = $1 AND state = 'sent'", &[&mailing_id])
            .await?;
        sent_but_never_received =
            sent.iter().filter(|row| !deliveries.contains_key(row.get::<_, &str>(0))).count() as u64;
        let unknown: std::collections::HashSet<String> = client
            .query(
                "SELECT DISTINCT r.email FROM delivery_events e JOIN recipients r \
                 ON r.mailing_id = e.mailing_id AND r.id = e.recipient_id WHERE e.mailing_id = $1 AND e.kind = 'outcome-unknown'",
                &[&mailing_id],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        duplicates_without_outcome_unknown =
            deliveries.iter().filter(|(address, times)| **times > 1 && !unknown.contains(*address)).count() as u64;
    }
    Ok(Invariants {
        final_states: serde_json::Value::Object(final_states),
        counters: serde_json::Value::Object(counted),
        counters_agree,
        unfinished,
        sent_but_never_received,
        duplicates_without_outcome_unknown,
    })
}

struct BounceRun {
    reports: u64,
    per_sec: f64,
    postgres_cpu_us: f64,
}

fn dsn_for(recipient: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.loadtest.example\r\nTo: {BOUNCE_DOMAIN}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.loadtest.example\r\n\r\n\
         Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n\r\n\
         --B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@loadtest.example\r\nTo: {recipient}\r\nSubject: x\r\n\r\n--B--\r\n"
    )
    .into_bytes()
}

/// Sends one DSN per recipient (to its VERP address) to the bounce listener over 16
/// connections and measures until every one is applied.
async fn run_bounce_reports(
    client: &tokio_postgres::Client,
    mailing_id: i64,
    count: u64,
    port: u16,
    postgres_pid: Option<u32>,
) -> anyhow::Result<BounceRun> {
    let verp = sendwerk_core::Verp::new(sendwerk_core::Domain::parse(BOUNCE_DOMAIN)?, BOUNCE_SECRET.as_bytes(), &[])?;
    let rows = client
        .query(
            "SELECT id, email FROM recipients WHERE mailing_id = $1 AND state = 'sent' ORDER BY id LIMIT $2",
            &[&mailing_id, &(count as i64)],
        )
        .await?;
    let reports: Vec<(String, Vec<u8>)> = rows
        .iter()
        .map(|row| {
            let (mailing, recipient) =
                (sendwerk_core::MailingId::new(mailing_id), sendwerk_core::RecipientId::new(row.get(0)));
            (verp.return_path(mailing, recipient), dsn_for(row.get::<_, &str>(1)))
        })
        .collect();
    let total = reports.len() as u64;
    let relay = sendwerk_mail::smtp::RelayConfig {
        host: "127.0.0.1".into(),
        port,
        hello_name: "mx.loadtest.example".into(),
        ..Default::default()
    };
    // Wait until the listener is up.
    for _ in 0..100 {
        if sendwerk_mail::smtp::connect(&relay).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_before = postgres_pid.map(procstat::process_tree_cpu).unwrap_or_default();
    let started = Instant::now();
    let shares: Vec<Vec<(String, Vec<u8>)>> = {
        let mut shares = vec![Vec::new(); 16];
        for (index, report) in reports.into_iter().enumerate() {
            shares[index % 16].push(report);
        }
        shares
    };
    let mut tasks = Vec::new();
    for share in shares {
        let relay = relay.clone();
        tasks.push(tokio::spawn(async move {
            let mut session = sendwerk_mail::smtp::connect(&relay).await?;
            let mut accepted = 0u64;
            for (to, report) in share {
                if matches!(session.deliver("", &to, &report).await, sendwerk_core::DeliveryOutcome::Delivered(_)) {
                    accepted += 1;
                }
            }
            session.quit().await;
            anyhow::Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bounced: i64 = client
        .query_one("SELECT count(*) FROM recipients WHERE mailing_id = $1 AND state = 'bounced'", &[&mailing_id])
        .await?
        .get(0);
    let cpu = postgres_pid.map(procstat::process_tree_cpu).unwrap_or_default().saturating_sub(cpu_before);
    eprintln!(
        "bounce reports: {accepted} accepted, {bounced} applied in {seconds:.2} s ({:.0}/s)",
        total as f64 / seconds
    );
    anyhow::ensure!(bounced as u64 == total, "only {bounced} of {total} bounce reports were applied");
    Ok(BounceRun {
        reports: total,
        per_sec: total as f64 / seconds,
        postgres_cpu_us: cpu.as_secs_f64() * 1e6 / total.max(1) as f64,
    })
}
