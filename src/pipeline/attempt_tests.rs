//! Native tests of failover: the header codecs, the request filter's failover mode and the
//! attempt filter, both against `MockHost`.

use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::config::compile;
use crate::health::HealthBoard;
use crate::host::mock::MockHost;
use crate::pipeline::{RequestFlow, StreamFlow};

const KEY_A: &str = "llm_router.h.a/m-a";
const KEY_B: &str = "llm_router.h.b/m-b";

fn plan(failover: Value) -> Rc<Plan> {
    let cfg = json!({
        "upstreams": {
            "a": {"cluster": "ca", "auth": {"type": "bearer", "key_env": "KA"}},
            "b": {"cluster": "cb", "path_prefix": "/openai/v1", "host": "b.example",
                  "headers": {"x-b": "1"}, "auth": {"type": "x-api-key", "key_env": "KB"}}
        },
        "models": {"duo": {"targets": [{"upstream": "a", "model": "m-a"},
                                       {"upstream": "b", "model": "m-b"}]}},
        "failover": failover
    });
    let env = |name: &str| Some(format!("key-{name}"));
    Rc::new(compile(cfg.to_string().as_bytes(), &env).expect("config compiles"))
}

fn request(body: &str) -> MockHost {
    MockHost::with_request(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions?x=1"),
            (":authority", "router.local"),
            ("content-length", &body.len().to_string()),
            ("authorization", "Bearer client"),
            ("x-envoy-retry-on", "5xx"),
        ],
        body.as_bytes(),
    )
}

#[test]
fn keys_round_trip_through_the_header_codecs() {
    let keys = [
        "llm_router.h.a/m-a",
        "llm_router.h.b/odd,model;name%\u{e9} \n",
    ];
    let value = encode_failover(42, &keys);
    assert!(crate::config::plan::is_header_value_safe(&value), "{value}");
    assert_eq!(value.matches(',').count(), 1);
    assert_eq!(
        parse_failover(&value),
        Some((42, keys.map(str::to_owned).to_vec()))
    );
    assert_eq!(
        parse_served(&served(3, keys[1])),
        Some((keys[1].to_owned(), 3))
    );
    for bad in ["", "x;a", "1;", "1;a,,b", "1;%zz", "1;%4"] {
        assert_eq!(parse_failover(bad), None, "{bad}");
    }
}

