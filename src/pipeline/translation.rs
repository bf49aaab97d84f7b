//! Translate: a request whose client and target speak different APIs (`upstreams.*.format`)
//! goes out in the target's (body, path, version header) and its answer comes back in the
//! client's: a whole answer (or a provider's error) at the end of its body, a stream event
//! by event (`crate::translate`).

use serde_json::Value;

use crate::config::plan::{Plan, Upstream};
use crate::endpoint::Endpoint;
use crate::errors::ApiError;
use crate::host::Host;
use crate::rewrite::headers::HeaderEdits;
use crate::route::Candidate;
use crate::translate::stream::{AnthropicToOpenAi, OpenAiToAnthropic};
use crate::translate::{self, request, response, Format};

/// The client's API and the target's when the request must be translated for `upstream`:
/// it names a format other than the client's. An endpoint without a counterpart cannot go
/// to an upstream of another format (routing skips such targets: `Format::serves`).
pub(super) fn needed(
    endpoint: Endpoint,
    upstream: &Upstream,
) -> Result<Option<(Format, Format)>, ApiError> {
    let Some(target) = upstream.format else {
        return Ok(None);
    };
    match Format::of_endpoint(endpoint) {
        Some(from) if from == target => Ok(None),
        Some(from) => Ok(Some((from, target))),
        None if target == Format::OpenAi => Ok(None),
        None => Err(ApiError::invalid_request(
            format!(
                "The {} endpoint has no counterpart in the Anthropic Messages API of the model chosen for this request.",
                endpoint.name()
            ),
            None,
            "unsupported_endpoint",
        )),
    }
}

/// Failover candidates that speak another API than the client's are tried translated: the
/// attempt filter translates the client's body for each (`attempt.rs`) and the request
/// filter the answer back, once it knows who served ([`MixedFailover::served_by`]). A
/// candidate whose API cannot express the request (a field without an equivalent) is left
/// out, as a candidate without a capability would be; none left: that 400. Returns the
/// candidates kept and, when some of them are translated, the way back.
pub(super) fn fit_failover<'d>(
    plan: &Plan,
    endpoint: Endpoint,
    value: &Value,
    candidates: Vec<&'d Candidate>,
) -> Result<(Vec<&'d Candidate>, Option<MixedFailover>), ApiError> {
    // Each other format is tried once, for the first candidate that needs it.
    let mut tried: Vec<(Format, Result<(), ApiError>)> = Vec::new();
    let mut kept = Vec::with_capacity(candidates.len());
    let mut mixed = None;
    let mut refused = None;
    for c in candidates {
        let Some(upstream) = plan.upstream(c.upstream) else {
            continue;
        };
        let fits = match needed(endpoint, upstream) {
            Ok(None) => Ok(()),
            Ok(Some((from, to))) => {
                mixed = Some(MixedFailover::new(from, value));
                match tried.iter().find(|(f, _)| *f == to) {
                    Some((_, r)) => r.clone(),
                    None => {
                        let max = upstream.default_max_tokens;
                        let r = body(value, from, to, &c.model, max).map(|_| ());
                        tried.push((to, r.clone()));
                        r
                    }
                }
            }
            Err(e) => Err(e),
        };
        match fits {
            Ok(()) => kept.push(c),
            Err(e) => refused = refused.or(Some(e)),
        }
    }
    match (kept.is_empty(), refused) {
        (true, Some(e)) => Err(e),
        _ => Ok((kept, mixed)),
    }
}

/// A failover list that mixes APIs: what the answer of a translated attempt needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MixedFailover {
    client: Format,
    include_usage: bool,
}

impl MixedFailover {
    fn new(client: Format, value: &Value) -> MixedFailover {
        MixedFailover {
            client,
            include_usage: asks_for_usage(value),
        }
    }

    /// The answer's way back when `key` served in another API than the client's.
    pub(super) fn served_by(&self, plan: &Plan, key: &str) -> Option<Translation> {
        let target = plan.targets.get(key)?;
        let upstream = plan.upstream(target.upstream)?.format?;
        (upstream != self.client)
            .then(|| Translation::with(upstream, self.client, self.include_usage))
    }
}

/// Whether an OpenAI client asked its stream for the usage chunk.
fn asks_for_usage(value: &Value) -> bool {
    value
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
}

/// The headers of a request translated for `upstream` (of format `to`): Anthropic's version
/// header unless the upstream sets its own; toward OpenAI, no Anthropic headers.
pub(super) fn header_edits(edits: &mut HeaderEdits, upstream: &Upstream, to: Format) {
    let sets = |name: &str| upstream.headers.iter().any(|(n, _)| n == name);
    match to {
        Format::Anthropic if !sets("anthropic-version") => {
            edits.set("anthropic-version", Some(ANTHROPIC_VERSION));
        }
        Format::Anthropic => {}
        Format::OpenAi => {
            for name in ["anthropic-version", "anthropic-beta"] {
                if !sets(name) {
                    edits.set(name, None);
                }
            }
        }
    }
}

/// The headers of a failover attempt in a list that mixes APIs, from a `client` of that
/// format; `to`: the target's format when the attempt is translated. The attempts share
/// one header map, so toward an OpenAI-format target an OpenAI client's request loses the
/// version header an earlier translated attempt set; an Anthropic client's own
/// `anthropic-*` headers stay for a later attempt in its own API (an OpenAI-format
/// provider ignores them).
pub(super) fn attempt_header_edits(
    edits: &mut HeaderEdits,
    upstream: &Upstream,
    client: Format,
    to: Option<Format>,
) {
    match client {
        Format::OpenAi => header_edits(edits, upstream, to.unwrap_or(Format::OpenAi)),
        Format::Anthropic => {}
    }
}

