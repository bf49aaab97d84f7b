//! Requests translated for an upstream of the other API (`upstreams.*.format`) through
//! `RequestFlow` against `MockHost`: what goes upstream, and what comes back.

use super::*;

fn translating_plan() -> Plan {
    plan_json(&json!({
        "upstreams": {
            "claude": {"cluster": "c", "format": "anthropic",
                       "auth": {"type": "x-api-key", "key_env": "K"}},
            "gpt": {"cluster": "g", "format": "openai", "auth": {"type": "bearer", "key_env": "K"}},
            "plain": {"cluster": "p"}
        },
        "models": {
            "claude": {"targets": [{"upstream": "claude", "model": "claude-x"}]},
            "gpt": {"targets": [{"upstream": "gpt", "model": "gpt-x"}]},
            "plain": {"targets": [{"upstream": "plain", "model": "p-x"}]}
        }
    }))
}

fn post(path: &str, body: &str, extra: &[(&str, &str)]) -> MockHost {
    let len = body.len().to_string();
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "r"),
        ("content-type", "application/json"),
        ("content-length", len.as_str()),
    ];
    headers.extend_from_slice(extra);
    MockHost::with_request(&headers, body.as_bytes())
}

fn sent_body(host: &MockHost) -> Value {
    serde_json::from_slice(&host.request_body).expect("JSON upstream")
}

#[test]
fn an_openai_request_goes_to_an_anthropic_upstream_in_its_api_and_comes_back() {
    let body = r#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#;
    let (mut flow, mut host) = routed(translating_plan(), post(CHAT, body, &[]));
    assert_eq!(host.header(":path"), Some("/v1/messages"));
    assert_eq!(host.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(host.header("x-api-key"), Some("key-K"));
    let sent = sent_body(&host);
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(
        host.header("content-length"),
        Some(host.request_body.len().to_string().as_str())
    );
    // The whole answer waits for its end, and goes back as a chat completion.
    host.headers_sent = true;
    host.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), "999".into()),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Pause);
    host.response_body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#.to_vec();
    let len = host.response_body.len();
    assert_eq!(flow.on_response_body(&mut host, len, true), Flow::Continue);
    let answer: Value = serde_json::from_slice(&host.response_body).expect("JSON");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "hello");
    assert_eq!(answer["usage"]["total_tokens"], 7);
    assert_eq!(
        host.response_header("content-length"),
        Some(host.response_body.len().to_string().as_str())
    );
}

#[test]
fn an_anthropic_stream_from_an_openai_upstream_is_translated_chunk_by_chunk() {
    let body = r#"{"model":"gpt","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (mut flow, mut host) = routed(
        translating_plan(),
        post("/v1/messages", body, &[("anthropic-version", "2023-06-01")]),
    );
    assert_eq!(host.header(":path"), Some("/v1/chat/completions"));
    assert_eq!(host.header("anthropic-version"), None);
    assert_eq!(
        sent_body(&host)["stream_options"],
        json!({"include_usage": true})
    );
    host.headers_sent = true;
    host.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/event-stream".into()),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    host.response_body =
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"he\"}}]}\n\nda"
            .to_vec();
    let len = host.response_body.len();
    flow.on_response_body(&mut host, len, false);
    let out = String::from_utf8(host.response_body.clone()).expect("UTF-8");
    assert!(out.starts_with("event: message_start\n"), "{out}");
    assert!(out.contains("\"text_delta\""), "{out}");
    host.response_body = b"ta: [DONE]\n\n".to_vec();
    flow.on_response_body(&mut host, 12, true);
    let out = String::from_utf8(host.response_body.clone()).expect("UTF-8");
    assert!(
        out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{out}"
    );
}

#[test]
fn same_api_and_unset_formats_keep_the_byte_exact_edit() {
    let body = r#"{"model":"gpt", "messages":[{"role":"user","content":"hi"}]}"#;
    let (_, host) = routed(translating_plan(), post(CHAT, body, &[]));
    assert_eq!(
        String::from_utf8_lossy(&host.request_body),
        body.replace("\"gpt\"", "\"gpt-x\"")
    );
    let body = r#"{"model":"plain", "max_tokens": 5, "messages":[{"role":"user","content":"hi"}]}"#;
    let (_, host) = routed(translating_plan(), post("/v1/messages", body, &[]));
    assert_eq!(host.header(":path"), Some("/v1/messages"));
}

#[test]
fn what_cannot_be_translated_is_a_400_naming_it() {
    let body = r#"{"model":"claude","n":3,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut host = post(CHAT, body, &[]);
    let mut flow = flow_for(translating_plan());
    run(&mut flow, &mut host);
    let reply = host.local_reply.as_ref().expect("a reply");
    assert_eq!(reply.status, 400);
    let v: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(v["error"]["code"], "untranslatable_field");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("`n` ")));
    // An endpoint without a counterpart cannot go to an Anthropic upstream: routing skips
    // it, as a target without a capability, and says why.
    let mut host = post("/v1/embeddings", r#"{"model":"claude","input":"x"}"#, &[]);
    let mut flow = flow_for(translating_plan());
    run(&mut flow, &mut host);
    let reply = host.local_reply.as_ref().expect("a reply");
    assert_eq!(reply.status, 503);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("which has no embeddings endpoint"), "{text}");
}

#[test]
fn a_bad_format_or_output_limit_is_refused_naming_the_field() {
    let refused = |up: Value| {
        let config = json!({"upstreams": {"u": up}, "default": {"targets": [{"upstream": "u", "model": "m"}]}});
        match compile(config.to_string().as_bytes(), &|_| None) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.field,
        }
    };
    assert_eq!(refused(json!({"format": "ollama"})), "upstreams.u.format");
    assert_eq!(
        refused(json!({"default_max_tokens": 0})),
        "upstreams.u.default_max_tokens"
    );
}
