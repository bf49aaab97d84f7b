//! OpenAI-shaped errors that the filter itself answers with.

use serde::Serialize;

use crate::clients::ledger::{duration, Exceeded, Limited};
use crate::ratelimit::LimitKind;

/// An error reply: status plus the OpenAI error object
/// `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u32,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: &'static str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

/// Longest piece of client text (a model name, an id) repeated in an error message.
pub const MAX_ECHOED_BYTES: usize = 256;

/// `s` as an error message may repeat it: at most [`MAX_ECHOED_BYTES`] bytes (cut on a
/// character boundary, marked with `...`), so a huge model name does not come back whole.
pub fn echoed(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_ECHOED_BYTES {
        return s.into();
    }
    let mut end = MAX_ECHOED_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end]).into()
}

impl ApiError {
    pub fn invalid_request(
        message: impl Into<String>,
        param: Option<&'static str>,
        code: &'static str,
    ) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            status: 404,
            message: format!(
                "The model '{}' does not exist or is not routed by this gateway.",
                echoed(model)
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: "model_not_found",
        }
    }

    /// 400: a header the router must read (`name`, in lower case) is not valid UTF-8.
    pub fn invalid_header(name: &str) -> Self {
        ApiError {
            status: 400,
            message: format!("The `{}` header is not valid UTF-8.", echoed(name)),
            kind: "invalid_request_error",
            param: None,
            code: "invalid_header_value",
        }
    }

    /// 400: a path that would be a routed endpoint but cannot be read safely.
    pub fn invalid_path() -> Self {
        ApiError::invalid_request(
            "The request path cannot be read safely (an encoded slash, backslash or NUL, a bad escape, or `..` above the root); send the plain path, e.g. /v1/chat/completions.",
            None,
            "invalid_path",
        )
    }

    /// 400: a routed request whose body ends with trailers.
    pub fn trailers_not_supported() -> Self {
        ApiError::invalid_request(
            "Request trailers are not supported on this endpoint; send the JSON body alone.",
            None,
            "unsupported_trailers",
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        ApiError {
            status: 413,
            message: format!("Request body is larger than the {limit} bytes this gateway accepts."),
            kind: "invalid_request_error",
            param: None,
            code: "request_too_large",
        }
    }

    pub fn no_candidate(reason: impl Into<String>) -> Self {
        ApiError {
            status: 503,
            message: reason.into(),
            kind: "service_unavailable_error",
            param: None,
            code: "no_available_target",
        }
    }

    /// 401: no key (`missing`) or one no client has. Never repeats the key.
    pub fn unauthorized(missing: bool) -> Self {
        let (message, code) = if missing {
            (
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
                "missing_api_key",
            )
        } else {
            ("Incorrect API key provided.", "invalid_api_key")
        };
        ApiError {
            status: 401,
            message: message.to_owned(),
            kind: "invalid_request_error",
            param: None,
            code,
        }
    }

    /// 403: the client's key may not use this model (or, for `auto`, any routed target).
    pub fn model_not_allowed(model: Option<&str>) -> Self {
        let message = match model {
            Some(m) => format!(
                "This API key is not allowed to use the model '{}'.",
                echoed(m)
            ),
            None => "This API key is not allowed to use any model that could serve this request."
                .to_owned(),
        };
        ApiError {
            status: 403,
            message,
            kind: "permission_error",
            param: Some("model"),
            code: "model_not_allowed",
        }
    }

    /// 429: the client is over one of its limits (OpenAI's types: `requests`, `tokens`,
    /// `insufficient_quota`).
    pub fn rate_limited(client: &str, limited: &Limited) -> Self {
        let wait = duration(limited.retry_after_ms);
        let (kind, code, message) = match limited.exceeded {
            Exceeded::Requests => (
                "requests",
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for client '{client}' on requests per min (RPM): Limit {}, Used {}, Requested 1. Please try again in {wait}.",
                    limited.limit, limited.used
                ),
            ),
            Exceeded::Tokens => (
                "tokens",
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for client '{client}' on tokens per min (TPM): Limit {}, Used {}. Please try again in {wait}.",
                    limited.limit, limited.used
                ),
            ),
            Exceeded::Budget => (
                "insufficient_quota",
                "insufficient_quota",
                format!(
                    "Client '{client}' has used its monthly budget ({} of {}); it renews at the start of next month (UTC), in {wait}.",
                    limited.used as f64 / 1e6,
                    limited.limit as f64 / 1e6
                ),
            ),
        };
        ApiError {
            status: 429,
            message,
            kind,
            param: None,
            code,
        }
    }

    /// 429 from the rate-limit service: `client` (may be empty for a target's budget) is over
    /// `kind`, whose limit is `limit` when known; `wait` as OpenAI writes it.
    pub fn rate_limited_at_service(
        kind: LimitKind,
        client: &str,
        limit: Option<u64>,
        wait: &str,
    ) -> Self {
        let of = |unit: &str| match limit {
            Some(l) => format!(" on {unit}: Limit {l}"),
            None => format!(" on {unit}"),
        };
        let (kind_name, code, message) = match kind {
            LimitKind::ClientRequests => (
                "requests",
                "rate_limit_exceeded",
                format!("Rate limit reached for client '{client}'{}. Please try again in {wait}.", of("requests per min (RPM)")),
            ),
            LimitKind::ClientTokens => (
                "tokens",
                "rate_limit_exceeded",
                format!("Rate limit reached for client '{client}'{}. Please try again in {wait}.", of("tokens per min (TPM)")),
            ),
            LimitKind::ClientBudget => (
                "insufficient_quota",
                "insufficient_quota",
                format!("Client '{client}' has used its monthly budget{}; it renews at the start of next month (UTC), in {wait}.",
                    limit.map(|l| format!(" of {}", l as f64 / 1e6)).unwrap_or_default()),
            ),
            LimitKind::TargetRequests | LimitKind::TargetTokens => (
                "requests",
                "rate_limit_exceeded",
                format!("The model chosen for this request is over its budget. Please try again in {wait}."),
            ),
        };
        ApiError {
            status: 429,
            message,
            kind: kind_name,
            param: None,
            code,
        }
    }

    /// 503: the rate-limit service failed and `failure_mode` is `deny`.
    pub fn limits_unavailable() -> Self {
        ApiError {
            status: 503,
            message: "The rate-limit service is unavailable; retry in 1 s.".to_owned(),
            kind: "service_unavailable_error",
            param: None,
            code: "rate_limit_service_unavailable",
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: "internal_error",
        }
    }

    /// The JSON body of the reply in Anthropic's shape (`{"type": "error", "error": {"type",
    /// "message"}}`, the type by status), for `/v1/messages` clients.
    pub fn anthropic_body(&self) -> Vec<u8> {
        let kind = crate::translate::anthropic_error_type(self.status);
        serde_json::json!({"type": "error", "error": {"type": kind, "message": self.message}})
            .to_string()
            .into_bytes()
    }

    /// The JSON body of the reply.
    pub fn body(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        // Serialising plain strings cannot fail; fall back to a fixed body rather than trap.
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}"#.to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = ApiError::invalid_request("bad \"model\"", Some("model"), "invalid_type");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "bad \"model\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "invalid_type");
        let e = ApiError::no_candidate("none");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
        assert_eq!(e.status, 503);
    }

    #[test]
    fn client_text_in_messages_is_capped() {
        let huge = "\u{e9}".repeat(100_000);
        for e in [
            ApiError::model_not_found(&huge),
            ApiError::model_not_allowed(Some(&huge)),
        ] {
            assert!(
                e.message.len() < MAX_ECHOED_BYTES + 100,
                "{}",
                e.message.len()
            );
            assert!(e.message.contains("..."));
        }
        assert_eq!(echoed("gpt-4o"), "gpt-4o");
    }
}
