//! Native tests of the pipeline module: one request through `RequestFlow` against `MockHost`
//! (passthrough, pausing and buffering, every local reply, the rewrite of headers and body,
//! the diagnostic response headers), and the shared-data counter behind round robin.

use std::rc::Rc;

use serde_json::{json, Value};

use super::answer::{
    HEADER_ATTEMPTS, HEADER_COMPLEXITY, HEADER_MODEL, HEADER_RULE, HEADER_TAGS, HEADER_TASK,
    HEADER_UPSTREAM,
};
use super::{Flow, RequestFlow, StreamFlow};
use crate::config::plan::{compile, Plan};
use crate::host::mock::MockHost;
use crate::host::{shared_increment, Host, HostError, HostResult, CAS_RETRIES};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const CHAT: &str = "/v1/chat/completions";

/// The plugin configuration of `envoy/envoy.yaml`.
const BUNDLED: &str = crate::config::tests::BUNDLED;

fn plan_json(v: &Value) -> Plan {
    plan_str(&v.to_string())
}

fn plan_str(json: &str) -> Plan {
    let env = |name: &str| match name {
        "MISSING_KEY" => None,
        other => Some(format!("key-{other}")),
    };
    match compile(json.as_bytes(), &env) {
        Ok(plan) => plan,
        Err(e) => panic!("test configuration does not compile: {e}"),
    }
}

/// Upstreams for every kind of rewrite, aliases over them, and a default.
fn test_config() -> Value {
    json!({
        "upstreams": {
            "openai": {"cluster": "openai-cluster", "host": "api.openai.com",
                       "auth": {"type": "bearer", "key_env": "OPENAI_API_KEY"}},
            "anthropic": {"host": "api.anthropic.com",
                          "auth": {"type": "x-api-key", "key_env": "ANTHROPIC_API_KEY"},
                          "headers": {"anthropic-version": "2023-06-01"}},
            "azure": {"host": "my.openai.azure.com", "path_prefix": "/openai/deployments/gpt4o",
                      "auth": {"type": "api-key", "key_env": "AZURE_KEY"},
                      "headers": {"X-Extra": "1"}},
            "local": {"cluster": "vllm"},
            "nokey": {"auth": {"type": "bearer", "key_env": "MISSING_KEY"}}
        },
        "models": {
            "gpt-4o": {"targets": [{"upstream": "openai", "model": "gpt-4o"}]},
            "smart": {"targets": [{"upstream": "azure", "model": "gpt-4o-2024"}]},
            "claude": {"targets": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"}]},
            "local": {"targets": [{"upstream": "local", "model": "qwen2.5-7b"}]},
            "broken": {"targets": [{"upstream": "nokey", "model": "x"}]},
            "budget": {"strategy": "cheapest", "targets": [
                {"upstream": "openai", "model": "in-cheap", "price": {"input": 1, "output": 10}},
                {"upstream": "local", "model": "out-cheap", "price": {"input": 10, "output": 1}}]},
            "spread": {"strategy": "round_robin", "targets": [
                {"upstream": "openai", "model": "rr-1"},
                {"upstream": "local", "model": "rr-2"}]},
            "coin": {"strategy": "weighted", "targets": [
                {"upstream": "openai", "model": "w-1"},
                {"upstream": "local", "model": "w-2"}]}
        },
        "classifier": {"tags": [{"name": "legal", "keywords": ["contract"]}]},
        "rules": [
            {"name": "team-x", "match": {"headers": [{"name": "x-team", "exact": "research"}]},
             "use_model": "claude"}
        ],
        "default": {"use_model": "gpt-4o"}
    })
}

fn test_plan() -> Plan {
    plan_json(&test_config())
}

fn flow_for(plan: Plan) -> RequestFlow {
    RequestFlow::new(Rc::new(plan), 7)
}

/// A routed POST with `content-length`, a client credential and a client-sent cluster header.
fn post(path: &str, body: &str) -> MockHost {
    let len = body.len().to_string();
    MockHost::with_request(
        &[
            (":method", "POST"),
            (":path", path),
            (":authority", "router.local"),
            ("content-type", "application/json"),
            ("content-length", &len),
            ("authorization", "Bearer client-secret"),
            ("x-api-key", "client-secret-2"),
            ("api-key", "client-secret-3"),
            ("x-llm-router-cluster", "attacker-choice"),
        ],
        body.as_bytes(),
    )
}

fn chat(body: &str) -> MockHost {
    post(CHAT, body)
}

/// Headers (not end of stream), then the whole body at once; returns both flows.
fn run(flow: &mut RequestFlow, host: &mut MockHost) -> (Flow, Flow) {
    let headers = flow.on_request_headers(host, false);
    if headers == Flow::Continue || host.local_reply.is_some() {
        // Passed through, or answered already: the body would not be looked at.
        return (headers, headers);
    }
    let len = host.request_body.len();
    let body = flow.on_request_body(host, len, true);
    (headers, body)
}

/// Routes `host` through a fresh flow of `plan` and expects it routed.
fn routed(plan: Plan, mut host: MockHost) -> (RequestFlow, MockHost) {
    let mut flow = flow_for(plan);
    let flows = run(&mut flow, &mut host);
    assert_eq!(
        flows,
        (Flow::Pause, Flow::Continue),
        "expected the request to be routed; local reply: {:?}",
        host.local_reply
            .as_ref()
            .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
    );
    assert!(host.local_reply.is_none());
    (flow, host)
}

/// The local reply's status and JSON body; checks the OpenAI error shape.
fn reply(host: &MockHost) -> (u32, Value) {
    let r = host.local_reply.as_ref().expect("a local reply was sent");
    assert_eq!(
        r.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );
    let v: Value = serde_json::from_slice(&r.body).expect("the reply body is JSON");
    let err = v
        .get("error")
        .and_then(Value::as_object)
        .expect("an `error` object");
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert!(err["message"].is_string() && err["type"].is_string() && err["code"].is_string());
    assert!(err["param"].is_null() || err["param"].is_string());
    (r.status, v)
}

/// Runs `host` through a fresh flow of `plan` and expects a local reply.
fn refused(plan: Plan, mut host: MockHost) -> (u32, Value, RequestFlow, MockHost) {
    let mut flow = flow_for(plan);
    let (_, last) = run(&mut flow, &mut host);
    assert_eq!(last, Flow::Pause, "a local reply stops the stream");
    let (status, v) = reply(&host);
    (status, v, flow, host)
}

fn body_str(host: &MockHost) -> &str {
    std::str::from_utf8(&host.request_body).expect("UTF-8 body")
}

fn no_router_headers(host: &MockHost) -> bool {
    !host
        .response_headers
        .iter()
        .any(|(k, _)| k.starts_with("x-llm-router-"))
}

// ---------------------------------------------------------------------------------------
// What the filter leaves alone
// ---------------------------------------------------------------------------------------

#[test]
fn non_post_passes_through() {
    for method in ["GET", "PUT", "OPTIONS", "post"] {
        let body = r#"{"model":"auto"}"#;
        let mut host = chat(body);
        host.request_headers.retain(|(k, _)| k != ":method");
        host.request_headers
            .push((":method".to_owned(), method.to_owned()));
        let mut flow = flow_for(test_plan());
        assert_eq!(
            flow.on_request_headers(&mut host, false),
            Flow::Continue,
            "{method}"
        );
        assert_eq!(
            flow.on_request_body(&mut host, body.len(), true),
            Flow::Continue
        );
        assert_eq!(body_str(&host), body, "body untouched");
        assert_eq!(host.header("authorization"), Some("Bearer client-secret"));
        assert_eq!(host.header(":path"), Some(CHAT));
        assert!(host.local_reply.is_none());
        assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
        assert!(no_router_headers(&host));
    }
}

#[test]
fn other_paths_pass_through() {
    for path in [
        "/v1/models",
        "/v2/chat/completions",
        "/",
        "/v1/chat/completionsx",
        "/health",
    ] {
        let body = r#"{"model":"auto"}"#;
        let mut host = post(path, body);
        let mut flow = flow_for(test_plan());
        assert_eq!(
            flow.on_request_headers(&mut host, false),
            Flow::Continue,
            "{path}"
        );
        assert_eq!(
            flow.on_request_body(&mut host, body.len(), true),
            Flow::Continue
        );
        assert_eq!(body_str(&host), body);
        assert_eq!(host.header(":path"), Some(path));
        assert_eq!(host.header("x-api-key"), Some("client-secret-2"));
        assert!(host.local_reply.is_none());
    }
    // Even an empty body on another path is none of our business.
    let mut host = post("/v1/models", "");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, true), Flow::Continue);
    assert!(host.local_reply.is_none());
}

