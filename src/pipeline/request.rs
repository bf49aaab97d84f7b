//! One HTTP request through the router: pause the headers, buffer the JSON body, classify,
//! route, rewrite headers and body, let it go; then stamp the diagnostic response headers.

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::classify::Classification;
use crate::config::plan::{is_header_value_safe, Plan};
use crate::endpoint::Endpoint;
use crate::errors::ApiError;
use crate::host::{shared_increment, Host};
use crate::rewrite::body::{edit_object, json_string};
use crate::route::prefs::ROUTER_FIELDS;
use crate::route::{route, Chooser, ClientPrefs, RouteError, RouteRequest};

/// What the host should do next with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Client credentials that must never reach a provider.
const CLIENT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

pub const HEADER_UPSTREAM: &str = "x-llm-router-upstream";
pub const HEADER_MODEL: &str = "x-llm-router-model";
pub const HEADER_TASK: &str = "x-llm-router-task";
pub const HEADER_COMPLEXITY: &str = "x-llm-router-complexity";
pub const HEADER_RULE: &str = "x-llm-router-rule";
pub const HEADER_TAGS: &str = "x-llm-router-tags";

/// Longest client-given model name echoed in `x-llm-router-model`.
pub const MAX_ECHOED_MODEL_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// Not ours (other path or method): untouched.
    Passthrough,
    /// Waiting for the whole body.
    Buffering(Endpoint),
    /// Rewritten and sent on.
    Routed,
    /// We answered the client ourselves.
    Replied,
}

/// What the response headers report about the routing decision.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    upstream: String,
    model: Option<String>,
    task: &'static str,
    complexity: &'static str,
    rule: String,
    tags: String,
}

pub struct RequestFlow {
    plan: Rc<Plan>,
    state: State,
    report: Option<Report>,
    /// Seed for `weighted` choices; mixed with the clock per request.
    seed: u64,
}

