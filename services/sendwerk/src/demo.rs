//! `sendwerk demo`: one command, no configuration. Starts every role on the embedded default
//! plus a capture SMTP sink, sends the bundled example campaign (about 10,000 contacts, a few
//! invalid and suppressed ones among them) with a live progress bar, prints the per-state
//! summary and where the delivered messages can be read, and exits 0 when all went out.

use std::io::Cursor;
use std::net::SocketAddr;

use anyhow::Context;
use sendwerk_proto::v1;

use crate::client::{self, Api};
use crate::cluster::LocalCluster;
use crate::settings::Settings;

const CONTACTS_CSV: &[u8] = include_bytes!("../examples/demo/contacts.csv");
const SUPPRESSED: &str = include_str!("../examples/demo/suppressed.txt");
const SUBJECT: &str = include_str!("../examples/demo/subject.txt");
const HTML: &str = include_str!("../examples/demo/template.html");
const TEXT: &str = include_str!("../examples/demo/template.txt");
const LOGO_PNG: &[u8] = include_bytes!("../examples/demo/logo.png");
const INVITATION_ICS: &[u8] = include_bytes!("../examples/demo/hausmesse-2027.ics");

/// The bundled example mailing.
pub fn demo_content() -> v1::MailingContent {
    v1::MailingContent {
        name: "Hausmesse 2027 – Einladung".into(),
        from: Some(v1::Address {
            email: "vertrieb@sendwerk-demo.example".into(),
            name: "Vertrieb – sendwerk Demo GmbH".into(),
        }),
        reply_to: Some(v1::Address { email: "antwort@sendwerk-demo.example".into(), name: String::new() }),
        subject_template: SUBJECT.trim().into(),
        html_template: HTML.into(),
        text_template: TEXT.into(),
        headers: vec![v1::Header { name: "X-Campaign".into(), value: "hausmesse-2027".into() }],
        attachments: vec![
            v1::Attachment {
                filename: "logo.png".into(),
                content_type: "image/png".into(),
                content: LOGO_PNG.to_vec(),
                content_id: "logo".into(),
            },
            v1::Attachment {
                filename: "hausmesse-2027.ics".into(),
                content_type: "text/calendar".into(),
                content: INVITATION_ICS.to_vec(),
                content_id: String::new(),
            },
        ],
        tags: vec!["demo".into(), "event".into()],
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let demo_dir = std::env::temp_dir().join(format!("sendwerk-demo-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
    let maildir = demo_dir.join("maildir");
    println!(
        "sendwerk demo: starting PostgreSQL (embedded unless DATABASE_URL is set), control plane, sender and a capture SMTP sink …"
    );
    let cluster = LocalCluster::start(&settings, SocketAddr::from(([127, 0, 0, 1], 0)), Some(maildir.clone())).await?;
    let result = run_campaign(&cluster, settings.api_token.as_deref()).await;
    cluster.shutdown().await?;
    let (final_mailing, seconds) = result?;
    let counts = final_mailing.counts.unwrap_or_default();
    println!();
    println!("{}", client::summarize(&final_mailing));
    if seconds > 0.0 {
        println!(
            "delivered {} messages in {seconds:.2} s: {:.0} messages/s",
            counts.sent,
            counts.sent as f64 / seconds
        );
    }
    println!("the delivered messages are in the maildir {}", maildir.join("new").display());
    anyhow::ensure!(
        final_mailing.state == v1::MailingState::Completed as i32
            && counts.sent > 0
            && counts.queued + counts.deferred + counts.sending == 0,
        "the demo campaign did not complete: {}",
        client::summarize(&final_mailing)
    );
    Ok(())
}

async fn run_campaign(cluster: &LocalCluster, token: Option<&str>) -> anyhow::Result<(v1::Mailing, f64)> {
    let mut api = Api::connect(&cluster.control.endpoint(), token).await?;
    let blocked: Vec<String> = SUPPRESSED.lines().filter(|line| !line.trim().is_empty()).map(str::to_owned).collect();
    api.suppressions
        .add_suppressions(v1::AddSuppressionsRequest {
            emails: blocked.clone(),
            reason: v1::SuppressionReason::Unsubscribe as i32,
            note: "unsubscribed in the CRM".into(),
        })
        .await
        .context("AddSuppressions")?;
    println!("{} addresses are on the suppression list (unsubscribed)", blocked.len());

    let mailing = api
        .mailings
        .create_mailing(v1::CreateMailingRequest { content: Some(demo_content()) })
        .await
        .context("CreateMailing")?
        .into_inner();
    println!("created mailing {} \"{}\"", mailing.id, demo_content().name);

    let added = client::add_recipients_from_reader(&mut api, mailing.id, Cursor::new(CONTACTS_CSV)).await?;
    println!(
        "recipients: {} accepted, {} invalid, {} duplicates, {} suppressed",
        added.accepted, added.invalid, added.duplicates, added.suppressed
    );
    for rejected in &added.rejected {
        let kind = v1::RejectionKind::try_from(rejected.kind)
            .map(|k| k.as_str_name().trim_start_matches("REJECTION_KIND_").to_lowercase())
            .unwrap_or_default();
        println!("  row {:>5} {kind:<10} {:<45} {}", rejected.index, rejected.email, rejected.reason);
    }

    let preview = api
        .mailings
        .preview(v1::PreviewRequest { mailing_id: mailing.id, subject: None })
        .await
        .context("Preview")?
        .into_inner();
    println!("preview for the first recipient: subject \"{}\" ({} bytes as sent)", preview.subject, preview.raw.len());

    api.mailings
        .schedule(v1::ScheduleRequest { mailing_id: mailing.id, send_at: None, max_per_hour: 0 })
        .await
        .context("Schedule")?;
    println!("scheduled; sending …");
    let (final_mailing, elapsed) = client::watch(&mut api, mailing.id, true).await?;
    Ok((final_mailing, elapsed.as_secs_f64()))
}
