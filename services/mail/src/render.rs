//! Merge-field rendering: a mailing's subject, HTML and text templates are compiled once with
//! minijinja and rendered once per recipient.
//!
//! Undefined variables are errors (minijinja's strict mode), never empty strings: a mailing
//! that says "Dear ," is worse than one that is held back. Only the HTML template escapes
//! values (HTML escaping); subject and text are plain text and go through the MIME layer,
//! which makes them header- and transfer-safe.
//!
//! Security: each template lives alone in its own [`Environment`] without a loader, so
//! `include`, `import` and `extends` can only name the template itself (and then stop at
//! the recursion limit). Every render gets [`FUEL_PER_RENDER`] units of fuel (about one per
//! instruction), so loops end, and output is capped at [`MAX_RENDERED_PART_BYTES`] per part.
//! Known limitation: fuel counts instructions, not bytes, so a hostile template can still
//! make minijinja allocate large intermediate strings (`~` concatenation is unbounded,
//! `"x" * n` is capped at 100 MB by minijinja). Limit template source size at the API and
//! keep rendering away from untrusted multi-tenant hot paths if that matters.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

/// Instructions one render of one part may execute. A typical newsletter template needs a
/// few hundred to a few thousand; loops over product lists stay far below this.
pub const FUEL_PER_RENDER: u64 = 1_000_000;

/// Nesting depth for macros, includes and expressions (minijinja's default is 500).
const RECURSION_LIMIT: usize = 100;

/// Largest output one rendered part (subject, HTML or text) may have.
pub const MAX_RENDERED_PART_BYTES: usize = 16 * 1024 * 1024;

/// Which template of a mailing an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateField {
    Subject,
    Html,
    Text,
}

impl TemplateField {
    /// The name API users know the field by, e.g. `html_template`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subject => "subject_template",
            Self::Html => "html_template",
            Self::Text => "text_template",
        }
    }
}

impl fmt::Display for TemplateField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A template that cannot be compiled; its Display is meant for API users, e.g.
/// `html_template line 3: syntax error: unexpected end of input`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}{}: {message}", line_suffix(*line))]
pub struct TemplateError {
    pub field: TemplateField,
    pub line: Option<usize>,
    pub message: String,
}

/// A template that failed for one recipient, e.g.
/// `subject_template line 1: merge variable "first_name" is not defined for this recipient`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}{}: {message}", line_suffix(*line))]
pub struct RenderError {
    pub field: TemplateField,
    pub line: Option<usize>,
    /// Set when the failure is an undefined top-level merge variable.
    pub missing_variable: Option<String>,
    pub message: String,
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|number| format!(" line {number}")).unwrap_or_default()
}

/// What one recipient gets: the subject and the parts the mailing has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedContent {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

/// The compiled templates of one mailing. Cloning is cheap (one `Arc`), and it is
/// `Send + Sync`, so one compiled set serves every sender task.
#[derive(Clone)]
pub struct MailTemplates {
    inner: Arc<CompiledTemplates>,
}

struct CompiledTemplates {
    subject: CompiledPart,
    html_opt: Option<CompiledPart>,
    text_opt: Option<CompiledPart>,
    variables: BTreeSet<String>,
}

struct CompiledPart {
    field: TemplateField,
    env: Environment<'static>,
    variables: BTreeSet<String>,
}

impl fmt::Debug for MailTemplates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailTemplates")
            .field("has_html", &self.inner.html_opt.is_some())
            .field("has_text", &self.inner.text_opt.is_some())
            .field("variables", &self.inner.variables)
            .finish()
    }
}

impl MailTemplates {
    /// Compiles a mailing's templates. An empty `html` or `text` means the mailing has no
    /// such part; the subject must not be empty and at least one body part must exist.
    pub fn compile(subject: &str, html: &str, text: &str) -> Result<Self, TemplateError> {
        if subject.trim().is_empty() {
            return Err(TemplateError {
                field: TemplateField::Subject,
                line: None,
                message: "must not be empty".to_owned(),
            });
        }
        if html.is_empty() && text.is_empty() {
            return Err(TemplateError {
                field: TemplateField::Text,
                line: None,
                message: "html_template and text_template are both empty; at least one is required".to_owned(),
            });
        }
        let subject_part = CompiledPart::compile(TemplateField::Subject, subject)?;
        let html_opt = non_empty(html).map(|source| CompiledPart::compile(TemplateField::Html, source)).transpose()?;
        let text_opt = non_empty(text).map(|source| CompiledPart::compile(TemplateField::Text, source)).transpose()?;
        let variables = [Some(&subject_part), html_opt.as_ref(), text_opt.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|part| part.variables.iter().cloned())
            .collect();
        Ok(Self { inner: Arc::new(CompiledTemplates { subject: subject_part, html_opt, text_opt, variables }) })
    }