impl RequestFlow {
    pub fn new(plan: Rc<Plan>, seed: u64) -> RequestFlow {
        RequestFlow {
            plan,
            state: State::Start,
            report: None,
            seed,
        }
    }

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        // A client must never pick the Envoy cluster itself.
        let _ = host.set_request_header(&self.plan.cluster_header, None);
        let method = host.request_header(":method").ok().flatten();
        let path = host.request_header(":path").ok().flatten();
        let endpoint = match (method.as_deref(), path.as_deref()) {
            (Some("POST"), Some(path)) => Endpoint::from_path(path),
            _ => None,
        };
        let Some(endpoint) = endpoint else {
            self.state = State::Passthrough;
            return Flow::Continue;
        };
        if end_of_stream {
            return self.reply(host, &missing_body());
        }
        if let Ok(Some(encoding)) = host.request_header("content-encoding") {
            if !encoding.trim().eq_ignore_ascii_case("identity") {
                return self.reply(
                    host,
                    &ApiError {
                        status: 415,
                        message: "Compressed request bodies are not supported; send plain JSON."
                            .to_owned(),
                        kind: "invalid_request_error",
                        param: None,
                        code: "unsupported_content_encoding",
                    },
                );
            }
        }
        let declared = host
            .request_header("content-length")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.plan.max_body_bytes) {
            return self.reply(host, &ApiError::body_too_large(self.plan.max_body_bytes));
        }
        self.state = State::Buffering(endpoint);
        Flow::Pause
    }

    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let State::Buffering(endpoint) = self.state else {
            return if self.state == State::Replied {
                Flow::Pause
            } else {
                Flow::Continue
            };
        };
        if body_size > self.plan.max_body_bytes {
            return self.reply(host, &ApiError::body_too_large(self.plan.max_body_bytes));
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        match self.route_request(host, endpoint, body_size) {
            Ok(report) => {
                self.report = Some(report);
                self.state = State::Routed;
                Flow::Continue
            }
            Err(e) => self.reply(host, &e),
        }
    }

    pub fn on_response_headers(&mut self, host: &mut dyn Host) -> Flow {
        if self.state != State::Routed || !self.plan.response_headers {
            return Flow::Continue;
        }
        if let Some(r) = &self.report {
            let _ = host.set_response_header(HEADER_UPSTREAM, Some(&r.upstream));
            // `None` also removes a value the upstream sent: diagnostics are the router's own.
            let _ = host.set_response_header(HEADER_MODEL, r.model.as_deref());
            let _ = host.set_response_header(HEADER_TASK, Some(r.task));
            let _ = host.set_response_header(HEADER_COMPLEXITY, Some(r.complexity));
            let _ = host.set_response_header(HEADER_RULE, Some(&r.rule));
            let tags = Some(r.tags.as_str()).filter(|t| !t.is_empty());
            let _ = host.set_response_header(HEADER_TAGS, tags);
        }
        Flow::Continue
    }

    fn reply(&mut self, host: &mut dyn Host, error: &ApiError) -> Flow {
        self.state = State::Replied;
        let body = error.body();
        if let Err(e) =
            host.send_local_reply(error.status, &[("content-type", "application/json")], &body)
        {
            log::error!("could not send the {} reply: {e}", error.status);
        }
        Flow::Pause
    }

    fn route_request(
        &mut self,
        host: &mut dyn Host,
        endpoint: Endpoint,
        body_size: usize,
    ) -> Result<Report, ApiError> {
        let plan = Rc::clone(&self.plan);
        let body = host
            .request_body(body_size)
            .map_err(|e| ApiError::internal(format!("could not read the request body: {e}")))?
            .unwrap_or_default();
        if body.is_empty() {
            // E.g. HTTP/2 headers without END_STREAM followed by an empty final DATA frame.
            return Err(missing_body());
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid_request(
                format!("Request body is not valid JSON: {e}."),
                None,
                "invalid_json",
            )
        })?;
        let Value::Object(fields) = &value else {
            return Err(ApiError::invalid_request(
                "Request body must be a JSON object.",
                None,
                "invalid_body",
            ));
        };
        let requested = requested_model(fields)?;
        let prefs = ClientPrefs::from_body(fields)?;
        let classification = plan.classifier.classify(&value, endpoint);
        let max_output_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| fields.get(*k).and_then(Value::as_u64));

        // Rules may look at request headers; read the ones they name, once.
        let mut header_values: Vec<(String, Option<String>)> = Vec::new();
        for rule in &plan.rules {
            for h in &rule.matcher.headers {
                if !header_values.iter().any(|(n, _)| *n == h.name) {
                    let v = host.request_header(&h.name).ok().flatten();
                    header_values.push((h.name.clone(), v));
                }
            }
        }
        let header = |name: &str| {
            header_values
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.clone())
        };
        let request = RouteRequest {
            endpoint,
            model: requested,
            classification: &classification,
            header: &header,
            prefs: &prefs,
            max_output_tokens,
        };
        let mut chooser = HostChooser {
            host: &mut *host,
            rng: self.seed,
        };
        let decision = route(&plan, &request, &mut chooser).map_err(|e| match e {
            RouteError::UnknownModel(m) => ApiError::model_not_found(&m),
            RouteError::NoCandidate(reason) => ApiError::no_candidate(reason),
        })?;
        let chosen = decision
            .chosen()
            .ok_or_else(|| ApiError::no_candidate("No target is available for this request."))?;
        let upstream = plan
            .upstream(chosen.upstream)
            .ok_or_else(|| ApiError::internal("routing chose an unknown upstream"))?;

        // Body: only the changed members are replaced; everything else is the client's bytes.
        let remove: Vec<&str> = ROUTER_FIELDS
            .iter()
            .copied()
            .filter(|k| fields.contains_key(*k))
            .collect();
        let model_unchanged = fields.get("model").and_then(Value::as_str) == Some(&chosen.model);
        let new_body =
            if model_unchanged && remove.is_empty() {
                None
            } else {
                let model_json = json_string(&chosen.model);
                let set: &[(&str, &str)] = if model_unchanged {
                    &[]
                } else {
                    &[("model", &model_json)]
                };
                Some(edit_object(&body, set, &remove).map_err(|e| {
                    ApiError::internal(format!("could not rewrite the body: {}", e.0))
                })?)
            };

        // Headers: route to the chosen cluster, swap the client's credential for the provider's.
        let set = |host: &mut dyn Host, name: &str, value: Option<&str>| {
            host.set_request_header(name, value)
                .map_err(|e| ApiError::internal(format!("could not set header {name}: {e}")))
        };
        set(host, &plan.cluster_header, Some(&upstream.cluster))?;
        for name in CLIENT_CREDENTIAL_HEADERS {
            set(host, name, None)?;
        }
        if let Some(auth) = &upstream.auth {
            set(host, auth.header, Some(&auth.value))?;
        }
        for (name, value) in &upstream.headers {
            set(host, name, Some(value))?;
        }
        if let Some(authority) = &upstream.authority {
            set(host, ":authority", Some(authority))?;
        }
        if upstream.path_prefix != "/v1" {
            if let Ok(Some(path)) = host.request_header(":path") {
                let rest = path.strip_prefix("/v1").unwrap_or(&path);
                let new_path = format!("{}{rest}", upstream.path_prefix);
                set(host, ":path", Some(&new_path))?;
            }
        }
        if let Some(new_body) = &new_body {
            if host
                .request_header("content-length")
                .ok()
                .flatten()
                .is_some()
            {
                set(host, "content-length", Some(&new_body.len().to_string()))?;
            }
            host.replace_request_body(body_size, new_body)
                .map_err(|e| ApiError::internal(format!("could not replace the body: {e}")))?;
        }

        Ok(report(
            &decision.source,
            &upstream.name,
            &chosen.model,
            &classification,
        ))
    }
}

