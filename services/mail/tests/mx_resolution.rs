//! `mx::MxResolver` against a hand-written authoritative DNS server on loopback: ordering,
//! implicit MX, null MX, permanent and temporary failures, skipped hosts, caching, and one
//! delivery through `smtp::connect` to a sink at a resolved address.

#[path = "support/dns_server.rs"]
mod dns_server;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use dns_server::{DnsServer, Record};
use sendwerk_core::{DeliveryOutcome, Domain};
use sendwerk_mail::mx::{MxError, MxResolver, MxResolverConfig, MxTarget};
use sendwerk_mail::smtp::{self, RelayConfig};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

const SMTP_PORT: u16 = 2525;
/// Records carry TTL 0 so that hickory's own cache keeps nothing: whatever is cached is this
/// module's doing (it raises TTLs to `min_ttl`).
const TTL: u32 = 0;

fn domain(raw: &str) -> Domain {
    Domain::parse(raw).expect("valid domain")
}

fn config_for(server: &DnsServer) -> MxResolverConfig {
    MxResolverConfig {
        nameservers: vec![server.addr()],
        timeout: Duration::from_secs(2),
        smtp_port: SMTP_PORT,
        ..MxResolverConfig::default()
    }
}

fn resolver_for(server: &DnsServer) -> MxResolver {
    MxResolver::new(config_for(server)).expect("resolver")
}

fn loopback(last_octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet))
}

/// example.test: mx1 and mx2 at preference 10, mx3 at 20; mx1 has an IPv6 address too.
fn example_zone() -> Vec<Record> {
    vec![
        Record::mx("example.test", 20, "mx3.example.test", TTL),
        Record::mx("example.test", 10, "mx1.example.test", TTL),
        Record::mx("example.test", 10, "mx2.example.test", TTL),
        Record::aaaa("mx1.example.test", Ipv6Addr::LOCALHOST, TTL),
        Record::a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 1), TTL),
        Record::a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 2), TTL),
        Record::a("mx3.example.test", Ipv4Addr::new(127, 0, 0, 3), TTL),
    ]
}

fn hosts(targets: &[MxTarget]) -> Vec<&str> {
    targets.iter().map(|target| target.host.as_str()).collect()
}

#[tokio::test]
async fn mx_hosts_come_back_sorted_by_preference_with_their_loopback_addresses() {
    let server = DnsServer::start(example_zone());
    let targets = resolver_for(&server).targets(&domain("example.test")).await.expect("targets");

    assert_eq!(targets.len(), 3, "{targets:?}");
    let first_two: HashSet<&str> = hosts(&targets[..2]).into_iter().collect();
    assert_eq!(first_two, HashSet::from(["mx1.example.test", "mx2.example.test"]));
    assert!(targets[..2].iter().all(|target| target.preference == 10));
    assert_eq!(targets[2].host, "mx3.example.test");
    assert_eq!(targets[2].preference, 20);
    assert_eq!(targets[2].addresses, vec![loopback(3)]);

    let mx1 = targets.iter().find(|target| target.host == "mx1.example.test").expect("mx1");
    assert_eq!(mx1.addresses, vec![loopback(1), IpAddr::V6(Ipv6Addr::LOCALHOST)], "ipv4 first, then ipv6");
    let mx2 = targets.iter().find(|target| target.host == "mx2.example.test").expect("mx2");
    assert_eq!(mx2.addresses, vec![loopback(2)]);
    assert!(targets.iter().all(|target| target.port == SMTP_PORT));
}

#[tokio::test]
async fn equal_preference_hosts_are_shuffled_on_every_lookup() {
    let server = DnsServer::start(example_zone());
    let resolver = resolver_for(&server);
    let mut first_hosts_seen = HashSet::new();
    for _ in 0..64 {
        let targets = resolver.targets(&domain("example.test")).await.expect("targets");
        assert_eq!(targets[2].host, "mx3.example.test", "the less preferred host always comes last");
        first_hosts_seen.insert(targets[0].host.clone());
    }
    assert_eq!(first_hosts_seen.len(), 2, "both hosts of preference 10 should come first sometimes");
    assert_eq!(server.queries_for("example.test"), 1, "the order changes without asking again");
}