    /// The top-level merge variables any of the templates may read, for checking recipient
    /// data before sending. Builtin globals such as `range` are not included.
    pub fn variables(&self) -> BTreeSet<String> {
        self.inner.variables.clone()
    }

    /// Renders subject and body parts for one recipient.
    pub fn render(&self, vars: &serde_json::Map<String, serde_json::Value>) -> Result<RenderedContent, RenderError> {
        // Converted once and shared by the three renders (a minijinja Value clones cheaply).
        let context = Value::from_serialize(vars);
        let subject = self.inner.subject.render(&context, vars)?;
        let html = self.inner.html_opt.as_ref().map(|part| part.render(&context, vars)).transpose()?;
        let text = self.inner.text_opt.as_ref().map(|part| part.render(&context, vars)).transpose()?;
        Ok(RenderedContent { subject, html, text })
    }
}

fn non_empty(source: &str) -> Option<&str> {
    (!source.is_empty()).then_some(source)
}

impl CompiledPart {
    fn compile(field: TemplateField, source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_debug(false);
        env.set_fuel(Some(FUEL_PER_RENDER));
        env.set_recursion_limit(RECURSION_LIMIT);
        let escape = match field {
            TemplateField::Html => AutoEscape::Html,
            TemplateField::Subject | TemplateField::Text => AutoEscape::None,
        };
        env.set_auto_escape_callback(move |_name| escape);
        env.add_template_owned(field.as_str(), source.to_owned()).map_err(|error| TemplateError {
            field,
            line: error.line(),
            message: describe(&error),
        })?;
        let globals: HashSet<String> = env.globals().map(|(name, _)| name.to_owned()).collect();
        let template = env.get_template(field.as_str()).map_err(|error| TemplateError {
            field,
            line: error.line(),
            message: describe(&error),
        })?;
        let variables =
            template.undeclared_variables(false).into_iter().filter(|name| !globals.contains(name)).collect();
        Ok(Self { field, env, variables })
    }

    fn render(
        &self,
        context: &Value,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, RenderError> {
        let template = self.env.get_template(self.field.as_str()).map_err(|error| self.render_error(&error, vars))?;
        let mut output = CappedOutput::default();
        template.render_captured_to(context, &mut output).map_err(|error| self.render_error(&error, vars))?;
        // Every write is a whole `&str`, so the bytes are UTF-8; checked anyway, not assumed.
        String::from_utf8(output.bytes).map_err(|_| RenderError {
            field: self.field,
            line: None,
            missing_variable: None,
            message: "rendered output is not valid UTF-8".to_owned(),
        })
    }

    fn render_error(&self, error: &minijinja::Error, vars: &serde_json::Map<String, serde_json::Value>) -> RenderError {
        if error.kind() == ErrorKind::UndefinedError {
            // minijinja's strict-undefined error does not carry the name: the first variable
            // this template reads that the recipient lacks is the cause. If the recipient has
            // them all, an attribute (`customer.name`) was missing instead.
            let missing_variable = self.variables.iter().find(|name| !vars.contains_key(name.as_str())).cloned();
            let message = match &missing_variable {
                Some(name) => {
                    format!("merge variable \"{name}\" is not defined for this recipient")
                }
                None => "a value used by the template is not defined for this recipient".to_owned(),
            };
            return RenderError { field: self.field, line: error.line(), missing_variable, message };
        }
        let message = if is_output_limit(error) {
            format!("rendered output exceeds {MAX_RENDERED_PART_BYTES} bytes")
        } else if error.kind() == ErrorKind::OutOfFuel {
            "template does too much work for one recipient (out of fuel)".to_owned()
        } else {
            describe(error)
        };
        RenderError { field: self.field, line: error.line(), missing_variable: None, message }
    }
}

/// `syntax error: unexpected end of input`: the kind, then minijinja's detail.
fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

fn is_output_limit(error: &minijinja::Error) -> bool {
    error.kind() == ErrorKind::WriteFailure
}

/// A render target that refuses to grow past [`MAX_RENDERED_PART_BYTES`].
#[derive(Default)]
struct CappedOutput {
    bytes: Vec<u8>,
}

impl io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_PART_BYTES {
            return Err(io::Error::other("rendered output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(map) => map,
            _ => panic!("test vars must be an object"),
        }
    }

    #[test]
    fn merge_fields_render_into_every_part() {
        let templates = MailTemplates::compile(
            "Hallo {{ first_name }}",
            "<p>Hallo {{ first_name }}</p>\n",
            "Hallo {{ first_name }}\n",
        )
        .expect("compiles");
        let content = templates.render(&vars(json!({"first_name": "Jörg"}))).expect("renders");
        assert_eq!(content.subject, "Hallo Jörg");
        assert_eq!(content.html.as_deref(), Some("<p>Hallo Jörg</p>\n"));
        assert_eq!(content.text.as_deref(), Some("Hallo Jörg\n"));
    }