#[test]
fn request_filter_sends_several_usable_candidates_to_the_failover_cluster() {
    let plan = plan(json!({"cluster": "llm_failover", "max_attempts": 2}));
    let body = r#"{"model":"duo","provider":{"sort":"price"},"messages":[]}"#;
    let mut host = request(body);
    let mut flow = RequestFlow::new(Rc::clone(&plan), 1);
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        flow.on_request_body(&mut host, body.len(), true),
        Flow::Continue
    );
    assert_eq!(host.header("x-llm-router-cluster"), Some("llm_failover"));
    let list = host.header(HEADER_FAILOVER).expect("failover list");
    let (_, keys) = parse_failover(list).expect("parses");
    assert_eq!(keys, [KEY_A, KEY_B]);
    assert_eq!(host.header("x-envoy-max-retries"), Some("1"));
    assert_eq!(host.header("x-envoy-retry-on"), None);
    assert_eq!(host.header(HEADER_PATH), Some("/v1/chat/completions?x=1"));
    assert_eq!(host.header(HEADER_AUTHORITY), Some("router.local"));
    // Attempt 1 is rewritten for the first candidate already (the attempt filter only
    // routes it); router-only fields are gone.
    assert_eq!(host.header("authorization"), Some("Bearer key-KA"));
    assert_eq!(host.request_body, br#"{"model":"m-a","messages":[]}"#);
    assert_eq!(
        host.header("content-length"),
        Some(host.request_body.len().to_string().as_str())
    );
    // Not tracked here: each attempt is.
    assert!(!flow.is_tracked());

    // The response names the target that served it.
    host.response_headers = vec![
        (":status".to_owned(), "200".to_owned()),
        (HEADER_SERVED.to_owned(), served(2, KEY_B)),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert_eq!(host.response_header("x-llm-router-upstream"), Some("b"));
    assert_eq!(host.response_header("x-llm-router-model"), Some("m-b"));
    assert_eq!(host.response_header("x-llm-router-attempts"), Some("2"));
    assert_eq!(host.response_header(HEADER_SERVED), None);
}

#[test]
fn without_failover_or_fallbacks_the_request_goes_straight_to_its_target() {
    for (failover, body) in [
        (json!({}), r#"{"model":"duo"}"#),
        (
            json!({"cluster": "llm_failover"}),
            r#"{"model":"duo","provider":{"allow_fallbacks":false}}"#,
        ),
        (
            json!({"cluster": "llm_failover"}),
            r#"{"model":"duo","provider":{"only":["b"]}}"#,
        ),
    ] {
        let plan = plan(failover);
        let mut host = request(body);
        let mut flow = RequestFlow::new(plan, 1);
        flow.on_request_headers(&mut host, false);
        assert_eq!(
            flow.on_request_body(&mut host, body.len(), true),
            Flow::Continue
        );
        assert_ne!(
            host.header("x-llm-router-cluster"),
            Some("llm_failover"),
            "{body}"
        );
        assert_eq!(host.header(HEADER_FAILOVER), None);
        assert_eq!(host.header("x-envoy-retry-on"), None, "{body}");
    }
}

/// One attempt as Envoy's router would send it to the failover cluster.
fn attempt_host(number: u32, body: &str, keys: &[&str]) -> MockHost {
    let mut host = MockHost::with_request(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions?x=1"),
            (":authority", "router.local"),
            ("content-length", &body.len().to_string()),
            ("x-llm-router-cluster", "llm_failover"),
            (HEADER_PATH, "/v1/chat/completions?x=1"),
            (HEADER_AUTHORITY, "router.local"),
            ("x-envoy-attempt-count", &number.to_string()),
        ],
        body.as_bytes(),
    );
    let list = encode_failover(7, keys);
    host.request_headers
        .push((HEADER_FAILOVER.to_owned(), list));
    host
}

fn send_attempt(flow: &mut AttemptFlow, host: &mut MockHost) {
    assert_eq!(flow.on_request_headers(host, false), Flow::Pause);
    let len = host.request_body.len();
    assert_eq!(flow.on_request_body(host, len, true), Flow::Continue);
}

#[test]
fn each_attempt_is_rewritten_for_its_candidate() {
    let plan = plan(json!({"cluster": "llm_failover"}));
    let body = r#"{"model":"duo","messages":[{"role":"user","content":"hi"}]}"#;

    // What the request filter sends to the failover cluster.
    let mut host = request(body);
    let mut request_flow = RequestFlow::new(Rc::clone(&plan), 1);
    request_flow.on_request_headers(&mut host, false);
    request_flow.on_request_body(&mut host, body.len(), true);
    let sent_body = host.request_body.clone();
    assert_eq!(
        sent_body,
        br#"{"model":"m-a","messages":[{"role":"user","content":"hi"}]}"#
    );

    // Attempt 1: only routed to the first candidate's cluster, not held for the body.
    host.request_headers
        .push(("x-envoy-attempt-count".to_owned(), "1".to_owned()));
    let before = host.request_headers.clone();
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Continue);
    assert_eq!(
        flow.on_request_body(&mut host, sent_body.len(), true),
        Flow::Continue
    );
    assert_eq!(flow.target_key(), Some(KEY_A));
    assert_eq!(host.header("x-llm-router-cluster"), Some("ca"));
    assert_eq!(host.request_body, sent_body);
    let changed: Vec<_> = host
        .request_headers
        .iter()
        .filter(|h| !before.contains(h))
        .collect();
    assert_eq!(
        changed,
        [&("x-llm-router-cluster".to_owned(), "ca".to_owned())]
    );

    // Attempt 2 may get the header map attempt 1 changed: everything of a's is undone.
    host.request_headers
        .retain(|(k, _)| k != "x-envoy-attempt-count");
    host.request_headers
        .push(("x-envoy-attempt-count".to_owned(), "2".to_owned()));
    // Envoy replays the body the request filter sent.
    host.request_body = sent_body.clone();
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut host);
    assert_eq!(flow.target_key(), Some(KEY_B));
    assert_eq!(host.header("x-llm-router-cluster"), Some("cb"));
    assert_eq!(host.header("authorization"), None);
    assert_eq!(host.header("x-api-key"), Some("key-KB"));
    assert_eq!(host.header("x-b"), Some("1"));
    assert_eq!(host.header(":authority"), Some("b.example"));
    assert_eq!(
        host.header(":path"),
        Some("/openai/v1/chat/completions?x=1")
    );
    assert_eq!(
        host.request_body,
        br#"{"model":"m-b","messages":[{"role":"user","content":"hi"}]}"#
    );
    assert_eq!(
        host.header("content-length"),
        Some(host.request_body.len().to_string().as_str())
    );

    // And back to a (a third attempt past the list stays on the last candidate).
    let mut back = attempt_host(1, body, &[KEY_B, KEY_A]);
    back.request_headers = host.request_headers.clone();
    back.request_headers
        .retain(|(k, _)| k != HEADER_FAILOVER && k != "x-envoy-attempt-count");
    back.request_headers.push((
        HEADER_FAILOVER.to_owned(),
        encode_failover(7, &[KEY_B, KEY_A]),
    ));
    back.request_headers
        .push(("x-envoy-attempt-count".to_owned(), "3".to_owned()));
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut back);
    assert_eq!(flow.target_key(), Some(KEY_A));
    assert_eq!(back.header("x-api-key"), None);
    assert_eq!(back.header("x-b"), None);
    assert_eq!(back.header(":authority"), Some("router.local"));
    assert_eq!(back.header(":path"), Some("/v1/chat/completions?x=1"));
}

