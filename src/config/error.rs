//! The one error type of configuration loading: it always names the field.

use std::fmt;

/// A configuration problem, with the JSON path of the offending field
/// (for example `rules[2].match.complexity`) and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid plugin configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid plugin configuration: {}: {}",
                self.field, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}