#[tokio::test]
async fn a_domain_without_mx_falls_back_to_its_own_address_as_implicit_mx() {
    let server = DnsServer::start(vec![Record::a("plain.test", Ipv4Addr::new(127, 0, 0, 9), TTL)]);
    let targets = resolver_for(&server).targets(&domain("plain.test")).await.expect("targets");
    assert_eq!(
        targets,
        vec![MxTarget { host: "plain.test".into(), preference: 0, addresses: vec![loopback(9)], port: SMTP_PORT }]
    );
}

#[tokio::test]
async fn a_nonexistent_domain_is_a_permanent_domain_not_found() {
    let server = DnsServer::start(vec![Record::nxdomain("missing.test")]);
    let error = resolver_for(&server).targets(&domain("missing.test")).await.expect_err("no targets");
    assert_eq!(error, MxError::DomainNotFound { domain: "missing.test".into() });
    assert!(error.is_permanent());
}

#[tokio::test]
async fn a_null_mx_means_the_domain_accepts_no_mail() {
    let server = DnsServer::start(vec![
        Record::mx("nullmx.test", 0, ".", TTL),
        Record::a("nullmx.test", Ipv4Addr::new(127, 0, 0, 1), TTL),
    ]);
    let error = resolver_for(&server).targets(&domain("nullmx.test")).await.expect_err("no targets");
    assert_eq!(error, MxError::NullMx { domain: "nullmx.test".into() });
    assert!(error.is_permanent());
}

#[tokio::test]
async fn a_domain_without_mx_and_without_addresses_has_no_mail_host() {
    let server = DnsServer::start(vec![Record::txt("textonly.test", "v=spf1 -all", TTL)]);
    let error = resolver_for(&server).targets(&domain("textonly.test")).await.expect_err("no targets");
    assert_eq!(error, MxError::NoMailHost { domain: "textonly.test".into() });
    assert!(error.is_permanent());
}

#[tokio::test]
async fn servfail_is_a_temporary_failure() {
    let server = DnsServer::start(vec![Record::servfail("broken.test")]);
    let error = resolver_for(&server).targets(&domain("broken.test")).await.expect_err("no targets");
    assert!(matches!(&error, MxError::Temporary { domain, .. } if domain == "broken.test"), "{error:?}");
    assert!(!error.is_permanent());
}

#[tokio::test]
async fn a_dead_nameserver_is_a_temporary_failure_within_the_timeout() {
    let dead_address: SocketAddr = {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        socket.local_addr().expect("local addr")
    };
    let config = MxResolverConfig {
        nameservers: vec![dead_address],
        timeout: Duration::from_millis(300),
        ..MxResolverConfig::default()
    };
    let resolver = MxResolver::new(config).expect("resolver");
    let started = Instant::now();
    let error = resolver.targets(&domain("example.test")).await.expect_err("no targets");
    let elapsed = started.elapsed();
    assert!(matches!(error, MxError::Temporary { .. }), "{error:?}");
    // Three tries of 300 ms (about 0.9 s), far below the 5 s default, plus slack for a busy machine.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn an_mx_host_that_does_not_resolve_is_skipped_and_the_next_one_is_used() {
    let server = DnsServer::start(vec![
        Record::mx("skip.test", 10, "gone.skip.test", TTL),
        Record::mx("skip.test", 20, "backup.skip.test", TTL),
        Record::nxdomain("gone.skip.test"),
        Record::a("backup.skip.test", Ipv4Addr::new(127, 0, 0, 20), TTL),
    ]);
    let targets = resolver_for(&server).targets(&domain("skip.test")).await.expect("targets");
    assert_eq!(hosts(&targets), vec!["backup.skip.test"]);
    assert_eq!(targets[0].addresses, vec![loopback(20)]);
}