#[test]
fn attempts_are_tracked_and_failures_counted_per_target() {
    let plan = plan(json!({"cluster": "llm_failover"}));
    let body = r#"{"model":"duo"}"#;
    let mut host = attempt_host(1, body, &[KEY_A, KEY_B]);
    host.now_nanos = 1_000_000_000_000;
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Continue);
    assert!(flow.is_tracked());
    host.response_headers = vec![
        (":status".to_owned(), "503".to_owned()),
        (HEADER_HOP_FLAGS.to_owned(), "-".to_owned()),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert_eq!(host.response_header(HEADER_HOP_FLAGS), None);
    assert_eq!(
        host.response_header(HEADER_SERVED),
        Some(served(1, KEY_A).as_str())
    );
    flow.on_log(&mut host);
    flow.on_log(&mut host); // on_log and on_done: finished once
    let a = HealthBoard::default().read(&host, KEY_A).expect("read");
    assert_eq!((a.requests, a.in_flight, a.consecutive_failures), (1, 0, 1));

    // The hop could not reach the provider: a connect failure, not a 5xx from it.
    let mut host2 = attempt_host(2, body, &[KEY_A, KEY_B]);
    host2.shared = std::mem::take(&mut host.shared);
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut host2);
    host2.response_headers = vec![
        (":status".to_owned(), "503".to_owned()),
        (HEADER_HOP_FLAGS.to_owned(), "UF,URX".to_owned()),
    ];
    flow.on_response_headers(&mut host2, false);
    flow.on_log(&mut host2);
    let b = HealthBoard::default().read(&host2, KEY_B).expect("read");
    assert_eq!(
        (b.requests, b.in_flight, b.failures_connect, b.failures_5xx),
        (1, 0, 1, 0)
    );
}

#[test]
fn a_request_without_the_failover_header_is_left_alone() {
    let plan = plan(json!({"cluster": "llm_failover"}));
    let mut host = request(r#"{"model":"duo"}"#);
    let before = host.request_headers.clone();
    let mut flow = AttemptFlow::new(plan);
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Continue);
    assert_eq!(flow.on_request_body(&mut host, 15, true), Flow::Continue);
    assert_eq!(host.request_headers, before);
    assert!(!flow.is_tracked());
}

