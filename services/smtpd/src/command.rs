//! Parsing of one SMTP command line (without its line ending) into a [`Command`].

use crate::data::find_byte;

/// A syntactically valid command. Strings borrow from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    Ehlo { client_name: &'a str },
    Helo { client_name: &'a str },
    Mail { reverse_path: &'a str, declared_size_opt: Option<u64> },
    Rcpt { forward_path: &'a str },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
}

/// Why a command line was refused; each maps to one reply in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandError {
    /// Not an SMTP verb at all (500 5.5.2).
    Unknown,
    /// A known verb this server does not implement, such as EXPN or STARTTLS (502 5.5.1).
    NotImplemented,
    /// Arguments do not follow the grammar (501 5.5.4).
    Syntax,
    /// The MAIL reverse path is not a mailbox (501 5.1.7).
    BadSenderAddress,
    /// The RCPT forward path is not a mailbox (501 5.1.3).
    BadRecipientAddress,
    /// A MAIL or RCPT parameter this server did not advertise (555 5.5.4).
    UnsupportedParameter,
}

pub(crate) fn parse_command(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let (verb, arguments) = match find_byte(b' ', line) {
        Some(index) => (&line[..index], &line[index + 1..]),
        None => (line, &[][..]),
    };
    let verb_is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
    let arguments = std::str::from_utf8(arguments).map_err(|_| CommandError::Syntax)?.trim_matches(' ');
    if verb_is("MAIL") {
        parse_mail(arguments)
    } else if verb_is("RCPT") {
        parse_rcpt(arguments)
    } else if verb_is("DATA") {
        without_arguments(arguments, Command::Data)
    } else if verb_is("RSET") {
        without_arguments(arguments, Command::Rset)
    } else if verb_is("EHLO") {
        parse_client_name(arguments).map(|client_name| Command::Ehlo { client_name })
    } else if verb_is("HELO") {
        parse_client_name(arguments).map(|client_name| Command::Helo { client_name })
    } else if verb_is("NOOP") {
        Ok(Command::Noop)
    } else if verb_is("QUIT") {
        without_arguments(arguments, Command::Quit)
    } else if verb_is("VRFY") {
        Ok(Command::Vrfy)
    } else if verb_is("HELP") {
        Ok(Command::Help)
    } else if ["EXPN", "STARTTLS", "AUTH", "BDAT", "ETRN", "TURN"].iter().any(|name| verb_is(name)) {
        Err(CommandError::NotImplemented)
    } else {
        Err(CommandError::Unknown)
    }
}

fn without_arguments(arguments: &str, command: Command<'static>) -> Result<Command<'static>, CommandError> {
    if arguments.is_empty() { Ok(command) } else { Err(CommandError::Syntax) }
}

fn parse_client_name(arguments: &str) -> Result<&str, CommandError> {
    let has_control_chars = arguments.chars().any(char::is_control);
    if arguments.is_empty() || has_control_chars {
        return Err(CommandError::Syntax);
    }
    Ok(arguments)
}

fn parse_mail(arguments: &str) -> Result<Command<'_>, CommandError> {
    let after_keyword = strip_keyword(arguments, "FROM:")?;
    let (path, parameters) = split_path(after_keyword)?;
    let reverse_path = strip_source_route(path).ok_or(CommandError::BadSenderAddress)?;
    if !reverse_path.is_empty() && !is_mailbox(reverse_path) {
        return Err(CommandError::BadSenderAddress);
    }
    let mut declared_size_opt = None;
    for parameter in parameters.split(' ').filter(|parameter| !parameter.is_empty()) {
        let (keyword, value_opt) = match parameter.split_once('=') {
            Some((keyword, value)) => (keyword, Some(value)),
            None => (parameter, None),
        };
        if keyword.eq_ignore_ascii_case("SIZE") {
            declared_size_opt = Some(parse_size(value_opt)?);
        } else if keyword.eq_ignore_ascii_case("BODY") {
            let value = value_opt.ok_or(CommandError::Syntax)?;
            if !value.eq_ignore_ascii_case("7BIT") && !value.eq_ignore_ascii_case("8BITMIME") {
                return Err(CommandError::UnsupportedParameter);
            }
        } else if keyword.eq_ignore_ascii_case("SMTPUTF8") {
            if value_opt.is_some() {
                return Err(CommandError::Syntax);
            }
        } else {
            return Err(CommandError::UnsupportedParameter);
        }
    }
    Ok(Command::Mail { reverse_path, declared_size_opt })
}

fn parse_rcpt(arguments: &str) -> Result<Command<'_>, CommandError> {
    let after_keyword = strip_keyword(arguments, "TO:")?;
    let (path, parameters) = split_path(after_keyword)?;
    let forward_path = strip_source_route(path).ok_or(CommandError::BadRecipientAddress)?;
    let is_postmaster = forward_path.eq_ignore_ascii_case("postmaster");
    if !is_postmaster && !is_mailbox(forward_path) {
        return Err(CommandError::BadRecipientAddress);
    }
    if parameters.split(' ').any(|parameter| !parameter.is_empty()) {
        return Err(CommandError::UnsupportedParameter);
    }
    Ok(Command::Rcpt { forward_path })
}

