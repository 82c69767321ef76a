//! Benchmark: per-message cost of render + build + sign on a realistic newsletter. Meaningful
//! only in release mode:
//!
//! `cargo run --release -p sendwerk-mail --example sign_bench`

use std::time::{Duration, Instant};

use sendwerk_core::{Domain, EmailAddress};
use sendwerk_mail::dkim::{DkimAlgorithm, DkimKeyConfig, DkimSigners};
use sendwerk_mail::mime::{Attachment, Mailbox, MessageTemplate, generate_message_id};
use sendwerk_mail::render::MailTemplates;

const NUM_MESSAGES: u32 = 2000;

fn fixture(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/dkim/");
    std::fs::read_to_string(format!("{path}{name}")).expect("fixture")
}

fn signers(algorithms: &[DkimAlgorithm]) -> DkimSigners {
    let configs: Vec<DkimKeyConfig> = algorithms
        .iter()
        .map(|algorithm| {
            let (selector, pem) = match algorithm {
                DkimAlgorithm::Rsa => ("rsa", "rsa.pem"),
                DkimAlgorithm::Ed25519 => ("ed", "ed25519.pem"),
            };
            DkimKeyConfig {
                domain: "shop.example".into(),
                selector: selector.into(),
                algorithm: *algorithm,
                private_key_pem: fixture(pem),
            }
        })
        .collect();
    DkimSigners::from_configs(&configs).expect("keys")
}

fn per_message(total: Duration) -> String {
    format!("{:>8.1} µs", total.as_secs_f64() * 1e6 / f64::from(NUM_MESSAGES))
}

fn main() {
    let product = "<tr><td><img src=\"https://cdn.shop.example/p/{{ loop.index }}.jpg\"></td>\
        <td>{{ item.name }}</td><td>{{ item.price }} €</td></tr>\n";
    let html = format!(
        "<html><body><img src=\"cid:logo\"><h1>Hallo {{{{ first_name }}}},</h1>\n{}\n<table>\
         {{% for item in items %}}{product}{{% endfor %}}</table>\n{}</body></html>\n",
        "<p>Unsere Frühlingsangebote für Sie – nur diese Woche!</p>\n".repeat(60),
        "<p style=\"font-size:10px\">Impressum · Abmelden: {{ unsubscribe_url }}</p>\n".repeat(5),
    );
    let text = format!(
        "Hallo {{{{ first_name }}}},\n\n{}{{% for item in items %}}- {{{{ item.name }}}}: \
         {{{{ item.price }}}} €\n{{% endfor %}}\nAbmelden: {{{{ unsubscribe_url }}}}\n",
        "Unsere Frühlingsangebote für Sie – nur diese Woche!\n".repeat(30),
    );
    let templates = MailTemplates::compile("{{ first_name }}, Ihre Angebote 🎉", &html, &text).expect("compile");
    let items: Vec<serde_json::Value> =
        (0..10).map(|i| serde_json::json!({"name": format!("Produkt Nr. {i}"), "price": "19,99"})).collect();
    let vars = serde_json::json!({
        "first_name": "Jörg", "items": items, "unsubscribe_url": "https://shop.example/u/abc",
    });
    let vars = vars.as_object().expect("object");
    let template = MessageTemplate::new(
        Mailbox {
            name: Some("Shop Österreich".into()),
            address: EmailAddress::parse("news@shop.example").expect("valid"),
        },
        None,
        vec![],
        vec![Attachment {
            filename: "logo.png".into(),
            content_type: "image/png".into(),
            content: vec![7; 8 * 1024],
            content_id: Some("logo".into()),
        }],
        10 << 20,
    )
    .expect("template");
    let to = EmailAddress::parse("joerg@example.org").expect("valid");
    let domain = Domain::parse("shop.example").expect("valid");
    let headers =
        [("List-Unsubscribe", "<https://shop.example/u/abc>"), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")];
    let build = || {
        let content = templates.render(vars).expect("render");
        let message_id = generate_message_id("shop.example");
        template.build(&to, &content, &headers, &message_id, chrono::Utc::now()).expect("build")
    };
    let sample = build();

    let started = Instant::now();
    for _ in 0..NUM_MESSAGES {
        std::hint::black_box(templates.render(vars).expect("render"));
    }
    let render = started.elapsed();
    let started = Instant::now();
    for _ in 0..NUM_MESSAGES {
        std::hint::black_box(build());
    }
    let render_and_build = started.elapsed();
    println!("message size: {} bytes (html {} bytes)", sample.len(), html.len());
    println!("render:               {}", per_message(render));
    println!("render + build:       {}", per_message(render_and_build));
    for (label, algorithms) in [
        ("sign ed25519", &[DkimAlgorithm::Ed25519][..]),
        ("sign rsa-2048", &[DkimAlgorithm::Rsa][..]),
        ("sign rsa + ed25519", &[DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519][..]),
    ] {
        let signers = signers(algorithms);
        let started = Instant::now();
        for _ in 0..NUM_MESSAGES {
            std::hint::black_box(signers.sign(&domain, &sample).expect("sign"));
        }
        let sign = started.elapsed();
        println!("{label:<22}{}", per_message(sign));
        println!("  render+build+{label:<20}{}", per_message(render_and_build + sign));
    }
}