#[test]
fn an_unknown_target_is_refused_not_forwarded() {
    let plan = plan(json!({"cluster": "llm_failover"}));
    let mut host = attempt_host(1, "{}", &["llm_router.h.z/unknown"]);
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    let reply = host.local_reply.as_ref().expect("a local reply");
    assert_eq!(reply.status, 500);
    assert_eq!(host.header("x-llm-router-cluster"), Some("llm_failover"));
    let error: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(error["error"]["type"], "server_error");

    // An Anthropic client's request gets the reply in Anthropic's shape.
    let mut host = attempt_host(1, "{}", &["llm_router.h.z/unknown"]);
    for (name, value) in host.request_headers.iter_mut() {
        if name == ":path" || name == HEADER_PATH {
            *value = "/v1/messages".to_owned();
        }
    }
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    let reply = host.local_reply.as_ref().expect("a local reply");
    let error: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
}

#[test]
fn hop_flag_names_map_to_failure_classes() {
    use crate::pipeline::track::{response_flags as f, response_flags_from_names};
    assert_eq!(response_flags_from_names("-"), 0);
    assert_eq!(
        response_flags_from_names("UF,URX"),
        f::UPSTREAM_CONNECTION_FAILURE
    );
    assert_eq!(
        response_flags_from_names("UT, UPE"),
        f::UPSTREAM_REQUEST_TIMEOUT | f::UPSTREAM_PROTOCOL_ERROR
    );
    for name in ["UH", "UR", "UF", "UC", "UO", "UPE", "DF"] {
        assert_ne!(
            response_flags_from_names(name) & f::CONNECT_FAILURE,
            0,
            "{name}"
        );
    }
    for name in ["UT", "SI", "UMSDR"] {
        assert_ne!(response_flags_from_names(name) & f::TIMEOUT, 0, "{name}");
    }
}

const KEY_C: &str = "llm_router.h.c/m-c";

/// `a` speaks OpenAI's API, `c` Anthropic's; `mix` fails over from one to the other.
fn mixed_plan(targets: Value) -> Rc<Plan> {
    let cfg = json!({
        "upstreams": {
            "a": {"cluster": "ca", "format": "openai", "auth": {"type": "bearer", "key_env": "KA"}},
            "c": {"cluster": "cc", "format": "anthropic", "default_max_tokens": 512,
                  "auth": {"type": "x-api-key", "key_env": "KC"}}
        },
        "models": {"mix": {"targets": targets}},
        "failover": {"cluster": "llm_failover"}
    });
    let env = |name: &str| Some(format!("key-{name}"));
    Rc::new(compile(cfg.to_string().as_bytes(), &env).expect("config compiles"))
}

fn a_then_c() -> Value {
    json!([{"upstream": "a", "model": "m-a"}, {"upstream": "c", "model": "m-c"}])
}

fn c_then_a() -> Value {
    json!([{"upstream": "c", "model": "m-c"}, {"upstream": "a", "model": "m-a"}])
}

/// The request filter's side of `body` sent to `path`: what goes to the failover cluster.
fn through_request_filter(plan: &Rc<Plan>, path: &str, body: &str) -> (RequestFlow, MockHost) {
    let mut host = MockHost::with_request(
        &[
            (":method", "POST"),
            (":path", path),
            (":authority", "router.local"),
            ("content-length", &body.len().to_string()),
            ("anthropic-version", "2023-06-01"),
        ],
        body.as_bytes(),
    );
    if path != "/v1/messages" {
        host.request_headers
            .retain(|(k, _)| k != "anthropic-version");
    }
    let mut flow = RequestFlow::new(Rc::clone(plan), 1);
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        flow.on_request_body(&mut host, body.len(), true),
        Flow::Continue
    );
    (flow, host)
}

