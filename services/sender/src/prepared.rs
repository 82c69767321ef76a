//! A mailing made ready for sending once: templates compiled, attachments encoded, sender
//! parsed. Shared by every connection worker.

use std::sync::Arc;

use chrono::Utc;
use sendwerk_core::{Domain, EmailAddress, MailingId};
use sendwerk_mail::mime::{Attachment, Mailbox, MessageTemplate, generate_message_id};
use sendwerk_mail::render::MailTemplates;
use sendwerk_store::{MailingRecord, RecipientVariables};

/// Why a mailing cannot be prepared; every recipient claimed for it is then skipped.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("from address {0:?} is not valid")]
    FromAddress(String),
    #[error("reply-to address {0:?} is not valid")]
    ReplyTo(String),
    #[error("template: {0}")]
    Template(#[from] sendwerk_mail::render::TemplateError),
    #[error("message: {0}")]
    Mime(#[from] sendwerk_mail::mime::MimeError),
}

/// A message ready to go on the wire, and what identifies it.
pub struct BuiltMessage {
    pub message_id: String,
    pub bytes: Vec<u8>,
}

/// Why one recipient's message could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Render(#[from] sendwerk_mail::render::RenderError),
    #[error("{0}")]
    Mime(#[from] sendwerk_mail::mime::MimeError),
    #[error("dkim: {0}")]
    Dkim(#[from] sendwerk_mail::dkim::DkimError),
}

pub struct PreparedMailing {
    pub id: MailingId,
    templates: MailTemplates,
    message: MessageTemplate,
    pub from_domain: Domain,
    pub return_path: String,
}

impl PreparedMailing {
    pub fn prepare(record: &MailingRecord, max_message_bytes: usize) -> Result<Arc<Self>, PrepareError> {
        let content = &record.content;
        let from = EmailAddress::parse(&content.from_email)
            .map_err(|_| PrepareError::FromAddress(content.from_email.clone()))?;
        let reply_to = if content.reply_to_email.is_empty() {
            None
        } else {
            let address = EmailAddress::parse(&content.reply_to_email)
                .map_err(|_| PrepareError::ReplyTo(content.reply_to_email.clone()))?;
            Some(Mailbox { name: non_empty(&content.reply_to_name), address })
        };
        let templates =
            MailTemplates::compile(&content.subject_template, &content.html_template, &content.text_template)?;
        let attachments = content
            .attachments
            .iter()
            .map(|attachment| Attachment {
                filename: attachment.filename.clone(),
                content_type: attachment.content_type.clone(),
                content: attachment.content.clone(),
                content_id: attachment.content_id.clone(),
            })
            .collect();
        let from_domain = from.domain().clone();
        let return_path = from.to_string();
        let message = MessageTemplate::new(
            Mailbox { name: non_empty(&content.from_name), address: from },
            reply_to,
            content.headers.clone(),
            attachments,
            max_message_bytes,
        )?;
        Ok(Arc::new(Self { id: record.id, templates, message, from_domain, return_path }))
    }

    /// Renders and builds the message for one recipient (unsigned). `reference` goes into the
    /// `X-Sendwerk-Ref` header so that replies and reports can be matched to the recipient.
    pub fn build(
        &self,
        to: &EmailAddress,
        external_id: &str,
        variables: &RecipientVariables,
        reference: &str,
        test_marker: bool,
    ) -> Result<BuiltMessage, BuildError> {
        let merged = merge_builtin_variables(variables, to, external_id);
        let mut content = self.templates.render(&merged)?;
        if test_marker {
            content.subject = format!("[TEST] {}", content.subject);
        }
        let message_id = generate_message_id(self.from_domain.as_str());
        let mut headers: Vec<(&str, &str)> = vec![("X-Sendwerk-Ref", reference)];
        if test_marker {
            headers.push(("X-Sendwerk-Test", "yes"));
        }
        let bytes = self.message.build(to, &content, &headers, &message_id, Utc::now())?;
        Ok(BuiltMessage { message_id, bytes })
    }

    pub fn templates(&self) -> &MailTemplates {
        &self.templates
    }
}

/// The recipient's variables plus the built-in `email` and `external_id` (the recipient's own
/// values win when they define the same names).
pub fn merge_builtin_variables(
    variables: &RecipientVariables,
    to: &EmailAddress,
    external_id: &str,
) -> RecipientVariables {
    let mut merged = variables.clone();
    merged.entry("email").or_insert_with(|| serde_json::Value::String(to.to_string()));
    merged.entry("external_id").or_insert_with(|| serde_json::Value::String(external_id.to_owned()));
    merged
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}
