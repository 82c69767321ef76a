//! Complaints: RFC 5965 ARF reports, Microsoft JMRP reports and Amazon SES JSON notifications.

use serde_json::Value;

use crate::address;
use crate::classify;
use crate::mime::{Headers, Message};
use crate::model::{Action, BounceRecord, Report, ReportKind};
use crate::reason::Reason;

/// A complaint, or an SES JSON bounce/delivery notification.
#[derive(Debug, Clone, Default)]
pub(crate) struct Feedback {
    pub feedback_type: Option<String>,
    /// Complaining recipients; empty when the report names nobody.
    pub recipients: Vec<String>,
    pub reporting_mta: Option<String>,
}

/// One recipient of an SES JSON bounce or delivery notification.
#[derive(Debug, Clone, Default)]
pub(crate) struct JsonRecipient {
    pub address: String,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    /// SES `bounceSubType`, lower case (`noemail`, `mailboxfull`, `suppressed`, ...).
    pub sub_type: Option<String>,
    pub remote_mta: Option<String>,
}

/// What an SES JSON notification says.
#[derive(Debug, Clone)]
pub(crate) enum JsonNotice {
    Complaint(Feedback),
    Bounce { recipients: Vec<JsonRecipient>, reporting_mta: Option<String>, permanent: bool },
    Delivery { recipients: Vec<JsonRecipient> },
}

/// Reads `Name: value` lines of a `message/feedback-report` part.
fn report_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            if name.is_empty() || name.contains(' ') {
                return None;
            }
            Some((name.to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect()
}

/// Detects an ARF report or a JMRP report in a parsed message.
pub(crate) fn detect(message: &Message, original: Option<&Headers>) -> Option<Feedback> {
    let report_type = message.top_type.param("report-type").map(str::to_ascii_lowercase);
    let report_part = message
        .parts
        .iter()
        .find(|part| part.mime_type == "message/feedback-report" && !part.inside_original)
        .map(|part| part.text.as_str())
        .or_else(|| {
            (report_type.as_deref() == Some("feedback-report"))
                .then(|| message.parts.iter().find(|part| part.text.to_ascii_lowercase().contains("feedback-type:")))
                .flatten()
                .map(|part| part.text.as_str())
        });
    if let Some(report) = report_part {
        let fields = report_fields(report);
        let value_of = |name: &str| fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.clone());
        let mut recipients: Vec<String> = fields
            .iter()
            .filter(|(name, _)| name == "original-rcpt-to")
            .filter_map(|(_, value)| address::first(value))
            .collect();
        if recipients.is_empty() {
            recipients.extend(value_of("removal-recipient").and_then(|value| address::first(&value)));
        }
        if recipients.is_empty() {
            recipients.extend(original_recipients(original));
        }
        dedupe(&mut recipients);
        let feedback_type = value_of("feedback-type")
            .map(|value| value.split_whitespace().next().unwrap_or("").to_ascii_lowercase())
            .filter(|value| !value.is_empty());
        let reporting_mta = value_of("reporting-mta")
            .and_then(|value| value.split(';').next_back().map(|host| host.trim().to_ascii_lowercase()));
        return Some(Feedback { feedback_type: feedback_type.or(Some("abuse".to_owned())), recipients, reporting_mta });
    }
    // Microsoft JMRP: the complained-about message carries X-HmXmrOriginalRecipient.
    let jmrp = message
        .parts
        .iter()
        .filter(|part| part.mime_type == "message/rfc822")
        .find_map(|part| part.headers.get("x-hmxmroriginalrecipient").and_then(address::first));
    if let Some(recipient) = jmrp {
        return Some(Feedback {
            feedback_type: Some("abuse".to_owned()),
            recipients: vec![recipient],
            reporting_mta: None,
        });
    }
    None
}

fn original_recipients(original: Option<&Headers>) -> Vec<String> {
    let Some(headers) = original else {
        return Vec::new();
    };
    headers.get_all("to").flat_map(|value| address::find_all(value).into_iter().map(|found| found.address)).collect()
}

fn dedupe(addresses: &mut Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    addresses.retain(|address| {
        let lower = address.to_ascii_lowercase();
        if seen.contains(&lower) {
            false
        } else {
            seen.push(lower);
            true
        }
    });
}