#[tokio::test]
async fn an_mx_host_whose_address_lookup_times_out_is_skipped_and_the_next_one_is_used() {
    let server = DnsServer::start(vec![
        Record::mx("slow.test", 10, "silent.slow.test", TTL),
        Record::mx("slow.test", 20, "backup.slow.test", TTL),
        Record::silent("silent.slow.test"),
        Record::a("backup.slow.test", Ipv4Addr::new(127, 0, 0, 21), TTL),
    ]);
    let config = MxResolverConfig { timeout: Duration::from_millis(200), ..config_for(&server) };
    let targets = MxResolver::new(config).expect("resolver").targets(&domain("slow.test")).await.expect("targets");
    assert_eq!(hosts(&targets), vec!["backup.slow.test"]);
    assert!(server.queries_for("silent.slow.test") >= 2, "a and aaaa were asked");
}

#[tokio::test]
async fn a_domain_whose_only_mx_host_does_not_resolve_is_a_temporary_failure() {
    let server = DnsServer::start(vec![
        Record::mx("dangling.test", 10, "gone.dangling.test", TTL),
        Record::nxdomain("gone.dangling.test"),
    ]);
    let error = resolver_for(&server).targets(&domain("dangling.test")).await.expect_err("no targets");
    match &error {
        MxError::Temporary { domain, detail } => {
            assert_eq!(domain, "dangling.test");
            assert!(detail.contains("gone.dangling.test"), "{detail}");
        }
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

#[tokio::test]
async fn results_are_cached_so_a_second_lookup_does_not_ask_the_server_again() {
    let server = DnsServer::start(example_zone());
    let resolver = resolver_for(&server);
    let first = resolver.targets(&domain("example.test")).await.expect("first lookup");
    let num_queries_after_first = server.total_queries();
    assert_eq!(server.queries_for("example.test"), 1);
    assert!(num_queries_after_first >= 4, "mx plus a/aaaa of three hosts: {num_queries_after_first}");

    let second = resolver.clone().targets(&domain("example.test")).await.expect("second lookup");
    assert_eq!(server.total_queries(), num_queries_after_first, "answered from the cache");
    let sorted = |mut targets: Vec<MxTarget>| {
        targets.sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
        targets
    };
    assert_eq!(sorted(first), sorted(second));
}

#[tokio::test]
async fn cached_answers_expire_after_the_clamped_ttl() {
    let server = DnsServer::start(example_zone());
    let config = MxResolverConfig {
        min_ttl: Duration::from_millis(300),
        max_ttl: Duration::from_millis(300),
        ..config_for(&server)
    };
    let resolver = MxResolver::new(config).expect("resolver");
    resolver.targets(&domain("example.test")).await.expect("first lookup");
    resolver.targets(&domain("example.test")).await.expect("cached lookup");
    assert_eq!(server.queries_for("example.test"), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    resolver.targets(&domain("example.test")).await.expect("lookup after expiry");
    assert_eq!(server.queries_for("example.test"), 2);
}

#[tokio::test]
async fn negative_answers_are_cached_too() {
    let server = DnsServer::start(vec![Record::nxdomain("missing.test"), Record::mx("nullmx.test", 0, ".", TTL)]);
    let resolver = resolver_for(&server);
    for _ in 0..2 {
        assert!(matches!(resolver.targets(&domain("missing.test")).await, Err(MxError::DomainNotFound { .. })));
        assert!(matches!(resolver.targets(&domain("nullmx.test")).await, Err(MxError::NullMx { .. })));
    }
    assert_eq!(server.queries_for("missing.test"), 1);
    assert_eq!(server.queries_for("nullmx.test"), 1);
}

#[tokio::test]
async fn temporary_failures_are_not_cached() {
    let server = DnsServer::start(vec![Record::servfail("broken.test")]);
    let resolver = resolver_for(&server);
    assert!(matches!(resolver.targets(&domain("broken.test")).await, Err(MxError::Temporary { .. })));
    let num_queries_after_first = server.queries_for("broken.test");
    assert!(num_queries_after_first >= 1);
    assert!(matches!(resolver.targets(&domain("broken.test")).await, Err(MxError::Temporary { .. })));
    assert!(server.queries_for("broken.test") > num_queries_after_first, "the second lookup asked again");
}

#[tokio::test]
async fn concurrent_lookups_of_one_domain_send_one_mx_query() {
    // hickory's name-server pool shares identical in-flight queries; this keeps that true.
    let server = DnsServer::start(example_zone());
    let resolver = resolver_for(&server);
    let mut lookups = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let resolver = resolver.clone();
        lookups.spawn(async move { resolver.targets(&domain("example.test")).await });
    }
    while let Some(joined) = lookups.join_next().await {
        assert_eq!(joined.expect("lookup task").expect("targets").len(), 3);
    }
    assert_eq!(server.queries_for("example.test"), 1);
}

#[test]
fn a_minimum_ttl_above_the_maximum_is_rejected() {
    let config = MxResolverConfig {
        nameservers: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 53))],
        min_ttl: Duration::from_secs(600),
        max_ttl: Duration::from_secs(60),
        ..MxResolverConfig::default()
    };
    assert!(MxResolver::new(config).is_err());
}

