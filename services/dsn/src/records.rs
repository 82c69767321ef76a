//! Turning the pieces of evidence (DSN fields, notice text, headers) into bounce records.

use crate::address;
use crate::classify::{self, DiagnosticType, Evidence};
use crate::model::{Action, BounceRecord};
use crate::rfc3464::DsnRecipient;
use crate::scan::{NoticeScan, TextRecord};
use crate::smtp::{self, Command};

/// Diagnostics are cut to this many characters.
pub const MAX_DIAGNOSTIC_CHARS: usize = 1000;

/// Report-wide facts that help every record.
pub(crate) struct Context<'a> {
    pub scan: &'a NoticeScan,
    /// The notice text, for classification when a record has no error text of its own.
    pub notice: &'a str,
    /// `X-Failed-Recipients` addresses.
    pub failed_recipients: &'a [String],
    /// The report says the delivery is only delayed.
    pub delayed: bool,
}

/// One record before classification.
#[derive(Debug, Default)]
struct Draft {
    recipient: Option<String>,
    action: Option<Action>,
    status_field: Option<String>,
    diagnostic: Option<String>,
    /// Other error text about the same failure (an SMTP transcript), used for the status code
    /// when the diagnostic has none.
    secondary: Option<String>,
    diagnostic_type: Option<String>,
    command: Option<Command>,
    remote_mta: Option<String>,
}

fn action_of(value: &str) -> Option<Action> {
    let value = value.trim().to_ascii_lowercase();
    if value.starts_with("fail") {
        Some(Action::Failed)
    } else if value.starts_with("delay") {
        Some(Action::Delayed)
    } else if value.starts_with("deliver") {
        Some(Action::Delivered)
    } else if value.starts_with("relay") {
        Some(Action::Relayed)
    } else if value.starts_with("expand") {
        Some(Action::Expanded)
    } else {
        None
    }
}

/// The notice block about `address`, or the only block when there is exactly one.
fn text_record_for<'a>(scan: &'a NoticeScan, addresses: &[&str], num_records: usize) -> Option<&'a TextRecord> {
    let by_address =
        scan.records.iter().find(|record| addresses.iter().any(|address| address::same(address, &record.recipient)));
    by_address.or_else(|| {
        let with_text: Vec<&TextRecord> = scan.records.iter().filter(|record| !record.diagnostic.is_empty()).collect();
        (num_records == 1 && with_text.len() == 1).then(|| with_text[0])
    })
}