/// Attempt `number` of what the request filter sent (`sent`: its headers and body).
fn next_attempt(sent: &MockHost, number: u32) -> MockHost {
    let mut host = MockHost::with_request(&[], &sent.request_body);
    host.request_headers = sent.request_headers.clone();
    host.request_headers
        .retain(|(k, _)| k != "x-envoy-attempt-count");
    host.request_headers
        .push(("x-envoy-attempt-count".to_owned(), number.to_string()));
    host
}

fn body_json(host: &MockHost) -> Value {
    serde_json::from_slice(&host.request_body).expect("a JSON body")
}

#[test]
fn failover_crosses_apis_each_attempt_translated_for_its_target() {
    let plan = mixed_plan(a_then_c());
    let body = r#"{"model":"mix","stream":true,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}"#;
    let (mut request_flow, sent) = through_request_filter(&plan, "/v1/chat/completions", body);
    // The client's API goes to the failover cluster, for the first candidate.
    let (_, keys) = parse_failover(sent.header(HEADER_FAILOVER).expect("list")).expect("parses");
    assert_eq!(keys, [KEY_A, KEY_C]);
    assert_eq!(body_json(&sent)["model"], "m-a");
    assert_eq!(body_json(&sent)["messages"][0]["role"], "system");

    // Attempt 1, same API: routed at its headers as ever.
    let mut first = next_attempt(&sent, 1);
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    assert_eq!(flow.on_request_headers(&mut first, false), Flow::Continue);
    assert_eq!(first.header("x-llm-router-cluster"), Some("ca"));

    // Attempt 2, to the Anthropic-format target: the client's body translated.
    let mut second = next_attempt(&first, 2);
    second.request_body = sent.request_body.clone();
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut second);
    assert_eq!(flow.target_key(), Some(KEY_C));
    assert_eq!(second.header("x-llm-router-cluster"), Some("cc"));
    assert_eq!(second.header(":path"), Some("/v1/messages"));
    assert_eq!(second.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(second.header("x-api-key"), Some("key-KC"));
    assert_eq!(second.header("authorization"), None);
    let translated = body_json(&second);
    assert_eq!(translated["model"], "m-c");
    assert_eq!(translated["system"][0]["text"], "Be brief.");
    assert_eq!(translated["max_tokens"], 512);
    assert_eq!(translated["stream"], true);
    assert_eq!(translated.get("stream_options"), None);
    assert_eq!(
        second.header("content-length"),
        Some(second.request_body.len().to_string().as_str())
    );

    // Its answer, an Anthropic stream, reaches the OpenAI client as chunks, with no usage
    // chunk it did not ask for.
    let mut answer = MockHost {
        response_headers: vec![
            (":status".to_owned(), "200".to_owned()),
            ("content-type".to_owned(), "text/event-stream".to_owned()),
            (HEADER_SERVED.to_owned(), served(2, KEY_C)),
        ],
        ..MockHost::default()
    };
    assert_eq!(
        request_flow.on_response_headers(&mut answer, false),
        Flow::Continue
    );
    assert_eq!(answer.response_header("x-llm-router-upstream"), Some("c"));
    let events = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m-c\",\"content\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    answer.response_body = events.as_bytes().to_vec();
    request_flow.on_response_body(&mut answer, events.len(), true);
    let out = String::from_utf8(answer.response_body.clone()).expect("text");
    assert!(
        out.contains("\"object\":\"chat.completion.chunk\""),
        "{out}"
    );
    assert!(out.contains("\"content\":\"Hello\""), "{out}");
    assert!(out.contains("\"finish_reason\":\"stop\""), "{out}");
    assert!(!out.contains("\"usage\""), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
}

#[test]
fn a_translated_first_attempt_waits_for_the_body_and_an_anthropic_client_keeps_its_headers() {
    // An Anthropic client whose first candidate speaks OpenAI's API.
    let plan =
        mixed_plan(json!([{"upstream": "a", "model": "m-a"}, {"upstream": "c", "model": "m-c"}]));
    let body = r#"{"model":"mix","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let (mut request_flow, sent) = through_request_filter(&plan, "/v1/messages", body);
    assert_eq!(body_json(&sent)["max_tokens"], 100);
    assert_eq!(body_json(&sent).get("max_completion_tokens"), None);

    let mut first = next_attempt(&sent, 1);
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut first);
    assert_eq!(flow.target_key(), Some(KEY_A));
    assert_eq!(first.header(":path"), Some("/v1/chat/completions"));
    assert_eq!(first.header("authorization"), Some("Bearer key-KA"));
    // Kept for a later attempt in the client's own API.
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    let translated = body_json(&first);
    assert_eq!(translated["model"], "m-a");
    assert_eq!(translated["messages"][0]["content"], "hi");

    // Attempt 2 in the client's API: its body and headers as the client sent them.
    let mut second = next_attempt(&first, 2);
    second.request_body = sent.request_body.clone();
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut second);
    assert_eq!(second.header(":path"), Some("/v1/messages"));
    assert_eq!(second.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(second.header("x-api-key"), Some("key-KC"));
    assert_eq!(second.header("authorization"), None);
    assert_eq!(
        second.request_body,
        br#"{"model":"m-c","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#
    );

    // Attempt 1's OpenAI answer goes back to the Anthropic client as a message.
    let reply = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m-a","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let mut answer = MockHost {
        response_headers: vec![
            (":status".to_owned(), "200".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("content-length".to_owned(), reply.len().to_string()),
            (HEADER_SERVED.to_owned(), served(1, KEY_A)),
        ],
        ..MockHost::default()
    };
    assert_eq!(
        request_flow.on_response_headers(&mut answer, false),
        Flow::Pause
    );
    answer.response_body = reply.as_bytes().to_vec();
    assert_eq!(
        request_flow.on_response_body(&mut answer, reply.len(), true),
        Flow::Continue
    );
    let message: Value = serde_json::from_slice(&answer.response_body).expect("JSON");
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "Hello");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 3);
}

