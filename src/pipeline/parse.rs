//! Read and parse the body: what a routed request asks for.
//!
//! Before the body is buffered, its headers are checked ([`check_headers`]): the router
//! reads only plain JSON of at most `max_body_bytes`. At its end, the body is read whole
//! ([`read_body`]), parsed ([`json`]) and read for what routing needs ([`ParsedRequest`]:
//! the requested model, whether it streams, its output limit and format); the router's own
//! members (`allowed_models`, `provider`) are read apart ([`ParsedRequest::prefs`]), so that
//! a request refused for them is logged with its model. A body the router cannot read is
//! refused with a 4xx naming what is wrong, never guessed at.

use serde_json::{Map, Value};

use crate::config::plan::Plan;
use crate::errors::ApiError;
use crate::host::Host;
use crate::pipeline::identify::ClientHeaders;
use crate::route::capable::OutputFormat;
use crate::route::ClientPrefs;

/// Checks the request headers a routed body is read by: they must be text (with those the
/// rules match), the body plain JSON (no content coding) and not declared larger than
/// `max_body_bytes`.
pub(super) fn check_headers(
    plan: &Plan,
    client: &ClientHeaders,
    host: &dyn Host,
) -> Result<(), ApiError> {
    let body_headers = ["content-encoding", "content-length"];
    let rule_headers = plan.rules.iter().flat_map(|r| &r.matcher.headers);
    let names = body_headers
        .into_iter()
        .chain(rule_headers.map(|h| h.name.as_str()));
    client.require_text(names)?;
    if let Some(encoding) = client.get(host, "content-encoding") {
        if !encoding.trim().eq_ignore_ascii_case("identity") {
            return Err(ApiError {
                status: 415,
                message: "Compressed request bodies are not supported; send plain JSON.".to_owned(),
                kind: "invalid_request_error",
                param: None,
                code: "unsupported_content_encoding",
            });
        }
    }
    let declared = client
        .get(host, "content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > plan.max_body_bytes) {
        return Err(ApiError::body_too_large(plan.max_body_bytes));
    }
    Ok(())
}

/// The whole buffered body (`body_size` bytes); an empty one is refused.
pub(super) fn read_body(host: &dyn Host, body_size: usize) -> Result<Vec<u8>, ApiError> {
    let body = host
        .request_body(body_size)
        .map_err(|e| ApiError::internal(format!("could not read the request body: {e}")))?
        .unwrap_or_default();
    if body.is_empty() {
        // E.g. HTTP/2 headers without END_STREAM followed by an empty final DATA frame.
        return Err(missing_body());
    }
    Ok(body)
}

/// The body as JSON.
pub(super) fn json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(
            format!("Request body is not valid JSON: {e}."),
            None,
            "invalid_json",
        )
    })
}

pub(super) fn missing_body() -> ApiError {
    ApiError::invalid_request(
        "Request body is required: send a JSON object.",
        None,
        "missing_body",
    )
}

/// What a routed request asks for, read from its JSON body.
pub(super) struct ParsedRequest<'v> {
    /// The body's members.
    pub(super) fields: &'v Map<String, Value>,
    /// The requested model; `None` means the router chooses.
    pub(super) model: Option<&'v str>,
    pub(super) stream: bool,
    /// `max_tokens` and friends, if the client gave them.
    pub(super) max_output_tokens: Option<u64>,
    /// The output format it asks for (`response_format` and friends).
    pub(super) format: OutputFormat,
}

impl<'v> ParsedRequest<'v> {
    /// Reads `value`, which must be a JSON object with a valid `model`, if any.
    pub(super) fn of(value: &'v Value) -> Result<ParsedRequest<'v>, ApiError> {
        let Value::Object(fields) = value else {
            return Err(ApiError::invalid_request(
                "Request body must be a JSON object.",
                None,
                "invalid_body",
            ));
        };
        let model = requested_model(fields)?;
        let stream = fields.get("stream").and_then(Value::as_bool) == Some(true);
        let max_output_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| fields.get(*k).and_then(Value::as_u64));
        Ok(ParsedRequest {
            fields,
            model,
            stream,
            max_output_tokens,
            format: OutputFormat::of(fields),
        })
    }

    /// The client's routing preferences: `allowed_models` and `provider`, the router's own
    /// members of the body.
    pub(super) fn prefs(&self) -> Result<ClientPrefs, ApiError> {
        ClientPrefs::from_body(self.fields)
    }
}

/// `None` means the router chooses (`"auto"`, `null` or no `model`).
fn requested_model(fields: &Map<String, Value>) -> Result<Option<&str>, ApiError> {
    match fields.get("model") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "auto" => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::invalid_request(
            "`model` must not be empty.",
            Some("model"),
            "invalid_value",
        )),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid_request(
            "`model` must be a string.",
            Some("model"),
            "invalid_type",
        )),
    }
}