fn missing_body() -> ApiError {
    ApiError::invalid_request(
        "Request body is required: send a JSON object.",
        None,
        "missing_body",
    )
}

fn report(source: &str, upstream: &str, model: &str, c: &Classification) -> Report {
    Report {
        upstream: upstream.to_owned(),
        // A passthrough model comes from the client: it only reaches a header if it is safe
        // and short (an oversized header block would break the client's HTTP/2 stream).
        model: (model.len() <= MAX_ECHOED_MODEL_BYTES && is_header_value_safe(model))
            .then(|| model.to_owned()),
        task: task_name(c),
        complexity: complexity_name(c),
        rule: source.to_owned(),
        tags: c.tags.join(","),
    }
}

fn task_name(c: &Classification) -> &'static str {
    use crate::classify::Task::*;
    match c.task {
        Coding => "coding",
        Reasoning => "reasoning",
        Math => "math",
        Vision => "vision",
        Summarization => "summarization",
        Extraction => "extraction",
        Embedding => "embedding",
        General => "general",
    }
}

fn complexity_name(c: &Classification) -> &'static str {
    use crate::classify::Complexity::*;
    match c.complexity {
        Low => "low",
        Medium => "medium",
        High => "high",
        Xhigh => "xhigh",
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

/// Randomness from a per-request seed; round-robin turns from shared data so that all
/// workers take turns together (a local counter if shared data fails).
struct HostChooser<'h> {
    host: &'h mut dyn Host,
    rng: u64,
}

impl Chooser for HostChooser<'_> {
    fn random(&mut self) -> u64 {
        // splitmix64: good spread from any seed, including small ones.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_turn(&mut self, key: &str) -> u64 {
        let shared_key = format!("llm_router.rr.{key}");
        match shared_increment(self.host, &shared_key) {
            Some(turn) => turn,
            None => self.random(),
        }
    }
}
