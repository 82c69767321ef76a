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

#[derive(Clone)]
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

/// What the parser scored on a corpus.
struct Scores {
    total: Tally,
    families: BTreeMap<String, Tally>,
    misses: Vec<String>,
}

impl Scores {
    fn ratio(part: usize, whole: usize) -> f64 {
        if whole == 0 { 1.0 } else { part as f64 / whole as f64 }
    }

    fn precision(&self) -> f64 {
        Self::ratio(self.total.true_positives, self.total.true_positives + self.total.false_positives)
    }

    fn recall(&self) -> f64 {
        Self::ratio(self.total.true_positives, self.total.true_positives + self.total.false_negatives)
    }

    fn f1(&self) -> f64 {
        let (precision, recall) = (self.precision(), self.recall());
        if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) }
    }

    fn status(&self) -> f64 {
        Self::ratio(self.total.status_exact, self.total.status_rows)
    }

    fn reason(&self) -> f64 {
        Self::ratio(self.total.reason_agree, self.total.true_positives)
    }

    fn hard(&self) -> f64 {
        Self::ratio(self.total.hard_agree, self.total.true_positives)
    }

    fn print(&self) {
        println!(
            "\n{:<16} {:>6} {:>5} {:>5} {:>5} {:>11} {:>11} {:>11}",
            "family", "labels", "tp", "fn", "fp", "status", "reason", "hard"
        );
        for (name, tally) in &self.families {
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
        for miss in &self.misses {
            println!("  {miss}");
        }
        println!("\n{}", self.summary());
    }

    fn summary(&self) -> String {
        format!(
            "recipient precision {:.3} recall {:.3} F1 {:.3} | status exact {:.3} ({}/{}) | reason {:.3} ({}/{}) | hard {:.3}",
            self.precision(),
            self.recall(),
            self.f1(),
            self.status(),
            self.total.status_exact,
            self.total.status_rows,
            self.reason(),
            self.total.reason_agree,
            self.total.true_positives,
            self.hard()
        )
    }
}

/// The labelled corpus: file name → raw bytes and labels.
fn load_corpus() -> BTreeMap<String, (Vec<u8>, Vec<Label>)> {
    let dir = corpus_dir();
    assert!(dir.is_dir(), "the bounce corpus is missing: looked for {}", dir.display());
    let mut corpus: BTreeMap<String, (Vec<u8>, Vec<Label>)> = BTreeMap::new();
    for label in load_labels() {
        let entry = corpus.entry(label.file.clone()).or_insert_with(|| {
            let raw = std::fs::read(dir.join(&label.file))
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", label.file));
            (raw, Vec::new())
        });
        entry.1.push(label);
    }
    corpus
}

fn score(corpus: &BTreeMap<String, (Vec<u8>, Vec<Label>)>) -> Scores {
    let mut total = Tally::default();
    let mut families: BTreeMap<String, Tally> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    for (file, (raw, file_labels)) in corpus {
        let report = parse_report(raw);
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
    Scores { total, families, misses }
}

#[test]
fn the_dev_corpus_scores_above_the_floors() {
    let scores = score(&load_corpus());
    scores.print();
    assert!(scores.f1() >= 0.97, "recipient F1 below 0.97: {}", scores.summary());
    assert!(scores.status() >= 0.95, "status exactness below 0.95: {}", scores.summary());
    assert!(scores.reason() >= 0.85, "reason agreement below 0.85: {}", scores.summary());
    assert!(scores.hard() >= 0.95, "hard/soft agreement below 0.95: {}", scores.summary());
}

/// Replaces every `local@domain` (ASCII case-insensitively) in `raw` with `new_local@domain`.
fn rename_local_part(raw: &[u8], local: &str, domain: &str, new_local: &str) -> Vec<u8> {
    let needle = format!("{local}@{domain}").to_ascii_lowercase().into_bytes();
    let lower = raw.to_ascii_lowercase();
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        if lower[at..].starts_with(&needle) {
            out.extend_from_slice(new_local.as_bytes());
            at += local.len();
        } else {
            out.push(raw[at]);
            at += 1;
        }
    }
    out
}

/// The held-out set has other reports of the same kinds: other people, other line ends. The
/// parser must read the format, not remember the file. Every labelled recipient gets another
/// local part, everywhere it appears, and the line ends are swapped (CRLF ↔ LF); the scores
/// must stay where they are.
#[test]
fn the_scores_hold_with_other_recipients_and_other_line_ends() {
    let mut corpus = load_corpus();
    for (raw, labels) in corpus.values_mut() {
        for (index, label) in labels.iter_mut().enumerate() {
            let Some(recipient) = label.recipient.clone() else { continue };
            let Some((local, domain)) = recipient.rsplit_once('@') else { continue };
            let new_local = format!("zx{index}q{}", local.len());
            *raw = rename_local_part(raw, local, domain, &new_local);
            label.recipient = Some(format!("{new_local}@{domain}"));
            for alternative in &mut label.alternatives {
                if alternative.eq_ignore_ascii_case(&recipient) {
                    *alternative = format!("{new_local}@{domain}");
                }
            }
        }
        let text = String::from_utf8_lossy(raw);
        let swapped = if raw.windows(2).any(|pair| pair == b"\r\n") {
            raw.iter().copied().filter(|&byte| byte != b'\r').collect::<Vec<u8>>()
        } else {
            text.replace('\n', "\r\n").into_bytes()
        };
        *raw = swapped;
    }
    let baseline = score(&load_corpus());
    let scores = score(&corpus);
    println!("as labelled: {}\nperturbed:   {}", baseline.summary(), scores.summary());
    for miss in &scores.misses {
        println!("  {miss}");
    }
    assert!(scores.f1() >= baseline.f1() - 0.01, "recipient F1 fell: {}", scores.summary());
    assert!(scores.status() >= baseline.status() - 0.01, "status exactness fell: {}", scores.summary());
    assert!(scores.reason() >= baseline.reason() - 0.01, "reason agreement fell: {}", scores.summary());
    assert!(scores.hard() >= baseline.hard() - 0.01, "hard/soft agreement fell: {}", scores.summary());
}
