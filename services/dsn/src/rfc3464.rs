//! RFC 3464 `message/delivery-status` fields, wherever they appear (a proper MIME part, or pasted
//! into a text part by vendors and broken multiparts).

use crate::address;

/// One per-recipient block of a delivery-status report.
#[derive(Debug, Clone, Default)]
pub(crate) struct DsnRecipient {
    /// `Final-Recipient` when it holds an address.
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    /// `X-Actual-Recipient` (Sendmail after alias expansion).
    pub actual_recipient: Option<String>,
    pub action: Option<String>,
    /// The `Status:` value, e.g. `5.1.1 (user unknown)`.
    pub status: Option<String>,
    pub remote_mta: Option<String>,
    /// The type before the `;` of `Diagnostic-Code` (`smtp`, `x-unix`, `x-postfix`), lower case.
    pub diagnostic_type: Option<String>,
    pub diagnostic: Option<String>,
}

impl DsnRecipient {
    fn has_recipient_fields(&self) -> bool {
        self.final_recipient.is_some()
            || self.original_recipient.is_some()
            || self.actual_recipient.is_some()
            || self.status.is_some()
            || self.action.is_some()
    }

    /// The address the record is about: the final recipient, else the original one.
    pub(crate) fn address(&self) -> Option<&str> {
        self.final_recipient.as_deref().or(self.original_recipient.as_deref()).or(self.actual_recipient.as_deref())
    }
}

/// The fields of a delivery-status report.
#[derive(Debug, Clone, Default)]
pub(crate) struct DsnFields {
    pub reporting_mta: Option<String>,
    pub original_message_id: Option<String>,
    pub recipients: Vec<DsnRecipient>,
}

/// Whether a text holds RFC 3464 per-recipient fields.
pub(crate) fn contains_dsn_fields(text: &str) -> bool {
    let mut has_recipient = false;
    let mut has_outcome = false;
    for line in text.lines().take(2000) {
        let lower = crate::decode::prefix(line, 20).to_ascii_lowercase();
        has_recipient |= lower.starts_with("final-recipient:") || lower.starts_with("original-recipient:");
        has_outcome |= lower.starts_with("action:") || lower.starts_with("status:");
        if has_recipient && has_outcome {
            return true;
        }
    }
    false
}

/// `Name: value` at the start of a line, with a plausible field name.
fn field_of(line: &str) -> Option<(String, &str)> {
    let (name, value) = line.split_once(':')?;
    let plausible = !name.is_empty()
        && name.len() <= 40
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
    plausible.then(|| (name.to_ascii_lowercase(), value.trim()))
}

/// `rfc822; <a@b>` → the address; `dns; host (comment)` → `host`.
fn typed_value(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest)) if !kind.trim().contains(' ') => rest.trim(),
        _ => value.trim(),
    }
}

