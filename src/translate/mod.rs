//! Translation between the OpenAI Chat Completions and Anthropic Messages APIs (issue 16):
//! requests ([`request`]), whole answers ([`response`]) and error bodies ([`error_body`]),
//! as plain JSON transforms. A field with no equivalent on the other side is refused with a
//! [`Untranslatable`] naming it (the client gets a 400), or dropped where the table in
//! [`request`] says so; nothing is changed silently. Not wired into the request path yet.

pub mod request;
pub mod response;
pub mod stream;
mod structured;

use serde_json::{json, Value};

use crate::endpoint::Endpoint;

/// The API a client or an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

impl Format {
    /// The API a routed endpoint speaks; `None` for the ones with no counterpart to
    /// translate (completions, responses, embeddings: OpenAI's only).
    pub fn of_endpoint(endpoint: Endpoint) -> Option<Format> {
        match endpoint {
            Endpoint::ChatCompletions => Some(Format::OpenAi),
            Endpoint::AnthropicMessages => Some(Format::Anthropic),
            _ => None,
        }
    }

    /// Whether an upstream of format `upstream` (`None`: whatever the client speaks) can
    /// serve `endpoint`, as it is or translated.
    pub fn serves(upstream: Option<Format>, endpoint: Endpoint) -> bool {
        upstream != Some(Format::Anthropic) || Format::of_endpoint(endpoint).is_some()
    }
}

/// A request field the target's API cannot express: `field` is its JSON path in the
/// client's request (e.g. `messages[2].content[0].type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable {
    pub field: String,
    pub message: String,
}

impl Untranslatable {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Untranslatable {
        Untranslatable {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Anthropic's error type for an HTTP status.
pub fn anthropic_error_type(status: u32) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// OpenAI's error type for an HTTP status.
pub fn openai_error_type(status: u32) -> &'static str {
    match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

/// An error body (`status`, the provider's JSON body: both APIs put the text at
/// `error.message`) in the format `to`, keeping its message; a body that is no such object
/// keeps (the start of) its text as the message.
pub fn error_body(status: u32, body: &[u8], to: Format) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(2000).collect());
    match to {
        Format::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_error_type(status), "message": message}
        }),
        Format::OpenAi => {
            let code = parsed
                .as_ref()
                .and_then(|v| v.pointer("/error/type"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            json!({
                "error": {"message": message, "type": openai_error_type(status),
                          "param": null, "code": code}
            })
        }
    }
}

#[cfg(test)]
mod tests;
