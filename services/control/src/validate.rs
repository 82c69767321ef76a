//! Validation of mailing content at the API boundary: every problem is reported with the
//! field it concerns, before anything is stored.

use chrono::Utc;
use sendwerk_core::{EmailAddress, MailingId, MailingState, TenantId};
use sendwerk_proto::v1;
use sendwerk_sender::{PrepareError, PreparedMailing};
use sendwerk_store::{AttachmentData, MailingContent, MailingRecord};

use crate::ControlError;

const MAX_NAME_CHARS: usize = 500;
const MAX_TAGS: usize = 50;

fn check_display_name(field: &str, name: &str) -> Result<(), ControlError> {
    if name.chars().any(char::is_control) {
        return Err(ControlError::invalid(field, "must not contain control characters (CR, LF, …)"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ControlError::invalid(field, format!("is longer than {MAX_NAME_CHARS} characters")));
    }
    Ok(())
}

/// Postgres cannot store NUL in text; say which field holds one rather than fail on the insert.
fn check_no_nul(field: &str, text: &str) -> Result<(), ControlError> {
    if text.contains('\0') {
        return Err(ControlError::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

fn check_address(field: &str, email: &str) -> Result<EmailAddress, ControlError> {
    EmailAddress::parse(email)
        .map_err(|error| ControlError::invalid(field, format!("{email:?} is not a valid address: {error}")))
}

/// Turns the API's mailing content into the stored form, checking every field, compiling the
/// templates and building the message skeleton once so that nothing invalid is ever stored.
pub fn mailing_content(
    content: Option<v1::MailingContent>,
    max_message_bytes: usize,
) -> Result<(MailingContent, std::sync::Arc<PreparedMailing>), ControlError> {
    let content = content.ok_or_else(|| ControlError::invalid("content", "is required"))?;
    if content.name.trim().is_empty() {
        return Err(ControlError::invalid("content.name", "must not be empty"));
    }
    check_display_name("content.name", &content.name)?;
    let from = content.from.ok_or_else(|| ControlError::invalid("content.from", "is required"))?;
    let from_email = check_address("content.from.email", &from.email)?;
    check_display_name("content.from.name", &from.name)?;
    let (reply_to_email, reply_to_name) = match content.reply_to {
        Some(reply_to) if !reply_to.email.is_empty() => {
            let email = check_address("content.reply_to.email", &reply_to.email)?;
            check_display_name("content.reply_to.name", &reply_to.name)?;
            (email.to_string(), reply_to.name)
        }
        _ => (String::new(), String::new()),
    };
    if content.tags.len() > MAX_TAGS {
        return Err(ControlError::invalid("content.tags", format!("at most {MAX_TAGS} tags")));
    }
    let total_attachment_bytes: usize = content.attachments.iter().map(|a| a.content.len()).sum();
    if total_attachment_bytes > max_message_bytes {
        return Err(ControlError::invalid(
            "content.attachments",
            format!(
                "{total_attachment_bytes} bytes of attachments exceed the message size limit of {max_message_bytes} bytes"
            ),
        ));
    }
    for (field, text) in [
        ("content.subject_template", &content.subject_template),
        ("content.html_template", &content.html_template),
        ("content.text_template", &content.text_template),
    ] {
        check_no_nul(field, text)?;
    }
    for tag in &content.tags {
        check_no_nul("content.tags", tag)?;
    }
    for header in &content.headers {
        check_no_nul("content.headers", &header.name)?;
        check_no_nul("content.headers", &header.value)?;
    }
    for attachment in &content.attachments {
        check_no_nul("content.attachments.filename", &attachment.filename)?;
        check_no_nul("content.attachments.content_type", &attachment.content_type)?;
        check_no_nul("content.attachments.content_id", &attachment.content_id)?;
    }
    let stored = MailingContent {
        name: content.name,
        from_email: from_email.to_string(),
        from_name: from.name,
        reply_to_email,
        reply_to_name,
        subject_template: content.subject_template,
        html_template: content.html_template,
        text_template: content.text_template,
        headers: content.headers.into_iter().map(|header| (header.name, header.value)).collect(),
        tags: content.tags,
        attachments: content
            .attachments
            .into_iter()
            .map(|attachment| AttachmentData {
                filename: attachment.filename,
                content_type: attachment.content_type,
                content_id: (!attachment.content_id.is_empty()).then_some(attachment.content_id),
                content: attachment.content,
            })
            .collect(),
    };
    let probe = MailingRecord {
        id: MailingId::new(0),
        tenant: TenantId::default(),
        content: stored.clone(),
        state: MailingState::Draft,
        send_at: None,
        created_at: Utc::now(),
        started_at: None,
        completed_at: None,
        max_per_hour: None,
    };
    let prepared = PreparedMailing::prepare(&probe, max_message_bytes).map_err(prepare_error)?;
    Ok((stored, prepared))
}

/// Maps a preparation failure to the field it concerns.
pub fn prepare_error(error: PrepareError) -> ControlError {
    match error {
        PrepareError::FromAddress(_) => ControlError::invalid("content.from.email", error.to_string()),
        PrepareError::ReplyTo(_) => ControlError::invalid("content.reply_to.email", error.to_string()),
        PrepareError::Template(template_error) => {
            ControlError::invalid(format!("content.{}", template_error.field.as_str()), template_error.to_string())
        }
        PrepareError::Mime(mime_error) => ControlError::invalid("content", mime_error.to_string()),
    }
}