/// Parses an Amazon SES (or SNS-wrapped) JSON notification found in a text part.
pub(crate) fn ses_json(text: &str) -> Option<JsonNotice> {
    let start = text.find('{')?;
    if !text.contains("notificationType") && !text.contains("eventType") {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    let Some(Ok(mut value)) = stream.next() else {
        return ses_json_lenient(&text[start..]);
    };
    // SNS wraps the SES notification in a string field.
    if let Some(inner) = value.get("Message").and_then(Value::as_str)
        && let Ok(parsed) = serde_json::from_str::<Value>(inner)
    {
        value = parsed;
    }
    let kind = value.get("notificationType").or_else(|| value.get("eventType")).and_then(Value::as_str)?;
    match kind.to_ascii_lowercase().as_str() {
        "complaint" => {
            let complaint = value.get("complaint")?;
            let recipients = addresses_in(complaint.get("complainedRecipients"));
            let feedback_type = complaint
                .get("complaintFeedbackType")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .or(Some("abuse".to_owned()));
            Some(JsonNotice::Complaint(Feedback { feedback_type, recipients, reporting_mta: None }))
        }
        "bounce" => {
            let bounce = value.get("bounce")?;
            let sub_type = bounce.get("bounceSubType").and_then(Value::as_str).map(str::to_ascii_lowercase);
            let permanent = bounce.get("bounceType").and_then(Value::as_str).is_some_and(|kind| kind == "Permanent");
            let reporting_mta = bounce
                .get("reportingMTA")
                .and_then(Value::as_str)
                .map(|mta| mta.rsplit(';').next().unwrap_or(mta).trim().to_ascii_lowercase());
            let remote_mta = bounce.get("remoteMtaIp").and_then(Value::as_str).map(str::to_owned);
            let recipients = bounce
                .get("bouncedRecipients")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|entry| {
                            let address = entry.get("emailAddress").and_then(Value::as_str).and_then(address::first)?;
                            let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
                            Some(JsonRecipient {
                                address,
                                status: text("status"),
                                diagnostic: text("diagnosticCode"),
                                sub_type: sub_type.clone(),
                                remote_mta: remote_mta.clone(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(JsonNotice::Bounce { recipients, reporting_mta, permanent })
        }
        "delivery" => {
            let delivery = value.get("delivery")?;
            let response = delivery.get("smtpResponse").and_then(Value::as_str).map(str::to_owned);
            let recipients = addresses_in(delivery.get("recipients"))
                .into_iter()
                .map(|address| JsonRecipient { address, diagnostic: response.clone(), ..JsonRecipient::default() })
                .collect();
            Some(JsonNotice::Delivery { recipients })
        }
        _ => None,
    }
}

/// A notification whose JSON is damaged (cut or folded by a relay): read the recipient lists
/// with plain string search.
fn ses_json_lenient(text: &str) -> Option<JsonNotice> {
    let field = |name: &str| -> Option<&str> {
        let key = format!("\"{name}\"");
        let start = text.find(&key)? + key.len();
        let rest = text[start..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let kind = field("notificationType").or_else(|| field("eventType"))?;
    let kind = kind.strip_prefix('"')?.split('"').next()?.to_ascii_lowercase();
    let list_addresses = |name: &str| -> Vec<String> {
        field(name)
            .and_then(|rest| rest.split(']').next())
            .map(|list| address::find_all(list).into_iter().map(|found| found.address).collect())
            .unwrap_or_default()
    };
    match kind.as_str() {
        "complaint" => Some(JsonNotice::Complaint(Feedback {
            feedback_type: Some("abuse".to_owned()),
            recipients: list_addresses("complainedRecipients"),
            reporting_mta: None,
        })),
        "bounce" => Some(JsonNotice::Bounce {
            recipients: list_addresses("bouncedRecipients")
                .into_iter()
                .map(|address| JsonRecipient { address, ..JsonRecipient::default() })
                .collect(),
            reporting_mta: None,
            permanent: text.contains("\"Permanent\""),
        }),
        _ => None,
    }
}

/// Addresses in a JSON list of strings or of `{"emailAddress": ...}` objects.
fn addresses_in(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| {
                    entry
                        .as_str()
                        .or_else(|| entry.get("emailAddress").and_then(Value::as_str))
                        .and_then(address::first)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One complaint record per recipient (one without a recipient when nobody is named).
pub(crate) fn complaint_records(recipients: Vec<String>) -> Vec<BounceRecord> {
    let complaint = |recipient: Option<String>| BounceRecord {
        recipient,
        action: None,
        status: None,
        reply_code: None,
        diagnostic: None,
        remote_mta: None,
        reason: Reason::Feedback,
        hard: false,
    };
    if recipients.is_empty() {
        return vec![complaint(None)];
    }
    recipients.into_iter().map(|recipient| complaint(Some(recipient))).collect()
}

/// Fills a report from an SES JSON notification.
pub(crate) fn apply_ses_json(report: &mut Report, json: JsonNotice) {
    match json {
        JsonNotice::Complaint(feedback) => {
            report.kind = ReportKind::Feedback;
            report.feedback_type = feedback.feedback_type;
            report.records = complaint_records(feedback.recipients);
        }
        JsonNotice::Delivery { recipients } => {
            report.kind = ReportKind::DeliveryStatus;
            report.records = recipients
                .into_iter()
                .map(|recipient| BounceRecord {
                    recipient: Some(recipient.address),
                    action: Some(Action::Delivered),
                    status: Some("2.0.0".to_owned()),
                    reply_code: recipient.diagnostic.as_deref().and_then(|text| crate::smtp::reply_code(text, None)),
                    diagnostic: recipient.diagnostic,
                    remote_mta: None,
                    reason: Reason::Delivered,
                    hard: false,
                })
                .collect();
        }
        JsonNotice::Bounce { recipients, reporting_mta, permanent } => {
            report.kind = ReportKind::DeliveryStatus;
            report.reporting_mta = report.reporting_mta.take().or(reporting_mta);
            report.records = recipients
                .into_iter()
                .map(|recipient| {
                    let diagnostic = recipient.diagnostic.as_deref().map(|text| {
                        let text = text.trim();
                        text.split_once(';')
                            .filter(|(kind, _)| !kind.contains(' '))
                            .map_or(text, |(_, rest)| rest.trim())
                    });
                    let status = crate::smtp::prefer_status(recipient.status.as_deref(), diagnostic.unwrap_or(""));
                    let (mut reason, _) = crate::classify(None, status.as_deref(), diagnostic.unwrap_or(""));
                    if matches!(reason, Reason::OnHold | Reason::Undefined) {
                        reason = match recipient.sub_type.as_deref() {
                            Some("noemail") | Some("suppressed") | Some("onaccountsuppressionlist") => {
                                Reason::UserUnknown
                            }
                            Some("mailboxfull") => Reason::MailboxFull,
                            Some("messagetoolarge") => Reason::MesgTooBig,
                            Some("contentrejected") | Some("attachmentrejected") => Reason::ContentError,
                            _ => reason,
                        };
                    }
                    let reply_code = crate::smtp::reply_code(diagnostic.unwrap_or(""), status.as_deref());
                    let action = if permanent { Action::Failed } else { Action::Delayed };
                    BounceRecord {
                        recipient: Some(recipient.address),
                        action: Some(action),
                        hard: classify::is_hard(reason, status.as_deref(), reply_code),
                        status,
                        reply_code,
                        diagnostic: diagnostic.map(str::to_owned),
                        remote_mta: recipient.remote_mta,
                        reason,
                    }
                })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_complaints_name_the_complained_recipients() {
        let text = "{\"notificationType\":\"Complaint\",\"complaint\":{\"complainedRecipients\":[{\"emailAddress\":\"a@b.example\"}]}}\n--\nunsubscribe";
        match ses_json(text) {
            Some(JsonNotice::Complaint(feedback)) => assert_eq!(feedback.recipients, vec!["a@b.example"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ses_bounces_carry_status_and_diagnostic() {
        let text = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"x@y.example","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}],"reportingMTA":"dsn; a8.smtp-out.amazonses.com"}}"#;
        match ses_json(text) {
            Some(JsonNotice::Bounce { recipients, reporting_mta, permanent }) => {
                assert!(permanent);
                assert_eq!(recipients[0].status.as_deref(), Some("5.1.1"));
                assert_eq!(reporting_mta.as_deref(), Some("a8.smtp-out.amazonses.com"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