/// Records from RFC 3464 recipient blocks, completed with the notice.
pub(crate) fn from_dsn(recipients: &[DsnRecipient], context: &Context<'_>) -> Vec<BounceRecord> {
    let usable: Vec<&DsnRecipient> = recipients.iter().collect();
    let num_records = usable.len();
    usable
        .iter()
        .enumerate()
        .filter_map(|(index, dsn)| {
            let mut recipient = dsn.address().map(str::to_owned);
            if recipient.is_none() {
                // A path or garbage in Final-Recipient: the failed-recipients header or the notice
                // names the address.
                recipient =
                    context.failed_recipients.get(index).cloned().or_else(|| {
                        (context.scan.records.len() == 1).then(|| context.scan.records[0].recipient.clone())
                    });
            }
            let recipient = recipient?;
            let aliases: Vec<&str> =
                [Some(recipient.as_str()), dsn.original_recipient.as_deref(), dsn.actual_recipient.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
            let text = text_record_for(context.scan, &aliases, num_records);
            let text_diagnostic = text.map(|text| text.diagnostic.clone()).filter(|diagnostic| !diagnostic.is_empty());
            // A Diagnostic-Code without words ("X-Unix; 77") says less than the notice.
            let diagnostic = dsn
                .diagnostic
                .clone()
                .filter(|diagnostic| diagnostic.chars().filter(|c| c.is_alphabetic()).count() >= 3)
                .or_else(|| text_diagnostic.clone())
                .or_else(|| dsn.diagnostic.clone().filter(|diagnostic| !diagnostic.trim().is_empty()))
                .or_else(|| context.scan.global_diagnostic.clone());
            let secondary = if context.scan.transcript_replies.is_empty() {
                text_diagnostic
            } else {
                Some(context.scan.transcript_replies.join(" "))
            };
            let command = text
                .and_then(|text| text.command)
                .or_else(|| diagnostic.as_deref().and_then(smtp::command_in))
                .or(context.scan.global_command);
            let draft = Draft {
                recipient: Some(recipient),
                action: dsn.action.as_deref().and_then(action_of),
                status_field: dsn.status.as_deref().and_then(smtp::status_field),
                diagnostic,
                secondary,
                diagnostic_type: dsn.diagnostic_type.clone(),
                command,
                remote_mta: dsn.remote_mta.clone().or_else(|| text.and_then(|text| text.remote_mta.clone())),
            };
            Some(finish(draft, context))
        })
        .collect()
}

/// Records from the notice text alone (no delivery-status fields).
pub(crate) fn from_notice(context: &Context<'_>) -> Vec<BounceRecord> {
    let scan = context.scan;
    let mut drafts: Vec<Draft> = Vec::new();
    if !context.failed_recipients.is_empty() {
        for failed in context.failed_recipients {
            let local_part = failed.split('@').next().unwrap_or("");
            let text =
                scan.records.iter().find(|record| address::same(&record.recipient, failed)).or_else(|| {
                    scan.records.iter().find(|record| record.recipient.split('@').next() == Some(local_part))
                });
            drafts.push(text_draft(failed.clone(), text, context));
        }
    } else {
        for record in &scan.records {
            drafts.push(text_draft(record.recipient.clone(), Some(record), context));
        }
    }
    drafts.into_iter().map(|draft| finish(draft, context)).collect()
}

fn text_draft(recipient: String, text: Option<&TextRecord>, context: &Context<'_>) -> Draft {
    let diagnostic = text
        .map(|text| text.diagnostic.clone())
        .filter(|diagnostic| !diagnostic.is_empty())
        .or_else(|| context.scan.global_diagnostic.clone());
    Draft {
        recipient: Some(recipient),
        action: Some(if context.delayed { Action::Delayed } else { Action::Failed }),
        status_field: None,
        command: text.and_then(|text| text.command).or(context.scan.global_command),
        remote_mta: text.and_then(|text| text.remote_mta.clone()),
        diagnostic,
        secondary: None,
        diagnostic_type: None,
    }
}

/// A record for an address known from elsewhere (the returned message's `To:`).
pub(crate) fn from_fallback_address(recipient: String, context: &Context<'_>) -> BounceRecord {
    finish(text_draft(recipient, None, context), context)
}

/// Chooses status and reply code, classifies, bounds the diagnostic.
fn finish(draft: Draft, context: &Context<'_>) -> BounceRecord {
    let diagnostic_text = draft.diagnostic.as_deref().map(collapse).unwrap_or_default();
    let mut status = smtp::prefer_status(draft.status_field.as_deref(), &diagnostic_text);
    if smtp::status_codes(&diagnostic_text).is_empty()
        && let Some(secondary) = draft.secondary.as_deref()
    {
        status = smtp::prefer_status(draft.status_field.as_deref(), secondary);
    }
    let reply_code = smtp::reply_code(&diagnostic_text, status.as_deref());
    let diagnostic_type = match draft.diagnostic_type.as_deref() {
        Some("x-unix") => DiagnosticType::Unix,
        Some("smtp") | None => DiagnosticType::Smtp,
        Some(_) => DiagnosticType::Other,
    };
    let action = draft.action.or(Some(if context.delayed { Action::Delayed } else { Action::Failed }));
    let mut evidence = Evidence {
        status: status.as_deref(),
        reply_code,
        diagnostic: &diagnostic_text,
        command: draft.command,
        action,
        diagnostic_type,
        recipient: draft.recipient.as_deref(),
        remote_mta: draft.remote_mta.as_deref(),
    };
    let mut reason = classify::decide(&evidence);
    if diagnostic_text.is_empty() && matches!(reason, crate::Reason::Undefined) {
        // No error text of its own: the notice may still say what happened.
        let notice = collapse(context.notice);
        evidence.diagnostic = &notice;
        let from_notice = classify::decide(&evidence);
        if from_notice != crate::Reason::OnHold {
            reason = from_notice;
        }
    }
    let hard = classify::is_hard(reason, status.as_deref(), reply_code);
    BounceRecord {
        recipient: draft.recipient,
        action,
        status,
        reply_code,
        diagnostic: (!diagnostic_text.is_empty()).then(|| bound(&diagnostic_text)),
        remote_mta: draft.remote_mta,
        reason,
        hard,
    }
}

/// Collapses whitespace runs to single spaces.
pub(crate) fn collapse(text: &str) -> String {
    text.split_whitespace().take(4000).collect::<Vec<_>>().join(" ")
}

fn bound(text: &str) -> String {
    match text.char_indices().nth(MAX_DIAGNOSTIC_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}