/// A minimal SMTP sink: accepts everything and reports each message's envelope and data.
async fn start_smtp_sink() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(Vec<String>, String)>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind sink");
    let port = listener.local_addr().expect("sink addr").port();
    let (message_tx, message_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else { return };
        let (read_half, mut write_half) = stream.into_split();
        let mut lines = BufReader::new(read_half).lines();
        write_half.write_all(b"220 sink.test ESMTP\r\n").await.expect("greeting");
        let mut envelope = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink.test\r\n",
                "MAIL" | "RCPT" => {
                    envelope.push(line.clone());
                    b"250 2.1.0 ok\r\n"
                }
                "DATA" => {
                    write_half.write_all(b"354 go ahead\r\n").await.expect("354");
                    let mut data = String::new();
                    while let Ok(Some(data_line)) = lines.next_line().await {
                        if data_line == "." {
                            break;
                        }
                        data.push_str(&data_line);
                        data.push('\n');
                    }
                    let _ = message_tx.send((std::mem::take(&mut envelope), data));
                    b"250 2.0.0 queued\r\n"
                }
                "RSET" | "NOOP" => b"250 ok\r\n",
                "QUIT" => {
                    let _ = write_half.write_all(b"221 bye\r\n").await;
                    return;
                }
                _ => b"502 5.5.2 not implemented\r\n",
            };
            if write_half.write_all(reply).await.is_err() {
                return;
            }
        }
    });
    (port, message_rx)
}

#[tokio::test]
async fn a_message_is_delivered_to_a_sink_at_the_resolved_address() {
    let (sink_port, mut message_rx) = start_smtp_sink().await;
    let server = DnsServer::start(vec![
        Record::mx("shop.test", 10, "mx.shop.test", TTL),
        Record::a("mx.shop.test", Ipv4Addr::LOCALHOST, TTL),
    ]);
    let config = MxResolverConfig { smtp_port: sink_port, ..config_for(&server) };
    let targets = MxResolver::new(config).expect("resolver").targets(&domain("shop.test")).await.expect("targets");
    let target = &targets[0];
    let address = target.addresses[0];

    let relay = RelayConfig { host: address.to_string(), port: target.port, ..RelayConfig::default() };
    let mut session = smtp::connect(&relay).await.expect("connect to the sink");
    let message = b"From: news@sender.test\r\nTo: anna@shop.test\r\nSubject: hello\r\n\r\nhello anna\r\n";
    let outcome = session.deliver("bounces@sender.test", "anna@shop.test", message).await;
    assert!(matches!(outcome, DeliveryOutcome::Delivered(_)), "{outcome:?}");
    session.quit().await;

    let (envelope, data) = message_rx.recv().await.expect("the sink got a message");
    assert!(envelope.iter().any(|line| line.contains("<anna@shop.test>")), "{envelope:?}");
    assert!(data.contains("hello anna"), "{data}");
}