/// Strips `FROM:` or `TO:` (any case) and the spaces some clients put after it.
fn strip_keyword<'a>(arguments: &'a str, keyword: &str) -> Result<&'a str, CommandError> {
    let matches = arguments.get(..keyword.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(keyword));
    if !matches {
        return Err(CommandError::Syntax);
    }
    Ok(arguments[keyword.len()..].trim_start_matches(' '))
}

/// Splits `<path> parameters` into the path without brackets and the parameters. A path
/// without brackets, as some old clients send, ends at the first space.
fn split_path(text: &str) -> Result<(&str, &str), CommandError> {
    let Some(inside) = text.strip_prefix('<') else {
        return Ok(text.split_once(' ').unwrap_or((text, "")));
    };
    let mut in_quotes = false;
    let mut escaped = false;
    for (index, character) in inside.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => {
                let parameters = &inside[index + 1..];
                if !parameters.is_empty() && !parameters.starts_with(' ') {
                    return Err(CommandError::Syntax);
                }
                return Ok((&inside[..index], parameters));
            }
            _ => {}
        }
    }
    Err(CommandError::Syntax)
}

/// Drops an obsolete source route (`@relay1,@relay2:user@domain`), which RFC 5321 says to ignore.
fn strip_source_route(path: &str) -> Option<&str> {
    if path.starts_with('@') { path.split_once(':').map(|(_, mailbox)| mailbox) } else { Some(path) }
}

fn parse_size(value_opt: Option<&str>) -> Result<u64, CommandError> {
    let value = value_opt.ok_or(CommandError::Syntax)?;
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(CommandError::Syntax);
    }
    // All digits: the only possible failure is overflow, which is simply "too big".
    Ok(value.parse().unwrap_or(u64::MAX))
}

/// `local@domain` per RFC 5321 (with RFC 6531 UTF-8), leniently: dots in the local part are not
/// checked, as real mailboxes break that rule.
fn is_mailbox(mailbox: &str) -> bool {
    let Some((local_part, domain)) = mailbox.rsplit_once('@') else {
        return false;
    };
    is_local_part(local_part) && is_domain(domain)
}

fn is_local_part(local_part: &str) -> bool {
    if let Some(quoted) = local_part.strip_prefix('"') {
        return quoted.ends_with('"') && !quoted.chars().any(char::is_control);
    }
    !local_part.is_empty() && local_part.chars().all(|c| is_atext(c) || c == '.')
}

fn is_atext(character: char) -> bool {
    character.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(character) || !character.is_ascii()
}

