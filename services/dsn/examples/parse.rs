//! Prints the parsed report of each file given on the command line as one JSON line:
//! `cargo run -p sendwerk-dsn --example parse -- bounce.eml ...`

fn main() {
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(raw) => {
                let report = sendwerk_dsn::parse_report(&raw);
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{{\"file\":{},\"report\":{json}}}", serde_json::Value::String(path)),
                    Err(error) => eprintln!("{path}: cannot serialise: {error}"),
                }
            }
            Err(error) => eprintln!("{path}: {error}"),
        }
    }
}