/// The `anthropic-version` of translated requests (the Messages API's current one).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The target's canonical path for a translated request.
pub(super) fn path(to: Format) -> &'static str {
    match to {
        Format::OpenAi => "/v1/chat/completions",
        Format::Anthropic => "/v1/messages",
    }
}

/// The request body in the target's API, for `model`.
pub(super) fn body(
    value: &Value,
    from: Format,
    to: Format,
    model: &str,
    max_tokens: u64,
) -> Result<Vec<u8>, ApiError> {
    let object = value.as_object().ok_or_else(|| {
        ApiError::invalid_request(
            "The request body must be a JSON object.",
            None,
            "invalid_body",
        )
    })?;
    let translated = match (from, to) {
        (Format::OpenAi, Format::Anthropic) => request::openai_to_anthropic(object, max_tokens),
        _ => request::anthropic_to_openai(object),
    };
    let mut out = translated.map_err(|e| {
        let target = match to {
            Format::OpenAi => "an OpenAI-format",
            Format::Anthropic => "an Anthropic-format",
        };
        ApiError::invalid_request(
            format!(
                "`{}` {} ({target} model serves this request).",
                e.field, e.message
            ),
            None,
            "untranslatable_field",
        )
    })?;
    out.insert("model".to_owned(), Value::String(model.to_owned()));
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| ApiError::internal(format!("could not write the translated body: {e}")))
}

/// The answer's way back into the client's API.
#[derive(Debug)]
pub(super) struct Translation {
    pub(super) upstream: Format,
    pub(super) client: Format,
    /// The client asked an OpenAI stream for its usage.
    include_usage: bool,
    stream: Option<StreamTranslator>,
    /// The answer is an event stream (else a whole body, translated once at its end).
    pub(super) streaming: bool,
}

#[derive(Debug)]
enum StreamTranslator {
    ToOpenAi(AnthropicToOpenAi),
    ToAnthropic(OpenAiToAnthropic),
}

impl Translation {
    pub(super) fn new(upstream: Format, client: Format, value: &Value) -> Translation {
        Translation::with(upstream, client, asks_for_usage(value))
    }

    fn with(upstream: Format, client: Format, include_usage: bool) -> Translation {
        Translation {
            upstream,
            client,
            include_usage,
            stream: None,
            streaming: false,
        }
    }

    /// A whole answer (`status` from the upstream) in the client's API; `now_s` dates an
    /// OpenAI completion. A body that is not JSON is kept.
    pub(super) fn whole(&self, status: u32, body: &[u8], now_s: u64) -> Vec<u8> {
        if !(200..300).contains(&status) {
            return translate::error_body(status, body, self.client)
                .to_string()
                .into_bytes();
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return body.to_vec();
        };
        let out = match self.client {
            Format::OpenAi => response::anthropic_to_openai(&v, now_s),
            Format::Anthropic => response::openai_to_anthropic(&v),
        };
        out.to_string().into_bytes()
    }

    /// A stream chunk in the client's API (`end`: the upstream's last).
    pub(super) fn chunk(&mut self, chunk: &[u8], end: bool, now_s: u64) -> Vec<u8> {
        let (client, include_usage) = (self.client, self.include_usage);
        let t = self.stream.get_or_insert_with(|| match client {
            Format::OpenAi => {
                StreamTranslator::ToOpenAi(AnthropicToOpenAi::new(now_s, include_usage))
            }
            Format::Anthropic => StreamTranslator::ToAnthropic(OpenAiToAnthropic::new()),
        });
        match t {
            StreamTranslator::ToOpenAi(t) => t.push(chunk),
            StreamTranslator::ToAnthropic(t) => t.push(chunk, end),
        }
    }
}

/// The answer's bytes Envoy holds (`body_size`), read once for the usage and the
/// translation; `None` (logged) when they cannot be read.
pub(super) fn read_answer(host: &dyn Host, body_size: usize) -> Option<Vec<u8>> {
    match host.response_body(body_size) {
        Ok(b) => Some(b.unwrap_or_default()),
        Err(e) => {
            log::warn!("llm-router: could not read the answer to translate: {e}");
            None
        }
    }
}

/// Replaces the whole held answer (`body`, as read) with its translation, and its length.
pub(super) fn whole_answer(
    host: &mut dyn Host,
    t: &Translation,
    status: u32,
    body: &[u8],
    now_s: u64,
) {
    let out = t.whole(status, body, now_s);
    if let Err(e) = host.replace_response_body(body.len(), &out) {
        log::warn!("llm-router: could not write the translated answer: {e}");
        return;
    }
    let _ = host.set_response_header("content-length", Some(&out.len().to_string()));
}

/// Replaces a stream chunk (`chunk`, as read) with its translation.
pub(super) fn stream_chunk(
    host: &mut dyn Host,
    t: &mut Translation,
    chunk: &[u8],
    end: bool,
    now_s: u64,
) {
    if !t.streaming {
        // A whole answer was translated when its JSON closed: what follows it is dropped.
        if !chunk.is_empty() {
            let _ = host.replace_response_body(chunk.len(), b"");
        }
        return;
    }
    let out = t.chunk(chunk, end, now_s);
    if let Err(e) = host.replace_response_body(chunk.len(), &out) {
        log::warn!("llm-router: could not write the translated stream: {e}");
    }
}
