//! Conversions between protobuf messages and domain/store types.

use chrono::{DateTime, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use sendwerk_core::{MailingState, RecipientState};
use sendwerk_proto::v1;
use sendwerk_store::{MailingRecord, RecipientRecord, RecipientVariables, StateCounts};

use crate::ControlError;

pub fn struct_to_json(value: Struct) -> RecipientVariables {
    value.fields.into_iter().map(|(key, value)| (key, value_to_json(value))).collect()
}

fn value_to_json(value: Value) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(flag)) => serde_json::Value::Bool(flag),
        Some(Kind::StringValue(text)) => serde_json::Value::String(text),
        Some(Kind::NumberValue(number)) => {
            // Whole numbers stay integers so that `{{ id }}` renders "42", not "42.0".
            if number.fract() == 0.0 && number.abs() < 9.0e15 {
                serde_json::Value::from(number as i64)
            } else {
                serde_json::Number::from_f64(number).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Some(Kind::ListValue(list)) => serde_json::Value::Array(list.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(inner)) => serde_json::Value::Object(struct_to_json(inner)),
    }
}

pub fn json_to_struct(map: &RecipientVariables) -> Struct {
    Struct { fields: map.iter().map(|(key, value)| (key.clone(), json_to_value(value))).collect() }
}

fn json_to_value(value: &serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(flag) => Kind::BoolValue(*flag),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        serde_json::Value::String(text) => Kind::StringValue(text.clone()),
        serde_json::Value::Array(items) => {
            Kind::ListValue(ListValue { values: items.iter().map(json_to_value).collect() })
        }
        serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

/// A timestamp from a request, checked to be a real point in time.
pub fn parse_timestamp(field: &str, value: &Timestamp) -> Result<DateTime<Utc>, ControlError> {
    if !(0..1_000_000_000).contains(&value.nanos) {
        return Err(ControlError::invalid(field, format!("nanos {} is out of range 0..1e9", value.nanos)));
    }
    DateTime::from_timestamp(value.seconds, value.nanos as u32)
        .filter(|time| time.timestamp() < 253_402_300_800)
        .ok_or_else(|| ControlError::invalid(field, format!("{} seconds is not a valid time", value.seconds)))
}

pub fn mailing_state_to_proto(state: MailingState) -> v1::MailingState {
    match state {
        MailingState::Draft => v1::MailingState::Draft,
        MailingState::Scheduled => v1::MailingState::Scheduled,
        MailingState::Sending => v1::MailingState::Sending,
        MailingState::Paused => v1::MailingState::Paused,
        MailingState::Completed => v1::MailingState::Completed,
        MailingState::Cancelled => v1::MailingState::Cancelled,
    }
}

pub fn recipient_state_to_proto(state: RecipientState) -> v1::RecipientState {
    match state {
        RecipientState::Queued => v1::RecipientState::Queued,
        RecipientState::Sending => v1::RecipientState::Sending,
        RecipientState::Deferred => v1::RecipientState::Deferred,
        RecipientState::Sent => v1::RecipientState::Sent,
        RecipientState::Failed => v1::RecipientState::Failed,
        RecipientState::Expired => v1::RecipientState::Expired,
        RecipientState::Bounced => v1::RecipientState::Bounced,
        RecipientState::Complained => v1::RecipientState::Complained,
        RecipientState::Suppressed => v1::RecipientState::Suppressed,
        RecipientState::Skipped => v1::RecipientState::Skipped,
        RecipientState::Cancelled => v1::RecipientState::Cancelled,
    }
}

/// A recipient state filter from a request; unspecified means no filter.
pub fn recipient_state_filter(raw: i32) -> Result<Option<RecipientState>, ControlError> {
    let state = v1::RecipientState::try_from(raw)
        .map_err(|_| ControlError::invalid("state", format!("{raw} is not a recipient state")))?;
    Ok(match state {
        v1::RecipientState::Unspecified => None,
        v1::RecipientState::Queued => Some(RecipientState::Queued),
        v1::RecipientState::Sending => Some(RecipientState::Sending),
        v1::RecipientState::Deferred => Some(RecipientState::Deferred),
        v1::RecipientState::Sent => Some(RecipientState::Sent),
        v1::RecipientState::Failed => Some(RecipientState::Failed),
        v1::RecipientState::Expired => Some(RecipientState::Expired),
        v1::RecipientState::Bounced => Some(RecipientState::Bounced),
        v1::RecipientState::Complained => Some(RecipientState::Complained),
        v1::RecipientState::Suppressed => Some(RecipientState::Suppressed),
        v1::RecipientState::Skipped => Some(RecipientState::Skipped),
        v1::RecipientState::Cancelled => Some(RecipientState::Cancelled),
    })
}

pub fn counts_to_proto(counts: &StateCounts) -> v1::RecipientCounts {
    v1::RecipientCounts {
        total: counts.total(),
        queued: counts.get(RecipientState::Queued),
        sending: counts.get(RecipientState::Sending),
        deferred: counts.get(RecipientState::Deferred),
        sent: counts.get(RecipientState::Sent),
        failed: counts.get(RecipientState::Failed),
        expired: counts.get(RecipientState::Expired),
        bounced: counts.get(RecipientState::Bounced),
        complained: counts.get(RecipientState::Complained),
        suppressed: counts.get(RecipientState::Suppressed),
        skipped: counts.get(RecipientState::Skipped),
        cancelled: counts.get(RecipientState::Cancelled),
    }
}

fn address(email: &str, name: &str) -> Option<v1::Address> {
    (!email.is_empty()).then(|| v1::Address { email: email.to_owned(), name: name.to_owned() })
}

/// The mailing as the API shows it; attachment content is left out (it can be large).
pub fn mailing_to_proto(record: &MailingRecord, counts: &StateCounts) -> v1::Mailing {
    let content = &record.content;
    v1::Mailing {
        id: record.id.get(),
        state: mailing_state_to_proto(record.state) as i32,
        content: Some(v1::MailingContent {
            name: content.name.clone(),
            from: address(&content.from_email, &content.from_name),
            reply_to: address(&content.reply_to_email, &content.reply_to_name),
            subject_template: content.subject_template.clone(),
            html_template: content.html_template.clone(),
            text_template: content.text_template.clone(),
            headers: content
                .headers
                .iter()
                .map(|(name, value)| v1::Header { name: name.clone(), value: value.clone() })
                .collect(),
            attachments: content
                .attachments
                .iter()
                .map(|attachment| v1::Attachment {
                    filename: attachment.filename.clone(),
                    content_type: attachment.content_type.clone(),
                    content: Vec::new(),
                    content_id: attachment.content_id.clone().unwrap_or_default(),
                })
                .collect(),
            tags: content.tags.clone(),
        }),
        send_at: record.send_at.map(timestamp),
        created_at: Some(timestamp(record.created_at)),
        started_at: record.started_at.map(timestamp),
        completed_at: record.completed_at.map(timestamp),
        counts: Some(counts_to_proto(counts)),
        max_per_hour: record.max_per_hour.unwrap_or(0),
    }
}

pub fn recipient_to_proto(record: RecipientRecord) -> v1::Recipient {
    let last_reply = record.last_code.map(|code| v1::SmtpReply {
        code,
        enhanced_status: record.last_enhanced.clone().unwrap_or_default(),
        text: record.last_reply.clone().unwrap_or_default(),
    });
    v1::Recipient {
        id: record.id.get(),
        email: record.email,
        external_id: record.external_id,
        state: recipient_state_to_proto(record.state) as i32,
        attempts: record.attempts,
        last_reply,
        reason: record.reason.unwrap_or_default(),
        next_attempt_at: Some(timestamp(record.next_attempt_at)),
        updated_at: Some(timestamp(record.updated_at)),
        variables: Some(json_to_struct(&record.variables)),
    }
}
