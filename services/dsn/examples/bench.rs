//! Parsing speed on one thread: the whole bounce corpus, over and over, for about 3 s, five times;
//! prints the median reports per second.
//!
//! `cargo run --release -p sendwerk-dsn --example bench`

use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const ROUND_TIME: Duration = Duration::from_secs(3);

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/bounces");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("the bounce corpus is missing: looked for {}", dir.display());
        std::process::exit(1);
    };
    let corpus: Vec<Vec<u8>> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|extension| extension == "eml"))
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .collect();
    if corpus.is_empty() {
        eprintln!("no .eml files in {}", dir.display());
        std::process::exit(1);
    }
    let total_bytes: usize = corpus.iter().map(Vec::len).sum();
    println!("corpus: {} reports, {} KiB", corpus.len(), total_bytes / 1024);

    let mut rates = Vec::with_capacity(ROUNDS);
    let mut num_records = 0usize;
    for round in 1..=ROUNDS {
        let start = Instant::now();
        let mut num_reports = 0usize;
        while start.elapsed() < ROUND_TIME {
            for raw in &corpus {
                num_records += std::hint::black_box(sendwerk_dsn::parse_report(raw)).records.len();
                num_reports += 1;
            }
        }
        let rate = num_reports as f64 / start.elapsed().as_secs_f64();
        println!("round {round}: {rate:.0} reports/s");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[ROUNDS / 2];
    println!(
        "median: {median:.0} reports/s on one thread ({:.1} MiB/s)",
        median * (total_bytes as f64 / corpus.len() as f64) / (1024.0 * 1024.0)
    );
    std::hint::black_box(num_records);
}
