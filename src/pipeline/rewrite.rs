//! Rewrite: the routed request as it is sent upstream.
//!
//! Takes the client's body and headers and where the request goes ([`Destination`]: the
//! chosen upstream, the canonical path, with failover the candidates in order); gives the
//! edits. The body changes only in the members that must ([`body`]: the chosen model, the
//! usage the router asks a stream for, the router's own members cut out), everything else
//! stays the client's bytes. Every header edit of the request ([`header_edits`]) is written
//! with one host call ([`send`]). [`rewrite_for_upstream`] and [`replace_body`] are shared
//! with the attempt filter, which rewrites each failover attempt for its candidate.

use serde_json::{Map, Value};

use crate::clients::CREDENTIAL_HEADERS;
use crate::config::plan::{FailoverPlan, Plan, Upstream};
use crate::endpoint::Endpoint;
use crate::errors::ApiError;
use crate::host::Host;
use crate::pipeline::attempt;
use crate::pipeline::identify::ClientHeaders;
use crate::rewrite::body::{edit_object, json_string};
use crate::rewrite::headers::HeaderEdits;
use crate::route::prefs::ROUTER_FIELDS;
use crate::route::Candidate;

/// Retry instructions a client could send to Envoy's router; for routed requests retries are
/// the router's decision (failover), never the client's.
const CLIENT_RETRY_HEADERS: [&str; 4] = [
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
];

/// Where the routed request goes.
pub(super) struct Destination<'a> {
    pub(super) upstream: &'a Upstream,
    /// The canonical path of the endpoint (with the query string).
    pub(super) path: Option<&'a str>,
    /// With failover: the failover cluster and the candidates, in order.
    pub(super) failover: Option<(&'a FailoverPlan, &'a [&'a Candidate])>,
    /// The prompt token estimate, for the attempt filter's admissions.
    pub(super) estimate: u64,
}

/// Whether the router asks the stream for its usage where the client did not (the
/// usage-only chunk is then removed from the response).
pub(super) fn strips_usage(
    plan: &Plan,
    endpoint: Endpoint,
    fields: &Map<String, Value>,
    stream: bool,
) -> bool {
    plan.usage.include_stream_usage
        && stream
        && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
        && !asks_for_usage(fields)
}

/// The body for the chosen `model`, or `None` when it stays as the client sent it.
/// `strip_usage`: the router asks the stream for its usage ([`strips_usage`]).
pub(super) fn body(
    body: &[u8],
    fields: &Map<String, Value>,
    model: &str,
    strip_usage: bool,
) -> Result<Option<Vec<u8>>, ApiError> {
    // Router-only members are cut out; everything else stays the client's bytes.
    let remove: Vec<&str> = ROUTER_FIELDS
        .iter()
        .copied()
        .filter(|k| fields.contains_key(*k))
        .collect();
    // Body: only the changed members are replaced; everything else is the client's bytes.
    let mut edits: Vec<(&str, String)> = Vec::new();
    if fields.get("model").and_then(Value::as_str) != Some(model) {
        edits.push(("model", json_string(model)));
    }
    if strip_usage {
        edits.push(("stream_options", stream_options_with_usage(fields)));
    }
    if edits.is_empty() && remove.is_empty() {
        return Ok(None);
    }
    let set: Vec<(&str, &str)> = edits.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let new_body = edit_object(body, &set, &remove)
        .map_err(|e| ApiError::internal(format!("could not rewrite the body: {}", e.0)))?;
    Ok(Some(new_body))
}

/// Every header edit of the request sent `to` its destination. `new_body`: the rewritten
/// body, if any (its length replaces the client's).
pub(super) fn header_edits(
    host: &dyn Host,
    plan: &Plan,
    client: &ClientHeaders,
    to: &Destination,
    new_body: Option<&[u8]>,
) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    for name in CLIENT_RETRY_HEADERS {
        edits.set(name, None);
    }
    // The provider is asked only for codings this Envoy decompresses before the router
    // reads the answer (decompressor filters append theirs), or for none: usage must be
    // readable whatever the client accepts. Envoy's compressor serves the client's.
    edits.set("accept-encoding", None);
    if let Some(h) = plan
        .clients
        .as_ref()
        .and_then(|c| c.identity_header.as_deref())
    {
        edits.set(h, None);
    }
    // The canonical path goes upstream, however the client spelled it.
    let path = to.path;
    if to.upstream.path_prefix == "/v1" && path != client.get(host, ":path").as_deref() {
        edits.set(":path", path);
    }
    rewrite_for_upstream(&mut edits, plan, to.upstream, path, None, false);
    if let Some((failover, keys)) = to.failover {
        // Envoy's router retries through the failover cluster. Attempt 1 is already
        // rewritten for the first candidate; the attempt filter sends it to that
        // candidate's cluster and rewrites later attempts, from the client's path and
        // host kept here, for the next candidates.
        edits.set(&plan.cluster_header, Some(&failover.cluster));
        let authority = client.get(host, ":authority");
        edits.set(attempt::HEADER_PATH, path);
        edits.set(attempt::HEADER_AUTHORITY, authority.as_deref());
        let key_list: Vec<&str> = keys.iter().map(|c| c.key.as_str()).collect();
        let list = attempt::encode_failover(to.estimate, &key_list);
        edits.set(attempt::HEADER_FAILOVER, Some(&list));
        let retries = (keys.len() - 1).to_string();
        edits.set("x-envoy-max-retries", Some(&retries));
    }
    if let Some(new_body) = new_body {
        if client.has("content-length") {
            edits.set("content-length", Some(&new_body.len().to_string()));
        }
    }
    edits
}