fn host_value(value: &str) -> Option<String> {
    let host = typed_value(value).split_whitespace().next()?.trim_end_matches([';', ',']);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Parses every delivery-status field block in `text`.
pub(crate) fn parse(text: &str) -> DsnFields {
    let mut fields = DsnFields::default();
    let mut current = DsnRecipient::default();
    // (field name, value) of the field that continuation lines extend.
    let mut open_field: Option<String> = None;
    let mut open_value = String::new();

    let flush_field = |current: &mut DsnRecipient, fields: &mut DsnFields, name: &str, value: &str| {
        let value = value.trim();
        match name {
            "final-recipient" => current.final_recipient = address::normalize(typed_value(value)),
            "original-recipient" => current.original_recipient = address::normalize(typed_value(value)),
            "x-actual-recipient" => current.actual_recipient = address::normalize(typed_value(value)),
            "action" => current.action = Some(value.to_ascii_lowercase()),
            "status" => current.status = Some(value.to_owned()),
            "remote-mta" => current.remote_mta = host_value(value),
            "diagnostic-code" => {
                match value.split_once(';') {
                    Some((kind, rest)) if !kind.trim().contains(' ') && !kind.trim().is_empty() => {
                        current.diagnostic_type = Some(kind.trim().to_ascii_lowercase());
                        current.diagnostic = Some(rest.trim().to_owned());
                    }
                    _ => current.diagnostic = Some(value.to_owned()),
                }
                if current.diagnostic.as_deref().is_some_and(str::is_empty) {
                    current.diagnostic = None;
                }
            }
            "reporting-mta" if fields.reporting_mta.is_none() => fields.reporting_mta = host_value(value),
            "x-original-message-id" | "original-message-id" if fields.original_message_id.is_none() => {
                let id = value.trim().trim_start_matches('<').trim_end_matches('>');
                if !id.is_empty() {
                    fields.original_message_id = Some(id.to_owned());
                }
            }
            _ => {}
        }
    };

    for line in text.lines() {
        let is_blank = line.trim().is_empty();
        let is_continuation = !is_blank && (line.starts_with(' ') || line.starts_with('\t'));
        if is_continuation && open_field.is_some() {
            open_value.push(' ');
            open_value.push_str(line.trim());
            continue;
        }
        if let Some(name) = open_field.take() {
            flush_field(&mut current, &mut fields, &name, &open_value);
            open_value.clear();
        }
        if is_blank {
            if current.has_recipient_fields() {
                fields.recipients.push(std::mem::take(&mut current));
            }
            continue;
        }
        match field_of(line) {
            Some((name, value)) => {
                let starts_new_recipient = match name.as_str() {
                    "final-recipient" => current.final_recipient.is_some(),
                    "original-recipient" => current.original_recipient.is_some(),
                    "action" => current.action.is_some(),
                    "status" => current.status.is_some(),
                    _ => false,
                };
                if starts_new_recipient && current.has_recipient_fields() {
                    fields.recipients.push(std::mem::take(&mut current));
                }
                open_field = Some(name);
                open_value.push_str(value);
            }
            None => {
                // Multi-line replies pasted without indentation ("550-..." lines) continue the
                // diagnostic; any other line ends the block.
                let continues_diagnostic =
                    line.as_bytes().first().is_some_and(u8::is_ascii_digit) && current.diagnostic.is_some();
                if continues_diagnostic {
                    if let Some(diagnostic) = current.diagnostic.as_mut() {
                        diagnostic.push(' ');
                        diagnostic.push_str(line.trim());
                    }
                } else if current.has_recipient_fields() {
                    fields.recipients.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if let Some(name) = open_field.take() {
        flush_field(&mut current, &mut fields, &name, &open_value);
    }
    if current.has_recipient_fields() {
        fields.recipients.push(current);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_recipient_blocks_and_folded_diagnostics_are_parsed() {
        let text = "Reporting-MTA: dns; mx.example.jp\n\nFinal-Recipient: RFC822; <Someone@Example.NET>\nAction: failed\nStatus: 5.0.0 (permanent failure)\nDiagnostic-Code: smtp;  550 'a' is not a\n registered gateway user\n\nFinal-Recipient: rfc822;b@example.org\nAction: delayed\nStatus: 4.0.0\n";
        let fields = parse(text);
        assert_eq!(fields.reporting_mta.as_deref(), Some("mx.example.jp"));
        assert_eq!(fields.recipients.len(), 2);
        assert_eq!(fields.recipients[0].final_recipient.as_deref(), Some("Someone@example.net"));
        assert_eq!(fields.recipients[0].diagnostic.as_deref(), Some("550 'a' is not a registered gateway user"));
        assert_eq!(fields.recipients[0].diagnostic_type.as_deref(), Some("smtp"));
        assert_eq!(fields.recipients[1].action.as_deref(), Some("delayed"));
    }

    #[test]
    fn unindented_multiline_replies_continue_the_diagnostic() {
        let text = "Diagnostic-Code: smtp; 550-Please turn on auth\n550 relay through this server\nStatus: 5.0.0\nFinal-Recipient: rfc822; k@example.com\n";
        let fields = parse(text);
        assert_eq!(fields.recipients.len(), 1);
        assert_eq!(
            fields.recipients[0].diagnostic.as_deref(),
            Some("550-Please turn on auth 550 relay through this server")
        );
    }

    #[test]
    fn a_path_instead_of_an_address_is_not_a_recipient() {
        let fields = parse("Final-Recipient: rfc822;/mail/spool/x\nAction: failed\nStatus: 5.0.0\n");
        assert_eq!(fields.recipients.len(), 1);
        assert!(fields.recipients[0].final_recipient.is_none());
    }
}