#[test]
fn an_openai_client_after_a_translated_attempt_loses_the_anthropic_header() {
    let plan = mixed_plan(c_then_a());
    let body = r#"{"model":"mix","messages":[{"role":"user","content":"hi"}]}"#;
    let (_, sent) = through_request_filter(&plan, "/v1/chat/completions", body);
    let mut first = next_attempt(&sent, 1);
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut first);
    assert_eq!(first.header(":path"), Some("/v1/messages"));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(body_json(&first)["max_tokens"], 512);

    let mut second = next_attempt(&first, 2);
    second.request_body = sent.request_body.clone();
    let mut flow = AttemptFlow::new(Rc::clone(&plan));
    send_attempt(&mut flow, &mut second);
    assert_eq!(second.header(":path"), Some("/v1/chat/completions"));
    assert_eq!(second.header("anthropic-version"), None);
    assert_eq!(second.header("x-api-key"), None);
    assert_eq!(
        second.request_body,
        br#"{"model":"m-a","messages":[{"role":"user","content":"hi"}]}"#
    );
}

#[test]
fn a_candidate_whose_api_cannot_express_the_request_is_left_out() {
    // `seed` has no equivalent in Anthropic's API: only `a` is tried.
    let plan = mixed_plan(a_then_c());
    let body = r#"{"model":"mix","seed":7,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, sent) = through_request_filter(&plan, "/v1/chat/completions", body);
    let (_, keys) = parse_failover(sent.header(HEADER_FAILOVER).expect("list")).expect("parses");
    assert_eq!(keys, [KEY_A]);
    assert_eq!(sent.header("x-envoy-max-retries"), Some("0"));

    // When no candidate is left, the client gets the 400 that names the field.
    let plan =
        mixed_plan(json!([{"upstream": "c", "model": "m-c"}, {"upstream": "c", "model": "m-c2"}]));
    let mut host = MockHost::with_request(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("content-length", &body.len().to_string()),
        ],
        body.as_bytes(),
    );
    let mut flow = RequestFlow::new(plan, 1);
    flow.on_request_headers(&mut host, false);
    flow.on_request_body(&mut host, body.len(), true);
    let reply = host.local_reply.as_ref().expect("a local reply");
    assert_eq!(reply.status, 400);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("`seed`"), "{text}");
}