#[test]
fn missing_pseudo_headers_pass_through() {
    let mut host = MockHost::with_request(&[(":method", "POST")], b"{}");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Continue);
    let mut host = MockHost::with_request(&[(":path", CHAT)], b"{}");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Continue);
}

#[test]
fn client_cluster_header_is_removed_even_on_passthrough() {
    let mut host = post("/v1/files", "");
    host.request_headers.retain(|(k, _)| k != ":method");
    host.request_headers
        .push((":method".to_owned(), "GET".to_owned()));
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, true), Flow::Continue);
    assert_eq!(host.header("x-llm-router-cluster"), None);

    // ... also under a configured name, case-insensitively.
    let mut config = test_config();
    config["cluster_header"] = json!("X-Route-Cluster");
    let mut host = MockHost::with_request(
        &[
            (":method", "GET"),
            (":path", "/v1/files"),
            ("X-Route-Cluster", "attacker"),
            ("x-llm-router-cluster", "not-ours"),
        ],
        b"",
    );
    let mut flow = flow_for(plan_json(&config));
    assert_eq!(flow.on_request_headers(&mut host, true), Flow::Continue);
    assert_eq!(host.header("x-route-cluster"), None);
    assert_eq!(host.header("x-llm-router-cluster"), Some("not-ours"));
}

#[test]
fn client_cluster_header_is_removed_before_a_local_reply() {
    let (_, _, _, host) = refused(test_plan(), chat("not json"));
    assert_eq!(host.header("x-llm-router-cluster"), None);
}

// ---------------------------------------------------------------------------------------
// Pausing and buffering
// ---------------------------------------------------------------------------------------

#[test]
fn headers_pause_then_body_is_buffered_until_the_end() {
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let mut host = chat(body);
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    // Nothing is decided while the body is still arriving.
    assert_eq!(flow.on_request_body(&mut host, 10, false), Flow::Pause);
    assert_eq!(flow.on_request_body(&mut host, 30, false), Flow::Pause);
    assert_eq!(host.header("x-llm-router-cluster"), None);
    assert_eq!(body_str(&host), body);
    assert_eq!(
        flow.on_request_body(&mut host, body.len(), true),
        Flow::Continue
    );
    assert_eq!(host.header("x-llm-router-cluster"), Some("openai-cluster"));
    // Later body callbacks (trailers, retries of the callback) change nothing.
    let after = host.request_body.clone();
    assert_eq!(
        flow.on_request_body(&mut host, after.len(), true),
        Flow::Continue
    );
    assert_eq!(host.request_body, after);
}

#[test]
fn body_callback_without_headers_passes() {
    let mut host = chat("{}");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_body(&mut host, 2, true), Flow::Continue);
    assert!(host.local_reply.is_none());
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert!(no_router_headers(&host));
}

// ---------------------------------------------------------------------------------------
// Local replies
// ---------------------------------------------------------------------------------------

#[test]
fn headers_only_request_gets_400_missing_body() {
    let mut host = chat("");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, true), Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "missing_body");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], Value::Null);
    // Once answered, the stream stays stopped and the response is not stamped.
    assert_eq!(flow.on_request_body(&mut host, 0, true), Flow::Pause);
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert!(no_router_headers(&host));
    // Client credentials are irrelevant here but must not have been replaced by ours.
    assert_eq!(host.header("authorization"), Some("Bearer client-secret"));
}

#[test]
fn empty_body_gets_400_missing_body() {
    let mut host = chat("");
    host.request_headers.retain(|(k, _)| k != "content-length");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(flow.on_request_body(&mut host, 0, true), Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "missing_body");
}

