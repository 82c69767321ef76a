//! Serde helpers for settings that arrive through environment variables, where a provider may
//! have parsed `12345` or `true` into a number or a boolean: a string setting takes them as text.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string (numbers and booleans are taken as text)")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_owned())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<String, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<String, E> {
        Ok(value.to_string())
    }
}

/// A string field that also accepts a number or boolean as its text.
pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(TextVisitor)
}

/// An optional string field that also accepts a number or boolean as its text.
pub fn option_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    string(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Secret {
        #[serde(deserialize_with = "super::option_string", default)]
        password: Option<String>,
    }

    #[test]
    fn numbers_and_booleans_become_text() {
        let numeric: Secret = serde_json::from_str(r#"{"password": 12345}"#).expect("number");
        assert_eq!(numeric.password.as_deref(), Some("12345"));
        let boolean: Secret = serde_json::from_str(r#"{"password": true}"#).expect("bool");
        assert_eq!(boolean.password.as_deref(), Some("true"));
        let text: Secret = serde_json::from_str(r#"{"password": "s3cret"}"#).expect("text");
        assert_eq!(text.password.as_deref(), Some("s3cret"));
        let absent: Secret = serde_json::from_str("{}").expect("absent");
        assert_eq!(absent.password, None);
    }
}
