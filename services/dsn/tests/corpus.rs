//! Scores the parser on the labelled bounce corpus and asserts the dev-set floors.
//!
//! Run with `cargo test -p sendwerk-dsn --test corpus -- --nocapture` to see the table.
//!
//! Scoring, per file: each label row is matched to an unused predicted record whose recipient
//! equals the label's `recipient` or one of its `recipient_alt` (case-insensitively). A label row
//! whose recipient is null is matched by a record whose recipient is `None`. Unmatched labels are
//! false negatives, unmatched records false positives. Status exactness counts matched rows with
//! `status_in_message = true`; reason and hard/soft agreement count all matched rows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sendwerk_dsn::{BounceRecord, parse_report};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/bounces")
}

struct Label {
    file: String,
    recipient: Option<String>,
    alternatives: Vec<String>,
    status: Option<String>,
    status_in_message: bool,
    reason: String,
    hard: bool,
    family: String,
}

fn load_labels() -> Vec<Label> {
    let path = corpus_dir().join("labels.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("the bounce corpus is missing: could not read {}: {error}", path.display()));
    let rows: Vec<Value> = serde_json::from_str(&text).expect("labels.json is a JSON array");
    rows.iter()
        .map(|row| {
            let text = |name: &str| row.get(name).and_then(Value::as_str).map(str::to_owned);
            Label {
                file: text("file").expect("every label names its file"),
                recipient: text("recipient"),
                alternatives: row
                    .get("recipient_alt")
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
                status: text("status"),
                status_in_message: row.get("status_in_message").and_then(Value::as_bool).unwrap_or(false),
                reason: text("reason").unwrap_or_default(),
                hard: row.get("hard").and_then(Value::as_bool).unwrap_or(false),
                family: text("mta").unwrap_or_else(|| "?".to_owned()),
            }
        })
        .collect()
}

fn recipient_matches(label: &Label, record: &BounceRecord) -> bool {
    match (&label.recipient, &record.recipient) {
        (None, None) => true,
        (Some(expected), Some(found)) => {
            expected.eq_ignore_ascii_case(found) || label.alternatives.iter().any(|alt| alt.eq_ignore_ascii_case(found))
        }
        _ => false,
    }
}

#[derive(Default)]
struct Tally {
    labels: usize,
    true_positives: usize,
    false_negatives: usize,
    false_positives: usize,
    status_rows: usize,
    status_exact: usize,
    reason_agree: usize,
    hard_agree: usize,
}

#[test]
fn the_dev_corpus_scores_above_the_floors() {
    let dir = corpus_dir();
    assert!(dir.is_dir(), "the bounce corpus is missing: looked for {}", dir.display());
    let labels = load_labels();
    let mut by_file: BTreeMap<&str, Vec<&Label>> = BTreeMap::new();
    for label in &labels {
        by_file.entry(label.file.as_str()).or_default().push(label);
    }
    let mut total = Tally::default();
    let mut families: BTreeMap<String, Tally> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    for (file, file_labels) in &by_file {
        let raw = std::fs::read(dir.join(file)).unwrap_or_else(|error| panic!("cannot read {file}: {error}"));
        let report = parse_report(&raw);
        let mut used = vec![false; report.records.len()];
        for label in file_labels {
            let family = families.entry(label.family.clone()).or_default();
            family.labels += 1;
            total.labels += 1;
            let found = report
                .records
                .iter()
                .enumerate()
                .find(|(index, record)| !used[*index] && recipient_matches(label, record));
            let Some((index, record)) = found else {
                family.false_negatives += 1;
                total.false_negatives += 1;
                misses.push(format!(
                    "{file}: recipient {:?} not found ({} records)",
                    label.recipient,
                    report.records.len()
                ));
                continue;
            };
            used[index] = true;
            family.true_positives += 1;
            total.true_positives += 1;
            if label.status_in_message {
                family.status_rows += 1;
                total.status_rows += 1;
                if record.status == label.status {
                    family.status_exact += 1;
                    total.status_exact += 1;
                } else {
                    misses.push(format!("{file}: status {:?}, expected {:?}", record.status, label.status));
                }
            }
            if record.reason.as_str() == label.reason {
                family.reason_agree += 1;
                total.reason_agree += 1;
            } else {
                misses.push(format!(
                    "{file}: reason {} expected {} (status {:?}, diagnostic {:?})",
                    record.reason,
                    label.reason,
                    record.status,
                    record.diagnostic.as_deref().map(|text| text.chars().take(140).collect::<String>())
                ));
            }
            if record.hard == label.hard {
                family.hard_agree += 1;
                total.hard_agree += 1;
            } else {
                misses.push(format!("{file}: hard {} expected {}", record.hard, label.hard));
            }
        }
        let extra = used.iter().filter(|used| !**used).count();
        if extra > 0 {
            let family = families.entry(file_labels[0].family.clone()).or_default();
            family.false_positives += extra;
            total.false_positives += extra;
            let names: Vec<String> = report
                .records
                .iter()
                .zip(&used)
                .filter(|(_, used)| !**used)
                .map(|(record, _)| format!("{:?}", record.recipient))
                .collect();
            misses.push(format!("{file}: extra records {}", names.join(", ")));
        }
    }

    let ratio = |part: usize, whole: usize| if whole == 0 { 1.0 } else { part as f64 / whole as f64 };
    let precision = ratio(total.true_positives, total.true_positives + total.false_positives);
    let recall = ratio(total.true_positives, total.true_positives + total.false_negatives);
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    let status = ratio(total.status_exact, total.status_rows);
    let reason = ratio(total.reason_agree, total.true_positives);
    let hard = ratio(total.hard_agree, total.true_positives);

    println!(
        "\n{:<16} {:>6} {:>5} {:>5} {:>5} {:>11} {:>11} {:>11}",
        "family", "labels", "tp", "fn", "fp", "status", "reason", "hard"
    );
    for (name, tally) in &families {
        println!(
            "{:<16} {:>6} {:>5} {:>5} {:>5} {:>5}/{:<5} {:>5}/{:<5} {:>5}/{:<5}",
            name,
            tally.labels,
            tally.true_positives,
            tally.false_negatives,
            tally.false_positives,
            tally.status_exact,
            tally.status_rows,
            tally.reason_agree,
            tally.true_positives,
            tally.hard_agree,
            tally.true_positives
        );
    }
    println!("\nmisses:");
    for miss in &misses {
        println!("  {miss}");
    }
    println!(
        "\nrecipient precision {precision:.3} recall {recall:.3} F1 {f1:.3} | status exact {status:.3} ({}/{}) | reason {reason:.3} ({}/{}) | hard {hard:.3}",
        total.status_exact, total.status_rows, total.reason_agree, total.true_positives
    );
    assert!(f1 >= 0.97, "recipient F1 {f1:.3} below 0.97");
    assert!(status >= 0.95, "status exactness {status:.3} below 0.95");
    assert!(reason >= 0.85, "reason agreement {reason:.3} below 0.85");
    assert!(hard >= 0.95, "hard/soft agreement {hard:.3} below 0.95");
}