fn is_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[') {
        let Some(inner) = literal.strip_suffix(']') else {
            return false;
        };
        return !inner.is_empty() && inner.chars().all(|c| c.is_ascii_graphic() && !"[]\\".contains(c));
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii())
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command<'_>, CommandError> {
        parse_command(line.as_bytes())
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse("ehlo client.test"), Ok(Command::Ehlo { client_name: "client.test" }));
        assert_eq!(parse("DaTa"), Ok(Command::Data));
        assert_eq!(parse("quit"), Ok(Command::Quit));
        assert_eq!(
            parse("mail from:<a@b.test>"),
            Ok(Command::Mail { reverse_path: "a@b.test", declared_size_opt: None })
        );
    }

    #[test]
    fn mail_accepts_the_null_path_and_known_parameters() {
        assert_eq!(
            parse("MAIL FROM:<> SIZE=1000 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail { reverse_path: "", declared_size_opt: Some(1000) })
        );
        assert_eq!(
            parse("MAIL FROM: <a@b.test> size=99999999999999999999999"),
            Ok(Command::Mail { reverse_path: "a@b.test", declared_size_opt: Some(u64::MAX) })
        );
    }

    #[test]
    fn mail_rejects_bad_parameters() {
        assert_eq!(parse("MAIL FROM:<a@b.test> SIZE=x"), Err(CommandError::Syntax));
        assert_eq!(parse("MAIL FROM:<a@b.test> SIZE"), Err(CommandError::Syntax));
        assert_eq!(parse("MAIL FROM:<a@b.test> BODY=BINARYMIME"), Err(CommandError::UnsupportedParameter));
        assert_eq!(parse("MAIL FROM:<a@b.test> RET=FULL"), Err(CommandError::UnsupportedParameter));
        assert_eq!(parse("MAIL FROM:<a@b.test>SIZE=1"), Err(CommandError::Syntax));
        assert_eq!(parse("MAIL TO:<a@b.test>"), Err(CommandError::Syntax));
        assert_eq!(parse("MAIL FROM:<a@b.test"), Err(CommandError::Syntax));
        assert_eq!(parse("MAIL FROM:<not an address>"), Err(CommandError::BadSenderAddress));
    }

    #[test]
    fn rcpt_accepts_mailboxes_postmaster_and_source_routes() {
        assert_eq!(parse("RCPT TO:<x@y.test>"), Ok(Command::Rcpt { forward_path: "x@y.test" }));
        assert_eq!(parse("rcpt to:<Postmaster>"), Ok(Command::Rcpt { forward_path: "Postmaster" }));
        assert_eq!(parse("RCPT TO:<@r1,@r2:x@y.test>"), Ok(Command::Rcpt { forward_path: "x@y.test" }));
        assert_eq!(parse("RCPT TO:<\"a >b\"@y.test>"), Ok(Command::Rcpt { forward_path: "\"a >b\"@y.test" }));
        assert_eq!(parse("RCPT TO:<jösé@bücher.test>"), Ok(Command::Rcpt { forward_path: "jösé@bücher.test" }));
        assert_eq!(parse("RCPT TO:<x@[127.0.0.1]>"), Ok(Command::Rcpt { forward_path: "x@[127.0.0.1]" }));
        assert_eq!(parse("RCPT TO:x@y.test"), Ok(Command::Rcpt { forward_path: "x@y.test" }));
    }

    #[test]
    fn rcpt_rejects_bad_addresses_and_parameters() {
        assert_eq!(parse("RCPT TO:<>"), Err(CommandError::BadRecipientAddress));
        assert_eq!(parse("RCPT TO:<x@>"), Err(CommandError::BadRecipientAddress));
        assert_eq!(parse("RCPT TO:<x@a..b>"), Err(CommandError::BadRecipientAddress));
        assert_eq!(parse("RCPT TO:<a b@c.test>"), Err(CommandError::BadRecipientAddress));
        assert_eq!(parse("RCPT TO:<x@y.test> NOTIFY=NEVER"), Err(CommandError::UnsupportedParameter));
        assert_eq!(parse("RCPT <x@y.test>"), Err(CommandError::Syntax));
    }

    #[test]
    fn other_lines_get_the_right_error() {
        assert_eq!(parse(""), Err(CommandError::Unknown));
        assert_eq!(parse("HELLO there"), Err(CommandError::Unknown));
        assert_eq!(parse("EXPN list"), Err(CommandError::NotImplemented));
        assert_eq!(parse("EHLO"), Err(CommandError::Syntax));
        assert_eq!(parse("DATA now"), Err(CommandError::Syntax));
        assert_eq!(parse("NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse_command(b"RCPT TO:<\xff@x.test>"), Err(CommandError::Syntax));
    }
}