    #[test]
    fn html_escapes_values_but_subject_and_text_do_not() {
        let templates = MailTemplates::compile("{{ v }}", "<b>{{ v }}</b>", "{{ v }}").expect("compiles");
        let content = templates.render(&vars(json!({"v": "<a & \"b\">"}))).expect("renders");
        assert_eq!(content.subject, "<a & \"b\">");
        assert_eq!(content.text.as_deref(), Some("<a & \"b\">"));
        assert_eq!(content.html.as_deref(), Some("<b>&lt;a &amp; &quot;b&quot;&gt;</b>"));
    }

    #[test]
    fn empty_html_or_text_means_the_part_is_absent() {
        let templates = MailTemplates::compile("s", "", "text only").expect("compiles");
        let content = templates.render(&serde_json::Map::new()).expect("renders");
        assert_eq!(content.html, None);
        assert_eq!(content.text.as_deref(), Some("text only"));
    }

    #[test]
    fn empty_subject_or_missing_body_is_rejected_naming_the_field() {
        let error = MailTemplates::compile(" ", "<p>x</p>", "").expect_err("empty subject");
        assert_eq!(error.field, TemplateField::Subject);
        assert!(error.to_string().starts_with("subject_template: "), "{error}");
        let error = MailTemplates::compile("s", "", "").expect_err("no body");
        assert!(error.to_string().contains("at least one"), "{error}");
    }

    #[test]
    fn syntax_errors_name_the_field_and_line() {
        let error = MailTemplates::compile("s", "<p>\n\n{% if x %}", "").expect_err("unclosed if");
        assert_eq!(error.field, TemplateField::Html);
        assert_eq!(error.line, Some(3));
        assert_eq!(
            error.to_string(),
            "html_template line 3: syntax error: unexpected end of input, expected end of block"
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let templates = MailTemplates::compile("Hi {{ first_name }}", "", "{{ greeting }}").expect("compiles");
        let error = templates.render(&vars(json!({"greeting": "x"}))).expect_err("missing");
        assert_eq!(error.missing_variable.as_deref(), Some("first_name"));
        assert_eq!(
            error.to_string(),
            "subject_template line 1: merge variable \"first_name\" is not defined for this recipient"
        );
    }

    #[test]
    fn a_missing_variable_inside_a_condition_is_also_an_error() {
        let templates = MailTemplates::compile("s", "", "a\n{% if vip %}gold{% endif %}").expect("compiles");
        let error = templates.render(&serde_json::Map::new()).expect_err("missing");
        assert_eq!(error.field, TemplateField::Text);
        assert_eq!(error.line, Some(2));
        assert_eq!(error.missing_variable.as_deref(), Some("vip"));
    }

    #[test]
    fn a_missing_attribute_is_an_error_without_a_variable_name() {
        let templates = MailTemplates::compile("{{ customer.name }}", "", "t").expect("compiles");
        let error = templates.render(&vars(json!({"customer": {}}))).expect_err("missing");
        assert_eq!(error.missing_variable, None);
        assert!(error.to_string().contains("not defined"), "{error}");
    }

    #[test]
    fn variables_lists_top_level_names_without_builtins() {
        let templates = MailTemplates::compile(
            "{{ first_name }}",
            "{% for i in range(3) %}{{ customer.city }}{% endfor %}",
            "{% set local = 1 %}{{ local }}{{ code }}",
        )
        .expect("compiles");
        let expected: BTreeSet<String> = ["code", "customer", "first_name"].into_iter().map(String::from).collect();
        assert_eq!(templates.variables(), expected);
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        let templates = MailTemplates::compile(
            "s",
            "",
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .expect("compiles");
        let error = templates.render(&serde_json::Map::new()).expect_err("out of fuel");
        assert!(error.to_string().contains("out of fuel"), "{error}");
    }

    #[test]
    fn self_includes_stop_at_the_recursion_limit() {
        let templates = MailTemplates::compile("s", "", "{% include 'text_template' %}").expect("compiles");
        assert!(templates.render(&serde_json::Map::new()).is_err());
        let templates = MailTemplates::compile("s", "", "{% include 'other' %}").expect("compiles");
        assert!(templates.render(&serde_json::Map::new()).is_err());
    }

    #[test]
    fn huge_output_is_refused() {
        let templates = MailTemplates::compile("s", "", "{% for i in range(40) %}{{ 'x' * 1000000 }}{% endfor %}")
            .expect("compiles");
        let error = templates.render(&serde_json::Map::new()).expect_err("too large");
        assert!(error.to_string().contains("exceeds"), "{error}");
    }

    #[test]
    fn compiled_templates_are_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<MailTemplates>();
    }
}