#[test]
fn compressed_body_gets_415() {
    for encoding in ["gzip", "br", "deflate", "gzip, identity"] {
        let mut host = chat(r#"{"model":"auto"}"#);
        host.request_headers
            .push(("content-encoding".to_owned(), encoding.to_owned()));
        let mut flow = flow_for(test_plan());
        assert_eq!(
            flow.on_request_headers(&mut host, false),
            Flow::Pause,
            "{encoding}"
        );
        let (status, v) = reply(&host);
        assert_eq!(status, 415, "{encoding}");
        assert_eq!(v["error"]["code"], "unsupported_content_encoding");
        assert_eq!(flow.on_request_body(&mut host, 16, true), Flow::Pause);
    }
    for encoding in ["identity", "Identity"] {
        let mut host = chat(r#"{"model":"auto"}"#);
        host.request_headers
            .push(("content-encoding".to_owned(), encoding.to_owned()));
        routed(test_plan(), host);
    }
}

fn small_limit_plan() -> Plan {
    let mut config = test_config();
    config["max_body_bytes"] = json!(1024);
    plan_json(&config)
}

#[test]
fn declared_content_length_over_the_limit_gets_413_at_headers() {
    let mut host = chat("{}");
    host.request_headers.retain(|(k, _)| k != "content-length");
    host.request_headers
        .push(("content-length".to_owned(), "1025".to_owned()));
    let mut flow = flow_for(small_limit_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1024")),
        "{v}"
    );
    assert_eq!(flow.on_request_body(&mut host, 100, false), Flow::Pause);
}

#[test]
fn content_length_at_the_limit_is_accepted() {
    let prefix = r#"{"model":"auto","pad":""#;
    let pad = "x".repeat(1024 - prefix.len() - 2);
    let body = format!("{prefix}{pad}\"}}");
    assert_eq!(body.len(), 1024);
    let (_, host) = routed(small_limit_plan(), chat(&body));
    assert_eq!(host.header("x-llm-router-cluster"), Some("openai-cluster"));
}

#[test]
fn unparsable_content_length_is_left_to_the_body_check() {
    let mut host = chat(r#"{"model":"auto"}"#);
    host.request_headers.retain(|(k, _)| k != "content-length");
    host.request_headers
        .push(("content-length".to_owned(), "lots".to_owned()));
    let mut flow = flow_for(small_limit_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert!(host.local_reply.is_none());
}

#[test]
fn chunked_body_growing_over_the_limit_gets_413() {
    let mut host = chat("");
    host.request_headers.retain(|(k, _)| k != "content-length");
    host.request_headers
        .push(("transfer-encoding".to_owned(), "chunked".to_owned()));
    host.request_body = vec![b' '; 1500];
    let mut flow = flow_for(small_limit_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(flow.on_request_body(&mut host, 600, false), Flow::Pause);
    assert!(host.local_reply.is_none());
    assert_eq!(flow.on_request_body(&mut host, 1024, false), Flow::Pause);
    assert!(host.local_reply.is_none(), "exactly the limit is fine");
    assert_eq!(flow.on_request_body(&mut host, 1025, false), Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    // The stream stays stopped afterwards.
    assert_eq!(flow.on_request_body(&mut host, 1500, true), Flow::Pause);
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert!(no_router_headers(&host));
}

#[test]
fn body_over_the_limit_at_end_of_stream_gets_413() {
    let mut host = chat("");
    host.request_headers.retain(|(k, _)| k != "content-length");
    host.request_body = vec![b' '; 2000];
    let mut flow = flow_for(small_limit_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(flow.on_request_body(&mut host, 2000, true), Flow::Pause);
    assert_eq!(reply(&host).0, 413);
}

#[test]
fn invalid_json_gets_400() {
    for body in [
        "not json",
        "{\"model\":",
        "{\"model\":\"auto\"} extra",
        "\u{feff}{}",
    ] {
        let (status, v, _, _) = refused(test_plan(), chat(body));
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(v["error"]["code"], "invalid_json", "{body:?}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], Value::Null);
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Request body is not valid JSON")),
            "{v}"
        );
    }
}

#[test]
fn non_object_json_gets_400_invalid_body() {
    for body in ["[]", "\"auto\"", "42", "null", "[{\"model\":\"auto\"}]"] {
        let (status, v, _, _) = refused(test_plan(), chat(body));
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["error"]["code"], "invalid_body", "{body}");
    }
}

#[test]
fn bad_model_field_gets_400_naming_it() {
    for (body, code) in [
        (r#"{"model": 4}"#, "invalid_type"),
        (r#"{"model": ["gpt-4o"]}"#, "invalid_type"),
        (r#"{"model": {"id": "x"}}"#, "invalid_type"),
        (r#"{"model": ""}"#, "invalid_value"),
    ] {
        let (status, v, _, _) = refused(test_plan(), chat(body));
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["error"]["code"], code, "{body}");
        assert_eq!(v["error"]["param"], "model", "{body}");
    }
}

#[test]
fn bad_preferences_get_400_naming_them() {
    for (body, param) in [
        (
            r#"{"model":"auto","allowed_models":"gpt-*"}"#,
            "allowed_models",
        ),
        (r#"{"model":"auto","provider":"openai"}"#, "provider"),
        (
            r#"{"model":"auto","provider":{"sort":"fastest"}}"#,
            "provider.sort",
        ),
        (
            r#"{"model":"auto","provider":{"allow_fallbacks":1}}"#,
            "provider.allow_fallbacks",
        ),
    ] {
        let (status, v, _, _) = refused(test_plan(), chat(body));
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["error"]["param"], param, "{body}");
    }
}

#[test]
fn unknown_model_gets_404() {
    let (status, v, mut flow, mut host) =
        refused(test_plan(), chat(r#"{"model":"gpt-5","messages":[]}"#));
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'gpt-5'")),
        "{v}"
    );
    // Not routed: no cluster, the client's request untouched otherwise.
    assert_eq!(host.header("x-llm-router-cluster"), None);
    assert_eq!(body_str(&host), r#"{"model":"gpt-5","messages":[]}"#);
    // The local reply's response headers are not stamped.
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert!(no_router_headers(&host));
}

#[test]
fn unknown_model_passthrough_forwards_it_unchanged() {
    let mut config = test_config();
    config["unknown_model"] = json!("passthrough");
    config["passthrough_upstream"] = json!("local");
    let body = r#"{"model":"my-fine-tune","messages":[]}"#;
    let (mut flow, mut host) = routed(plan_json(&config), chat(body));
    assert_eq!(host.header("x-llm-router-cluster"), Some("vllm"));
    assert_eq!(body_str(&host), body, "model unchanged: body not rewritten");
    assert_eq!(
        host.header("content-length"),
        Some(&*body.len().to_string())
    );
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_RULE), Some("passthrough"));
    assert_eq!(host.response_header(HEADER_MODEL), Some("my-fine-tune"));
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("local"));
}

#[test]
fn passthrough_model_unsafe_for_a_header_is_not_echoed() {
    let mut config = test_config();
    config["unknown_model"] = json!("passthrough");
    config["passthrough_upstream"] = json!("local");
    let body = r#"{"model":"evil\r\nx-injected: 1","messages":[]}"#;
    let (mut flow, mut host) = routed(plan_json(&config), chat(body));
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_MODEL), None);
    assert_eq!(host.response_header("x-injected"), None);
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("local"));
    assert_eq!(host.response_header(HEADER_RULE), Some("passthrough"));
}

#[test]
fn no_available_target_gets_503_naming_the_variable() {
    let (status, v, _, host) = refused(test_plan(), chat(r#"{"model":"broken"}"#));
    assert_eq!(status, 503);
    assert_eq!(v["error"]["code"], "no_available_target");
    assert_eq!(v["error"]["type"], "service_unavailable_error");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("MISSING_KEY"), "{message}");
    assert!(message.contains("(model:broken)"), "{message}");
    assert_eq!(host.header("x-llm-router-cluster"), None);
}

#[test]
fn no_default_gets_503() {
    let mut config = test_config();
    config.as_object_mut().map(|o| o.remove("default"));
    let (status, v, _, _) = refused(plan_json(&config), chat(r#"{"model":"auto"}"#));
    assert_eq!(status, 503);
    assert_eq!(v["error"]["code"], "no_available_target");
}

#[test]
fn preferences_excluding_everything_get_503() {
    let body = r#"{"model":"auto","allowed_models":["claude-*"]}"#;
    let (status, v, _, _) = refused(test_plan(), chat(body));
    assert_eq!(status, 503);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("allowed_models")),
        "{v}"
    );
}

#[test]
fn header_edit_failure_gets_500() {
    let mut host = chat(r#"{"model":"auto"}"#);
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    host.headers_sent = true;
    assert_eq!(flow.on_request_body(&mut host, 16, true), Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(status, 500);
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], "internal_error");
}

// ---------------------------------------------------------------------------------------
// Routed requests: the rewrite
// ---------------------------------------------------------------------------------------

#[test]
fn success_rewrites_headers_and_body() {
    let body = "{ \"model\" : \"smart\" ,\n  \"messages\": [{\"role\":\"user\",\"content\":\"Say \\u0068ello\"}],\n  \"allowed_models\": [\"gpt-*\"], \"temperature\": 0.70, \"provider\": {\"sort\": \"price\"} }";
    let mut host = post("/v1/chat/completions?api-version=2024-06-01", body);
    host.request_headers
        .push(("x-custom".to_owned(), "kept".to_owned()));
    let (_, host) = routed(test_plan(), host);

    // Routing header: the upstream's cluster (the azure upstream has no explicit cluster).
    assert_eq!(host.header("x-llm-router-cluster"), Some("azure"));
    // The client's credentials are gone; the provider's is set.
    assert_eq!(host.header("authorization"), None);
    assert_eq!(host.header("x-api-key"), None);
    assert_eq!(host.header("api-key"), Some("key-AZURE_KEY"));
    // Provider headers, authority and path prefix (the query string is kept).
    assert_eq!(host.header("x-extra"), Some("1"));
    assert_eq!(host.header(":authority"), Some("my.openai.azure.com"));
    assert_eq!(
        host.header(":path"),
        Some("/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01")
    );
    assert_eq!(host.header("x-custom"), Some("kept"));
    assert_eq!(host.header(":method"), Some("POST"));

    // The body: only `model` changed and the router fields removed, byte for byte.
    let expected = "{ \"model\" : \"gpt-4o-2024\" ,\n  \"messages\": [{\"role\":\"user\",\"content\":\"Say \\u0068ello\"}],\n  \"temperature\": 0.70 }";
    assert_eq!(body_str(&host), expected);
    assert_eq!(
        host.header("content-length"),
        Some(&*expected.len().to_string())
    );
}

#[test]
fn bearer_and_x_api_key_upstreams() {
    let (_, host) = routed(test_plan(), chat(r#"{"model":"gpt-4o"}"#));
    assert_eq!(host.header("x-llm-router-cluster"), Some("openai-cluster"));
    assert_eq!(
        host.header("authorization"),
        Some("Bearer key-OPENAI_API_KEY")
    );
    assert_eq!(host.header("x-api-key"), None);
    assert_eq!(host.header("api-key"), None);
    assert_eq!(host.header(":authority"), Some("api.openai.com"));
    assert_eq!(
        host.header(":path"),
        Some(CHAT),
        "default prefix /v1 keeps the path"
    );

    let (_, host) = routed(
        test_plan(),
        post(
            "/v1/messages",
            r#"{"model":"claude","max_tokens":10,"messages":[]}"#,
        ),
    );
    assert_eq!(host.header("x-llm-router-cluster"), Some("anthropic"));
    assert_eq!(host.header("x-api-key"), Some("key-ANTHROPIC_API_KEY"));
    assert_eq!(host.header("authorization"), None);
    assert_eq!(host.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(host.header(":authority"), Some("api.anthropic.com"));
    assert_eq!(host.header(":path"), Some("/v1/messages"));
    assert_eq!(
        body_str(&host),
        r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#
    );
}

#[test]
fn upstream_without_auth_still_drops_client_credentials() {
    let (_, host) = routed(test_plan(), chat(r#"{"model":"local"}"#));
    assert_eq!(host.header("x-llm-router-cluster"), Some("vllm"));
    for name in ["authorization", "x-api-key", "api-key"] {
        assert_eq!(host.header(name), None, "{name}");
    }
    assert_eq!(
        host.header(":authority"),
        Some("router.local"),
        "no host: kept"
    );
}

#[test]
fn model_is_inserted_when_omitted() {
    let body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, host) = routed(test_plan(), chat(body));
    let expected = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(body_str(&host), expected);
    assert_eq!(
        host.header("content-length"),
        Some(&*expected.len().to_string())
    );
    let (_, host) = routed(test_plan(), chat(r#"{"model":null}"#));
    assert_eq!(body_str(&host), r#"{"model":"gpt-4o"}"#);
}

#[test]
fn body_untouched_when_nothing_changes() {
    // The alias `gpt-4o` maps to the model id `gpt-4o`.
    let body = "{\"model\":\"gpt-4o\",  \"messages\":[] }";
    let (_, host) = routed(test_plan(), chat(body));
    assert_eq!(body_str(&host), body);
    assert_eq!(
        host.header("content-length"),
        Some(&*body.len().to_string())
    );
}

#[test]
fn router_fields_are_removed_even_when_the_model_stays() {
    let body = r#"{"provider":{"order":["openai"]},"model":"gpt-4o","allowed_models":["*"]}"#;
    let (_, host) = routed(test_plan(), chat(body));
    assert_eq!(body_str(&host), r#"{"model":"gpt-4o"}"#);
    assert_eq!(host.header("content-length"), Some("18"));
}

#[test]
fn content_length_is_not_added_to_a_chunked_request() {
    let mut host = chat(r#"{"model":"smart","stream":true}"#);
    host.request_headers.retain(|(k, _)| k != "content-length");
    let (_, host) = routed(test_plan(), host);
    assert_eq!(host.header("content-length"), None);
    assert_eq!(body_str(&host), r#"{"model":"gpt-4o-2024","stream":true}"#);
}

#[test]
fn content_length_follows_a_longer_and_a_shorter_body() {
    // Longer: `local` → `qwen2.5-7b`.
    let (_, host) = routed(test_plan(), chat(r#"{"model":"local"}"#));
    assert_eq!(body_str(&host), r#"{"model":"qwen2.5-7b"}"#);
    assert_eq!(host.header("content-length"), Some("22"));
    // Shorter: the router fields go.
    let body = r#"{"model":"gpt-4o","allowed_models":["gpt-4o","o1","o3"],"x":1}"#;
    let (_, host) = routed(test_plan(), chat(body));
    assert_eq!(body_str(&host), r#"{"model":"gpt-4o","x":1}"#);
    assert_eq!(host.header("content-length"), Some("24"));
}

#[test]
fn non_ascii_body_is_preserved_byte_for_byte() {
    let body =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"héllo 世界 🦀\"}],\"model\":\"auto\"}";
    let (_, host) = routed(test_plan(), chat(body));
    let expected =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"héllo 世界 🦀\"}],\"model\":\"gpt-4o\"}";
    assert_eq!(body_str(&host), expected);
    assert_eq!(
        host.header("content-length"),
        Some(&*expected.len().to_string())
    );
}

#[test]
fn every_routed_endpoint() {
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/chat/completions/",
    ] {
        let (_, host) = routed(test_plan(), post(path, r#"{"model":"smart","input":"x"}"#));
        // The canonical path (no trailing slash) under the upstream's prefix.
        let want = format!(
            "/openai/deployments/gpt4o{}",
            path.strip_prefix("/v1")
                .unwrap_or(path)
                .trim_end_matches('/')
        );
        assert_eq!(host.header(":path"), Some(want.as_str()), "{path}");
    }
}

#[test]
fn look_alike_paths_route_as_the_canonical_one_and_go_upstream_canonical() {
    for raw in [
        "//v1/chat/completions",
        "/V1/chat/./completions;x=1",
        "/v1/chat/../chat//completions?beta=1",
        "/%761/chat/completions",
    ] {
        let (_, host) = routed(test_plan(), post(raw, r#"{"model":"gpt-4o"}"#));
        let query = raw.find('?').map_or("", |i| &raw[i..]);
        let want = format!("/v1/chat/completions{query}");
        assert_eq!(host.header(":path"), Some(want.as_str()), "{raw}");
        assert_eq!(host.header("x-llm-router-cluster"), Some("openai-cluster"));
        assert!(body_str(&host).contains("gpt-4o"));
    }
    for raw in [
        "/v1/chat%2Fcompletions",
        "/v1\\chat/completions",
        "/../v1/messages",
    ] {
        let (status, v, _, host) = refused(test_plan(), post(raw, r#"{"model":"gpt-4o"}"#));
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_path"))
        );
        assert_eq!(host.header(":path"), Some(raw));
    }
    // GET /v1/models spelled otherwise is answered as /v1/models.
    let mut host = MockHost::with_request(&[(":method", "GET"), (":path", "//V1/models/")], b"");
    flow_for(test_plan()).on_request_headers(&mut host, true);
    let reply = host.local_reply.expect("answered");
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).contains("gpt-4o"));
}

#[test]
fn rule_header_conditions_read_request_headers() {
    let mut host = chat(r#"{"model":"auto"}"#);
    host.request_headers
        .push(("x-team".to_owned(), "research".to_owned()));
    let (mut flow, mut host) = routed(test_plan(), host);
    assert_eq!(host.header("x-llm-router-cluster"), Some("anthropic"));
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_RULE), Some("rule:team-x"));

    let mut host = chat(r#"{"model":"auto"}"#);
    host.request_headers
        .push(("x-team".to_owned(), "other".to_owned()));
    let (_, host) = routed(test_plan(), host);
    assert_eq!(host.header("x-llm-router-cluster"), Some("openai-cluster"));
}

#[test]
fn cheapest_reads_the_output_token_limit_from_the_body() {
    // `in-cheap` costs p + 10·o, `out-cheap` 10·p + o (per million tokens). A prompt of
    // 4000 characters is estimated at about 1000 tokens.
    let prompt = "word ".repeat(800);
    let model_of = |limit: &str| {
        let body = format!(r#"{{"model":"budget","prompt":"{prompt}"{limit}}}"#);
        let (_, host) = routed(test_plan(), post("/v1/completions", &body));
        let v: Value = serde_json::from_slice(&host.request_body).expect("JSON");
        v["model"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(model_of(r#","max_tokens":1"#), "in-cheap");
    assert_eq!(model_of(r#","max_tokens":100000"#), "out-cheap");
    assert_eq!(model_of(r#","max_completion_tokens":100000"#), "out-cheap");
    assert_eq!(model_of(r#","max_output_tokens":100000"#), "out-cheap");
    // Without a limit, 512 output tokens are assumed: ~6100 against ~10500.
    assert_eq!(model_of(""), "in-cheap");
    // A tiny prompt with the assumed 512 output tokens favours `out-cheap`.
    let (_, host) = routed(test_plan(), chat(r#"{"model":"budget"}"#));
    assert_eq!(body_str(&host), r#"{"model":"out-cheap"}"#);
}

#[test]
fn provider_preferences_apply() {
    let body = r#"{"model":"spread","provider":{"order":["local"],"allow_fallbacks":false}}"#;
    let (_, host) = routed(test_plan(), chat(body));
    assert_eq!(host.header("x-llm-router-cluster"), Some("vllm"));
    assert_eq!(body_str(&host), r#"{"model":"rr-2"}"#);
    let body = r#"{"model":"budget","provider":{"ignore":["OpenAI"]}}"#;
    let (_, host) = routed(test_plan(), chat(body));
    assert_eq!(body_str(&host), r#"{"model":"out-cheap"}"#);
}

#[test]
fn round_robin_turns_are_shared_between_requests() {
    let plan = Rc::new(test_plan());
    let mut shared = std::collections::HashMap::new();
    let mut models = Vec::new();
    for _ in 0..5 {
        let mut host = chat(r#"{"model":"spread"}"#);
        host.shared = shared;
        let mut flow = RequestFlow::new(Rc::clone(&plan), 1);
        assert_eq!(run(&mut flow, &mut host), (Flow::Pause, Flow::Continue));
        let v: Value = serde_json::from_slice(&host.request_body).expect("JSON");
        models.push(v["model"].as_str().unwrap_or_default().to_owned());
        shared = std::mem::take(&mut host.shared);
    }
    assert_eq!(models, ["rr-1", "rr-2", "rr-1", "rr-2", "rr-1"]);
    let (value, _) = shared
        .get("llm_router.rr.spread")
        .expect("the turn counter lives in shared data");
    assert_eq!(value.as_slice(), 5u64.to_le_bytes());
}

#[test]
fn round_robin_survives_a_failing_shared_store() {
    let mut host = chat(r#"{"model":"spread"}"#);
    host.cas_conflicts = usize::MAX;
    let (_, host) = routed(test_plan(), host);
    let v: Value = serde_json::from_slice(&host.request_body).expect("JSON");
    assert!(matches!(v["model"].as_str(), Some("rr-1" | "rr-2")), "{v}");
}

#[test]
fn weighted_choice_comes_from_the_seed() {
    let plan = Rc::new(test_plan());
    let choose = |seed: u64| {
        let mut host = chat(r#"{"model":"coin"}"#);
        let mut flow = RequestFlow::new(Rc::clone(&plan), seed);
        assert_eq!(run(&mut flow, &mut host), (Flow::Pause, Flow::Continue));
        let v: Value = serde_json::from_slice(&host.request_body).expect("JSON");
        v["model"].as_str().unwrap_or_default().to_owned()
    };
    // Deterministic for a seed ...
    for seed in 0..20 {
        assert_eq!(choose(seed), choose(seed));
    }
    // ... and both targets are chosen across seeds, roughly evenly.
    let w1 = (0..200).filter(|s| choose(*s) == "w-1").count();
    assert!((60..=140).contains(&w1), "w-1 chosen {w1} of 200 times");
}

// ---------------------------------------------------------------------------------------
// Response headers
// ---------------------------------------------------------------------------------------

#[test]
fn response_headers_are_stamped() {
    let (mut flow, mut host) = routed(test_plan(), chat(r#"{"model":"smart","messages":[]}"#));
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("azure"));
    assert_eq!(host.response_header(HEADER_MODEL), Some("gpt-4o-2024"));
    assert_eq!(host.response_header(HEADER_RULE), Some("model:smart"));
    let task = host.response_header(HEADER_TASK).expect("task header");
    assert!(
        [
            "coding",
            "reasoning",
            "math",
            "vision",
            "summarization",
            "extraction",
            "embedding",
            "general"
        ]
        .contains(&task),
        "{task}"
    );
    let complexity = host.response_header(HEADER_COMPLEXITY).expect("complexity");
    assert!(
        ["low", "medium", "high", "xhigh"].contains(&complexity),
        "{complexity}"
    );
    assert_eq!(host.response_header(HEADER_TAGS), None, "no tag matched");
}

#[test]
fn upstream_sent_diagnostics_are_replaced_or_removed() {
    let mut config = test_config();
    config["unknown_model"] = json!("passthrough");
    config["passthrough_upstream"] = json!("local");
    let body = r#"{"model":"bad\u0001model"}"#;
    let (mut flow, mut host) = routed(plan_json(&config), chat(body));
    for (name, value) in [
        (HEADER_UPSTREAM, "spoofed"),
        (HEADER_MODEL, "spoofed"),
        (HEADER_RULE, "spoofed"),
        (HEADER_TAGS, "spoofed"),
        (HEADER_ATTEMPTS, "9"),
    ] {
        host.response_headers
            .push((name.to_owned(), value.to_owned()));
    }
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("local"));
    assert_eq!(host.response_header(HEADER_RULE), Some("passthrough"));
    assert_eq!(
        host.response_header(HEADER_MODEL),
        None,
        "unsafe model: removed"
    );
    assert_eq!(host.response_header(HEADER_TAGS), None, "no tags: removed");
    assert_eq!(
        host.response_header(HEADER_ATTEMPTS),
        None,
        "no failover: removed"
    );
}

#[test]
fn header_names_are_the_documented_ones() {
    assert_eq!(HEADER_UPSTREAM, "x-llm-router-upstream");
    assert_eq!(HEADER_MODEL, "x-llm-router-model");
    assert_eq!(HEADER_TASK, "x-llm-router-task");
    assert_eq!(HEADER_COMPLEXITY, "x-llm-router-complexity");
    assert_eq!(HEADER_RULE, "x-llm-router-rule");
    assert_eq!(HEADER_TAGS, "x-llm-router-tags");
}

#[test]
fn tags_and_default_are_reported() {
    let body =
        r#"{"model":"auto","messages":[{"role":"user","content":"Please review this contract."}]}"#;
    let (mut flow, mut host) = routed(test_plan(), chat(body));
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_TAGS), Some("legal"));
    assert_eq!(host.response_header(HEADER_RULE), Some("default"));
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("openai"));
    assert_eq!(host.response_header(HEADER_MODEL), Some("gpt-4o"));
}

#[test]
fn embeddings_report_the_embedding_task() {
    let (mut flow, mut host) = routed(
        test_plan(),
        post("/v1/embeddings", r#"{"model":"local","input":"hello"}"#),
    );
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_TASK), Some("embedding"));
}

#[test]
fn response_headers_can_be_turned_off() {
    let mut config = test_config();
    config["response_headers"] = json!(false);
    let (mut flow, mut host) = routed(plan_json(&config), chat(r#"{"model":"smart"}"#));
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert!(no_router_headers(&host));
    // Routing itself is unaffected.
    assert_eq!(host.header("x-llm-router-cluster"), Some("azure"));
}

#[test]
fn passthrough_requests_are_not_stamped() {
    let mut host = post("/v1/models", "");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, true), Flow::Continue);
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert!(no_router_headers(&host));
}

// ---------------------------------------------------------------------------------------
// The bundled configuration, as the README shows it
// ---------------------------------------------------------------------------------------

fn bundled_plan() -> Plan {
    plan_str(BUNDLED)
}

#[test]
fn bundled_hello_goes_to_the_default() {
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"Say hello"}]}"#;
    let (mut flow, mut host) = routed(bundled_plan(), chat(body));
    assert_eq!(host.header("x-llm-router-cluster"), Some("mock-a"));
    assert_eq!(
        host.header("authorization"),
        Some("Bearer key-MOCK_API_KEY")
    );
    assert_eq!(host.header(":path"), Some(CHAT));
    assert_eq!(
        body_str(&host),
        r#"{"model":"mock-small","messages":[{"role":"user","content":"Say hello"}]}"#
    );
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("mock-a"));
    assert_eq!(host.response_header(HEADER_MODEL), Some("mock-small"));
    assert_eq!(host.response_header(HEADER_TASK), Some("general"));
    assert_eq!(host.response_header(HEADER_COMPLEXITY), Some("low"));
    assert_eq!(host.response_header(HEADER_RULE), Some("default"));
    assert_eq!(host.response_header(HEADER_TAGS), None);
}

#[test]
fn bundled_code_question_goes_to_mock_b() {
    let body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"Fix this:\\n```python\\ndef f(:\\n```\"}]}";
    let (mut flow, mut host) = routed(bundled_plan(), chat(body));
    assert_eq!(host.header("x-llm-router-cluster"), Some("mock-b"));
    assert_eq!(host.header(":path"), Some("/openai/v1/chat/completions"));
    assert_eq!(host.header("x-api-key"), Some("key-MOCK_API_KEY"));
    assert_eq!(host.header("authorization"), None);
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_MODEL), Some("mock-large"));
    let rule = host.response_header(HEADER_RULE).unwrap_or_default();
    assert!(rule.starts_with("rule:"), "{rule}");
}

#[test]
fn bundled_legal_tag_goes_to_smart() {
    let body =
        r#"{"model":"auto","messages":[{"role":"user","content":"Is this lawsuit worth it?"}]}"#;
    let (mut flow, mut host) = routed(bundled_plan(), chat(body));
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header(HEADER_TAGS), Some("legal"));
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("mock-b"));
}

#[test]
fn bundled_skips_upstreams_without_keys() {
    let plan = match compile(BUNDLED.as_bytes(), &|name| {
        (name == "MOCK_API_KEY").then(|| "m".to_owned())
    }) {
        Ok(plan) => plan,
        Err(e) => panic!("{e}"),
    };
    let (status, v, _, _) = refused(plan, chat(r#"{"model":"claude-sonnet"}"#));
    assert_eq!(status, 503);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ANTHROPIC_API_KEY")),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------
// The shared-data counter (host::shared_increment)
// ---------------------------------------------------------------------------------------

/// Wraps `MockHost` to count shared-data calls and inject host failures.
#[derive(Default)]
struct CountingHost {
    inner: MockHost,
    writes: usize,
    fail_reads: bool,
    fail_writes: Option<HostError>,
}

impl Host for CountingHost {
    fn request_header(&self, name: &str) -> HostResult<Option<String>> {
        self.inner.request_header(name)
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        self.inner.set_request_header(name, value)
    }
    fn request_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        self.inner.request_body(len)
    }
    fn replace_request_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()> {
        self.inner.replace_request_body(current_len, body)
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        self.inner.set_response_header(name, value)
    }
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        if self.fail_reads {
            return Err(HostError::Status(
                "get_shared_data: InternalFailure".to_owned(),
            ));
        }
        self.inner.shared_data(key)
    }
    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        self.writes += 1;
        if let Some(e) = &self.fail_writes {
            return Err(e.clone());
        }
        self.inner.set_shared_data(key, value, cas)
    }
    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        self.inner.send_local_reply(status, headers, body)
    }
    fn now_nanos(&self) -> u64 {
        self.inner.now_nanos()
    }
}

fn counter(host: &MockHost, key: &str) -> Option<u64> {
    host.shared
        .get(key)
        .and_then(|(v, _)| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes)
}

#[test]
fn shared_increment_counts_from_zero_per_key() {
    let mut host = MockHost::default();
    assert_eq!(shared_increment(&mut host, "a"), Some(0));
    assert_eq!(shared_increment(&mut host, "a"), Some(1));
    assert_eq!(shared_increment(&mut host, "b"), Some(0));
    assert_eq!(shared_increment(&mut host, "a"), Some(2));
    assert_eq!(counter(&host, "a"), Some(3));
    assert_eq!(counter(&host, "b"), Some(1));
    // Stored as 8 little-endian bytes.
    assert_eq!(host.shared["a"].0, 3u64.to_le_bytes());
}

#[test]
fn shared_increment_reads_existing_values() {
    let mut host = MockHost::default();
    host.shared
        .insert("k".to_owned(), (41u64.to_le_bytes().to_vec(), 9));
    assert_eq!(shared_increment(&mut host, "k"), Some(41));
    assert_eq!(counter(&host, "k"), Some(42));
    assert_eq!(host.shared["k"].1, 10, "the CAS token moved on");
    // A value of another shape counts as zero and is replaced.
    host.shared.insert("odd".to_owned(), (b"abc".to_vec(), 1));
    assert_eq!(shared_increment(&mut host, "odd"), Some(0));
    assert_eq!(counter(&host, "odd"), Some(1));
    // The counter wraps rather than overflowing.
    host.shared
        .insert("max".to_owned(), (u64::MAX.to_le_bytes().to_vec(), 1));
    assert_eq!(shared_increment(&mut host, "max"), Some(u64::MAX));
    assert_eq!(counter(&host, "max"), Some(0));
}

#[test]
fn mock_host_refuses_a_stale_cas() {
    let mut host = MockHost::default();
    host.set_shared_data("k", b"x", None).expect("first write");
    let (_, cas) = host.shared_data("k").expect("read");
    host.set_shared_data("k", b"y", cas).expect("current token");
    assert_eq!(
        host.set_shared_data("k", b"z", cas),
        Err(HostError::CasMismatch)
    );
    assert_eq!(host.shared["k"].0, b"y");
}

#[test]
fn shared_increment_retries_lost_cas_races() {
    let mut host = MockHost::default();
    assert_eq!(shared_increment(&mut host, "k"), Some(0));
    // Other workers bump the counter between our read and our write, three times: the
    // increment re-reads each time and counts after theirs.
    host.cas_conflicts = 3;
    assert_eq!(shared_increment(&mut host, "k"), Some(4));
    assert_eq!(host.cas_conflicts, 0);
    assert_eq!(counter(&host, "k"), Some(5));
}

#[test]
fn shared_increment_gives_up_after_a_bounded_number_of_tries() {
    assert_eq!(CAS_RETRIES, 16);
    // One race fewer than the budget still succeeds ...
    let mut host = CountingHost::default();
    host.inner.cas_conflicts = CAS_RETRIES - 1;
    assert_eq!(
        shared_increment(&mut host, "k"),
        Some(CAS_RETRIES as u64 - 1)
    );
    assert_eq!(host.writes, CAS_RETRIES);
    // ... as many races as the budget does not, and stops trying.
    let mut host = CountingHost::default();
    host.inner.cas_conflicts = CAS_RETRIES;
    assert_eq!(shared_increment(&mut host, "k"), None);
    assert_eq!(host.writes, CAS_RETRIES);
    // A host that always loses is not retried forever.
    let mut host = CountingHost::default();
    host.inner.cas_conflicts = usize::MAX;
    assert_eq!(shared_increment(&mut host, "k"), None);
    assert_eq!(host.writes, CAS_RETRIES);
    assert_eq!(host.inner.cas_conflicts, usize::MAX - CAS_RETRIES);
}

#[test]
fn shared_increment_does_not_retry_other_failures() {
    let mut host = CountingHost {
        fail_writes: Some(HostError::Status(
            "set_shared_data: InternalFailure".to_owned(),
        )),
        ..CountingHost::default()
    };
    assert_eq!(shared_increment(&mut host, "k"), None);
    assert_eq!(host.writes, 1);

    let mut host = CountingHost {
        fail_reads: true,
        ..CountingHost::default()
    };
    assert_eq!(shared_increment(&mut host, "k"), None);
    assert_eq!(host.writes, 0);
}

// ---------------------------------------------------------------------------------------
// Health: admission, outcomes, cooldown, probe, budgets
// ---------------------------------------------------------------------------------------

mod health {
    use std::collections::HashMap;
    use std::rc::Rc;

    use serde_json::{json, Value};

    use super::{chat, plan_json, reply, run};
    use crate::config::plan::Plan;
    use crate::health::{Circuit, HealthBoard, TargetHealth};
    use crate::host::mock::MockHost;
    use crate::pipeline::track::response_flags;
    use crate::pipeline::{Flow, RequestFlow, StreamFlow};

    const T0_MS: u64 = 1_700_000_000_000;

    /// Shared data and a clock that outlive single requests, as Envoy's do.
    struct World {
        plan: Rc<Plan>,
        shared: HashMap<String, (Vec<u8>, u32)>,
        now_ms: u64,
    }

    /// One request in progress.
    struct Req {
        flow: RequestFlow,
        host: MockHost,
    }

    fn world(health: Value) -> World {
        let mut v = json!({
            "upstreams": {"a": {}, "b": {}},
            "models": {
                "x": {"targets": [{"upstream": "a", "model": "m-a"},
                                  {"upstream": "b", "model": "m-b"}]},
                "capped": {"targets": [{"upstream": "a", "model": "m-a", "budget": {"rpm": 2}},
                                       {"upstream": "b", "model": "m-b"}]}
            }
        });
        v["health"] = health;
        World {
            plan: Rc::new(plan_json(&v)),
            shared: HashMap::new(),
            now_ms: T0_MS,
        }
    }

    fn default_world() -> World {
        world(json!({"allowed_fails": 1, "cooldown_seconds": 2, "failure_rate": null}))
    }

    const KEY_A: &str = "llm_router.h.a/m-a";
    const KEY_B: &str = "llm_router.h.b/m-b";

    impl World {
        fn host(&mut self) -> MockHost {
            let mut host = chat(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#);
            host.shared = std::mem::take(&mut self.shared);
            host.now_nanos = self.now_ms * 1_000_000;
            host
        }

        /// Starts a request to `model`; returns it routed (or answered locally).
        fn start_model(&mut self, model: &str) -> Req {
            let mut host = self.host();
            host.request_body =
                format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
                    .into_bytes();
            let mut flow = RequestFlow::new(Rc::clone(&self.plan), 3);
            run(&mut flow, &mut host);
            self.shared = std::mem::take(&mut host.shared);
            Req { flow, host }
        }

        fn start(&mut self) -> Req {
            self.start_model("x")
        }

        /// The response headers arrive `after_ms` later.
        fn respond(&mut self, r: &mut Req, status: u32, headers: &[(&str, &str)], after_ms: u64) {
            self.now_ms += after_ms;
            r.host.shared = std::mem::take(&mut self.shared);
            r.host.now_nanos = self.now_ms * 1_000_000;
            r.host.response_headers = vec![(":status".to_owned(), status.to_string())];
            for (k, v) in headers {
                r.host
                    .response_headers
                    .push(((*k).to_owned(), (*v).to_owned()));
            }
            assert_eq!(
                r.flow.on_response_headers(&mut r.host, false),
                Flow::Continue
            );
            self.shared = std::mem::take(&mut r.host.shared);
        }

        /// The stream ends `after_ms` later.
        fn log(&mut self, r: &mut Req, after_ms: u64) {
            self.now_ms += after_ms;
            r.host.shared = std::mem::take(&mut self.shared);
            r.host.now_nanos = self.now_ms * 1_000_000;
            r.flow.on_log(&mut r.host);
            self.shared = std::mem::take(&mut r.host.shared);
        }

        /// A whole request answered with `status`; returns the upstream it went to.
        fn request(&mut self, status: u32, headers: &[(&str, &str)]) -> String {
            let mut r = self.start();
            let up = upstream_of(&r);
            self.respond(&mut r, status, headers, 10);
            self.log(&mut r, 5);
            up
        }

        fn state(&self, key: &str) -> TargetHealth {
            let host = MockHost {
                shared: self.shared.clone(),
                ..MockHost::default()
            };
            HealthBoard::default().read(&host, key).expect("read")
        }
    }

    /// The upstream (cluster) a routed request goes to.
    fn upstream_of(r: &Req) -> String {
        r.host
            .header("x-llm-router-cluster")
            .unwrap_or("(not routed)")
            .to_owned()
    }

    #[test]
    fn a_success_is_admitted_then_finished_exactly_once() {
        let mut w = default_world();
        let mut r = w.start();
        assert_eq!(upstream_of(&r), "a");
        assert!(r.flow.is_tracked());
        let s = w.state(KEY_A);
        assert_eq!((s.requests, s.in_flight), (1, 1));
        w.respond(&mut r, 200, &[], 40);
        assert_eq!(
            w.state(KEY_A).in_flight,
            1,
            "finished at the end of the stream"
        );
        w.log(&mut r, 60);
        let s = w.state(KEY_A);
        assert_eq!((s.requests, s.successes, s.in_flight), (1, 1, 0));
        assert_eq!(s.latency_ms(), Some(100));
        assert_eq!(s.ttfb_ms(), Some(40));
        assert!(!r.flow.is_tracked());
        // A second end-of-stream call changes nothing.
        w.log(&mut r, 1);
        assert_eq!(w.state(KEY_A), s);
        assert_eq!(
            w.state(KEY_B),
            TargetHealth::default(),
            "b was never touched"
        );
    }

    #[test]
    fn failures_cool_the_target_down_then_one_probe_brings_it_back() {
        let mut w = default_world();
        // allowed_fails 1: the second failure in a row trips it.
        assert_eq!(w.request(503, &[]), "a");
        assert_eq!(w.state(KEY_A).circuit, Circuit::Closed);
        assert_eq!(w.request(500, &[]), "a");
        let s = w.state(KEY_A);
        assert_eq!(s.circuit, Circuit::Open);
        assert_eq!((s.failures_5xx, s.in_flight), (2, 0));
        // Cooling down: traffic goes to b.
        assert_eq!(w.request(200, &[]), "b");
        w.now_ms += 1_000;
        assert_eq!(w.request(200, &[]), "b");
        // After the cooldown, one probe goes to a; meanwhile others still go to b.
        w.now_ms += 1_000;
        let mut probe = w.start();
        assert_eq!(upstream_of(&probe), "a");
        assert!(probe.flow.is_probe());
        assert_eq!(w.state(KEY_A).circuit, Circuit::HalfOpen);
        let mut other = w.start();
        assert_eq!(upstream_of(&other), "b");
        assert!(!other.flow.is_probe());
        w.respond(&mut probe, 200, &[], 10);
        w.log(&mut probe, 10);
        w.respond(&mut other, 200, &[], 0);
        w.log(&mut other, 0);
        assert_eq!(w.state(KEY_A).circuit, Circuit::Closed);
        assert_eq!(w.request(200, &[]), "a", "trusted again");
        assert_eq!(w.state(KEY_B).in_flight, 0);
    }

    #[test]
    fn a_failed_probe_starts_a_new_cooldown() {
        let mut w = default_world();
        w.request(503, &[]);
        w.request(503, &[]);
        w.now_ms += 2_000;
        let mut probe = w.start();
        assert!(probe.flow.is_probe());
        w.respond(&mut probe, 502, &[], 5);
        w.log(&mut probe, 5);
        let s = w.state(KEY_A);
        assert_eq!(s.circuit, Circuit::Open);
        assert_eq!(s.cooldown_until_ms, w.now_ms + 2_000);
        assert_eq!(w.request(200, &[]), "b");
    }

    #[test]
    fn retry_after_cools_the_target_down_at_the_response_headers() {
        let mut w = default_world();
        let mut r = w.start();
        w.respond(&mut r, 429, &[("retry-after", "2")], 10);
        let until = w.now_ms + 2_000;
        assert_eq!(
            w.state(KEY_A).cooldown_until_ms,
            until,
            "before the stream ended"
        );
        assert_eq!(w.request(200, &[]), "b");
        w.log(&mut r, 5);
        let s = w.state(KEY_A);
        assert_eq!(
            (s.failures_429, s.consecutive_failures, s.in_flight),
            (1, 0, 0)
        );
        assert_eq!(
            s.circuit,
            Circuit::Closed,
            "a rate limit is not a circuit failure"
        );
        w.now_ms = until - 1;
        assert_eq!(w.request(200, &[]), "b");
        w.now_ms = until;
        assert_eq!(w.request(200, &[]), "a");
    }

    #[test]
    fn exhausted_rate_limit_headers_cool_down_even_on_success() {
        let mut w = default_world();
        w.request(
            200,
            &[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1s"),
            ],
        );
        let s = w.state(KEY_A);
        assert_eq!(s.successes, 1);
        assert!(s.cooldown_until_ms > w.now_ms);
        assert_eq!(w.request(200, &[]), "b");
    }

    #[test]
    fn client_errors_are_not_held_against_the_target() {
        let mut w = default_world();
        for status in [400, 401, 404, 413, 422] {
            assert_eq!(w.request(status, &[]), "a");
        }
        let s = w.state(KEY_A);
        assert_eq!(
            (s.successes, s.failures(), s.consecutive_failures),
            (5, 0, 0)
        );
        assert_eq!(s.circuit, Circuit::Closed);
    }

    #[test]
    fn a_stream_without_response_is_classified_by_envoy_flags() {
        let cases = [
            (response_flags::UPSTREAM_CONNECTION_FAILURE, "connect"),
            (response_flags::UPSTREAM_REMOTE_RESET, "connect"),
            (response_flags::UPSTREAM_REQUEST_TIMEOUT, "timeout"),
            (response_flags::UPSTREAM_PROTOCOL_ERROR, "connect"),
            (
                response_flags::UPSTREAM_MAX_STREAM_DURATION_REACHED,
                "timeout",
            ),
            (0x4000, "cancelled"), // downstream connection termination
            (0, "cancelled"),
        ];
        for (flags, class) in cases {
            let mut w = default_world();
            let mut r = w.start();
            r.host.set_int_property("response.flags", flags as i64);
            w.log(&mut r, 30);
            let s = w.state(KEY_A);
            let got = (s.failures_connect, s.failures_timeout, s.cancelled);
            let want = match class {
                "connect" => (1, 0, 0),
                "timeout" => (0, 1, 0),
                _ => (0, 0, 1),
            };
            assert_eq!(got, want, "flags {flags:#x}");
            assert_eq!(s.in_flight, 0);
        }
        // Only a response code (no headers seen): a 503 is a 5xx.
        let mut w = default_world();
        let mut r = w.start();
        r.host.set_int_property("response.code", 503);
        w.log(&mut r, 30);
        assert_eq!(w.state(KEY_A).failures_5xx, 1);
    }

    #[test]
    fn an_upstream_reset_after_the_headers_is_a_failure() {
        let mut w = default_world();
        let mut r = w.start();
        w.respond(&mut r, 200, &[], 10);
        r.host.set_int_property(
            "response.flags",
            response_flags::UPSTREAM_REMOTE_RESET as i64,
        );
        w.log(&mut r, 10);
        let s = w.state(KEY_A);
        assert_eq!((s.successes, s.failures_connect), (0, 1));
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_request_probe() {
        let mut w = default_world();
        w.request(503, &[]);
        w.request(503, &[]);
        w.now_ms += 2_000;
        let mut probe = w.start();
        assert!(probe.flow.is_probe());
        w.log(&mut probe, 5);
        let next = w.start();
        assert!(next.flow.is_probe());
        assert_eq!(upstream_of(&next), "a");
    }

    #[test]
    fn everything_down_goes_to_the_soonest_back() {
        let mut w = default_world();
        w.request(503, &[]);
        w.request(503, &[]);
        w.now_ms += 500;
        // b trips too, later: a is back sooner.
        let mut r1 = w.start();
        let mut r2 = w.start();
        assert_eq!(
            (upstream_of(&r1), upstream_of(&r2)),
            ("b".into(), "b".into())
        );
        w.respond(&mut r1, 503, &[], 0);
        w.respond(&mut r2, 503, &[], 0);
        w.log(&mut r1, 0);
        w.log(&mut r2, 0);
        assert_eq!(w.state(KEY_B).circuit, Circuit::Open);
        let r = w.start();
        assert_eq!(upstream_of(&r), "a");
        assert!(r.flow.is_tracked());
        assert!(!r.flow.is_probe(), "its cooldown is not over");
        assert_eq!(w.state(KEY_A).in_flight, 1);
    }

    #[test]
    fn everything_down_is_refused_with_retry_after_when_configured() {
        let mut w = world(json!({"allowed_fails": 0, "cooldown_seconds": 2,
                                 "when_all_unhealthy": "reject"}));
        w.request(503, &[]);
        w.request(503, &[]);
        assert_eq!(w.state(KEY_B).circuit, Circuit::Open);
        w.now_ms += 500;
        let r = w.start();
        let local = r.host.local_reply.as_ref().expect("a local reply");
        assert_eq!(local.status, 503);
        assert!(local
            .headers
            .contains(&("retry-after".to_owned(), "2".to_owned())));
        let v: Value = serde_json::from_slice(&local.body).expect("JSON");
        assert_eq!(v["error"]["code"], "no_available_target");
        assert!(!r.flow.is_tracked());
        assert_eq!(w.state(KEY_A).in_flight + w.state(KEY_B).in_flight, 0);
    }

    #[test]
    fn a_budget_caps_the_target_per_minute() {
        let mut w = default_world();
        let ups: Vec<String> = (0..4)
            .map(|_| {
                let mut r = w.start_model("capped");
                let up = upstream_of(&r);
                w.respond(&mut r, 200, &[], 1);
                w.log(&mut r, 1);
                up
            })
            .collect();
        assert_eq!(ups, ["a", "a", "b", "b"]);
        w.now_ms += 61_000;
        let r = w.start_model("capped");
        assert_eq!(upstream_of(&r), "a", "the window slid on");
    }

    #[test]
    fn least_busy_sends_to_the_target_with_fewer_in_flight() {
        let mut w = default_world();
        let plan = json!({
            "upstreams": {"a": {}, "b": {}},
            "models": {"x": {"strategy": "least_busy",
                             "targets": [{"upstream": "a", "model": "m-a"},
                                         {"upstream": "b", "model": "m-b"}]}}
        });
        w.plan = Rc::new(plan_json(&plan));
        let r1 = w.start();
        let r2 = w.start();
        let r3 = w.start();
        assert_eq!(
            [upstream_of(&r1), upstream_of(&r2), upstream_of(&r3)],
            ["a", "b", "a"]
        );
    }

    #[test]
    fn health_off_touches_no_shared_data() {
        let mut w = world(json!({"enabled": false}));
        let mut r = w.start();
        assert_eq!(upstream_of(&r), "a");
        assert!(!r.flow.is_tracked());
        w.respond(&mut r, 503, &[("retry-after", "5")], 1);
        w.log(&mut r, 1);
        assert!(w.shared.is_empty());
    }

    #[test]
    fn failing_shared_data_never_fails_the_request() {
        let plan = default_world().plan;
        let mut host = chat(r#"{"model":"x"}"#);
        host.shared_data_fails = true;
        let mut flow = RequestFlow::new(plan, 1);
        assert_eq!(run(&mut flow, &mut host), (Flow::Pause, Flow::Continue));
        assert_eq!(host.header("x-llm-router-cluster"), Some("a"));
        assert!(!flow.is_tracked());
        host.response_headers = vec![
            (":status".to_owned(), "429".to_owned()),
            ("retry-after".to_owned(), "1".to_owned()),
        ];
        assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
        flow.on_log(&mut host);
        assert!(host.local_reply.is_none());
    }

    #[test]
    fn a_local_reply_after_admission_releases_the_target() {
        let mut w = default_world();
        let mut host = w.host();
        let mut flow = RequestFlow::new(Rc::clone(&w.plan), 1);
        assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
        host.headers_sent = true;
        let len = host.request_body.len();
        assert_eq!(flow.on_request_body(&mut host, len, true), Flow::Pause);
        assert_eq!(reply(&host).0, 500);
        flow.on_log(&mut host);
        w.shared = std::mem::take(&mut host.shared);
        let s = w.state(KEY_A);
        assert_eq!((s.requests, s.in_flight, s.cancelled), (1, 0, 1));
    }

    #[test]
    fn a_token_budget_counts_the_reported_usage() {
        let mut w = world(json!({}));
        let plan = json!({
            "upstreams": {"a": {}, "b": {}},
            "models": {"x": {"targets": [
                {"upstream": "a", "model": "m-a", "budget": {"tpm": 250}},
                {"upstream": "b", "model": "m-b"}]}}
        });
        w.plan = Rc::new(plan_json(&plan));
        let mut served = Vec::new();
        for _ in 0..4 {
            let mut r = w.start();
            served.push(upstream_of(&r));
            w.respond(&mut r, 200, &[], 1);
            // The body arrives in two chunks, the usage in the second.
            let body = format!(r#"{{"choices":[{{"text":"{}"}}],"#, "x".repeat(5000));
            r.host.response_body = body.into_bytes();
            let len = r.host.response_body.len();
            assert_eq!(
                r.flow.on_response_body(&mut r.host, len, false),
                Flow::Continue
            );
            r.host.response_body = br#""usage":{"total_tokens":100}}"#.to_vec();
            let len = r.host.response_body.len();
            assert_eq!(
                r.flow.on_response_body(&mut r.host, len, true),
                Flow::Continue
            );
            w.log(&mut r, 1);
        }
        // 100 tokens each: after three, the 250-token budget is spent.
        assert_eq!(served, ["a", "a", "a", "b"]);
        let s = w.state(KEY_A);
        let totals = s
            .budget
            .totals(w.now_ms, crate::health::state::BUDGET_BUCKET_MS);
        assert_eq!(totals.tokens, 300);
    }
}

mod usage;

mod capabilities;

mod clients;

mod service;

mod translation;

mod odd_bytes;

mod fuzz;

mod host_calls;