/// Writes the request's header `edits` (one host call) and its new body, if any, in place
/// of the `body_size` bytes buffered.
pub(super) fn send(
    host: &mut dyn Host,
    client: &mut ClientHeaders,
    edits: &HeaderEdits,
    body_size: usize,
    new_body: Option<&[u8]>,
) -> Result<(), ApiError> {
    client.apply(host, edits)?;
    if let Some(new_body) = new_body {
        replace_body(host, body_size, new_body)?;
    }
    Ok(())
}

/// Points the request at `upstream`: its cluster, its credential instead of the client's
/// (and of any upstream tried before), its extra headers, host and path prefix (as edits).
/// `path` is the client's path. `again`: an earlier failover attempt may have rewritten the
/// request for another upstream, so the path is always rebuilt, other upstreams' extra
/// headers are removed and `authority` (the client's) restored for an upstream that names
/// no host.
pub(crate) fn rewrite_for_upstream(
    edits: &mut HeaderEdits,
    plan: &Plan,
    upstream: &Upstream,
    path: Option<&str>,
    authority: Option<&str>,
    again: bool,
) {
    edits.set(&plan.cluster_header, Some(&upstream.cluster));
    for name in CREDENTIAL_HEADERS {
        edits.set(name, None);
    }
    if let Some(auth) = &upstream.auth {
        edits.set(auth.header, Some(&auth.value));
    }
    if again {
        for name in &plan.upstream_header_names {
            edits.set(name, None);
        }
    }
    for (name, value) in &upstream.headers {
        edits.set(name, Some(value));
    }
    match (&upstream.authority, authority) {
        (Some(a), _) => edits.set(":authority", Some(a)),
        (None, Some(a)) => edits.set(":authority", Some(a)),
        (None, None) => {}
    }
    if let Some(path) = path {
        if upstream.path_prefix != "/v1" || again {
            let rest = path.strip_prefix("/v1").unwrap_or(path);
            let new_path = format!("{}{rest}", upstream.path_prefix);
            edits.set(":path", Some(&new_path));
        }
    }
}

/// Replaces the buffered request body (its `content-length` is a header edit of the caller).
pub(crate) fn replace_body(
    host: &mut dyn Host,
    current_len: usize,
    new_body: &[u8],
) -> Result<(), ApiError> {
    host.replace_request_body(current_len, new_body)
        .map_err(|e| ApiError::internal(format!("could not replace the body: {e}")))
}

/// Whether the client asked a stream for its usage (`stream_options.include_usage`).
fn asks_for_usage(fields: &Map<String, Value>) -> bool {
    fields
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The client's `stream_options` (if an object) with `include_usage: true`, as JSON.
fn stream_options_with_usage(fields: &Map<String, Value>) -> String {
    let mut options = match fields.get("stream_options") {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    options.insert("include_usage".to_owned(), Value::Bool(true));
    Value::Object(options).to_string()
}
