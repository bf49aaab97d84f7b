//! Header values that are not UTF-8, from clients and providers: passed through as they came
//! unless the router must read them, then a 400 naming the header; never a panic.

use super::*;

use crate::sha256::sha256_hex;

const ODD: &[u8] = b"\xff\xfe \xc3\x28 \xed\xa0\x80";

fn with_odd(mut host: MockHost, name: &str) -> MockHost {
    host.request_headers.retain(|(k, _)| k != name);
    host.raw_request_headers
        .push((name.to_owned(), ODD.to_vec()));
    host
}

fn keyed_plan() -> Plan {
    let mut config = test_config();
    config["clients"] = json!({
        "identity_header": "x-client-name",
        "keys": [{"name": "team-a", "key_sha256": sha256_hex(b"sk-team-a")}]
    });
    plan_json(&config)
}

#[test]
fn an_odd_header_the_router_does_not_read_passes_through_as_it_came() {
    for path in [CHAT, "/v1/embeddings", "/v1/messages"] {
        let host = with_odd(
            post(path, r#"{"model":"gpt-4o","input":"x"}"#),
            "user-agent",
        );
        let (_, host) = routed(test_plan(), host);
        assert_eq!(
            host.raw_request_headers,
            [("user-agent".to_owned(), ODD.to_vec())],
            "{path}"
        );
    }
    // Passthrough and /v1/models: untouched / answered.
    let mut host = with_odd(post("/v1/files", "{}"), "user-agent");
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Continue);
    assert_eq!(host.raw_request_headers.len(), 1);
    let mut host = with_odd(
        MockHost::with_request(&[(":method", "GET"), (":path", "/v1/models")], b""),
        "user-agent",
    );
    let mut flow = flow_for(test_plan());
    flow.on_request_headers(&mut host, true);
    assert_eq!(host.local_reply.as_ref().map(|r| r.status), Some(200));
}

#[test]
fn an_odd_credential_without_clients_never_reaches_the_provider() {
    for name in ["authorization", "x-api-key", "api-key"] {
        let host = with_odd(chat(r#"{"model":"gpt-4o"}"#), name);
        let (_, host) = routed(test_plan(), host);
        assert!(
            host.raw_request_headers.is_empty(),
            "{name}: {:?}",
            host.raw_request_headers
        );
        assert_eq!(
            host.header("authorization"),
            Some("Bearer key-OPENAI_API_KEY")
        );
    }
}

#[test]
fn an_odd_value_in_a_header_the_router_reads_is_a_400_naming_it() {
    // A rule's header, on a routed endpoint.
    let host = with_odd(chat(r#"{"model":"auto"}"#), "x-team");
    let (status, v, _, _) = refused(test_plan(), host);
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "invalid_header_value");
    assert!(v["error"]["message"].as_str().unwrap().contains("`x-team`"));
    // The body's framing headers.
    let host = with_odd(chat(r#"{"model":"auto"}"#), "content-encoding");
    assert_eq!(refused(test_plan(), host).0, 400);
    // With clients: the credentials and the identity header, on every path.
    for name in ["authorization", "x-api-key", "api-key", "x-client-name"] {
        for path in [CHAT, "/v1/files"] {
            let host = with_odd(post(path, r#"{"model":"auto"}"#), name);
            let (status, v, _, host) = refused(keyed_plan(), host);
            assert_eq!(status, 400, "{name} {path}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(&format!("`{name}`")), "{message}");
            assert!(!message.contains("client-secret"), "{message}");
            assert_eq!(host.request_body, br#"{"model":"auto"}"#);
        }
    }
    // Without clients, a credential is not read: no refusal (see the test above).
}

#[test]
fn odd_provider_headers_are_ignored_or_removed_never_trusted() {
    let (mut flow, mut host) = routed(test_plan(), chat(r#"{"model":"gpt-4o"}"#));
    host.response_headers = vec![(":status".to_owned(), "200".to_owned())];
    host.raw_response_headers = vec![
        ("x-odd".to_owned(), ODD.to_vec()),
        ("content-type".to_owned(), ODD.to_vec()),
        ("retry-after".to_owned(), ODD.to_vec()),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    host.response_body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#.to_vec();
    let len = host.response_body.len();
    assert_eq!(flow.on_response_body(&mut host, len, true), Flow::Continue);
    flow.on_log(&mut host);
    // The client still gets the provider's header as it came, and the router's own.
    assert_eq!(
        host.raw_response_headers[0],
        ("x-odd".to_owned(), ODD.to_vec())
    );
    assert_eq!(host.response_header(HEADER_UPSTREAM), Some("openai"));
}

#[test]
fn a_filter_without_configuration_refuses_rather_than_passes() {
    let mut host = chat(r#"{"model":"gpt-4o"}"#);
    let mut flow = super::super::Unconfigured;
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("no_available_target"))
    );
}

#[test]
fn a_routed_body_that_ends_in_trailers_is_refused_not_passed_on() {
    let body = r#"{"model":"gpt-4o"}"#;
    let mut host = chat(body);
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        flow.on_request_body(&mut host, body.len(), false),
        Flow::Pause
    );
    assert_eq!(flow.on_request_trailers(&mut host), Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("unsupported_trailers"))
    );
    assert_eq!(
        host.header("x-llm-router-cluster"),
        None,
        "not routed, not passed on"
    );
    // Not a routed endpoint: trailers pass.
    let mut host = post("/v1/files", body);
    let mut flow = flow_for(test_plan());
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Continue);
    assert_eq!(flow.on_request_trailers(&mut host), Flow::Continue);
}

#[test]
fn an_answer_that_ends_in_trailers_still_gives_its_usage() {
    // Envoy's decompressor ends a decompressed body with trailers: no end-of-stream chunk.
    let (mut flow, mut host) = routed(test_plan(), chat(r#"{"model":"gpt-4o"}"#));
    host.response_headers = vec![
        (":status".to_owned(), "200".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    host.response_body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#.to_vec();
    let len = host.response_body.len();
    flow.on_response_body(&mut host, len, false);
    // At the trailers the host's buffer is no chunk of ours: it must not be read again.
    host.response_body = b"garbage".to_vec();
    assert_eq!(flow.on_response_trailers(&mut host), Flow::Continue);
    flow.on_log(&mut host);
    let usage = host
        .filter_state
        .get(crate::audit::STATE_LOG)
        .expect("usage published");
    let v: Value = serde_json::from_slice(usage).unwrap();
    assert_eq!(
        (v["prompt_tokens"].as_u64(), v["completion_tokens"].as_u64()),
        (Some(3), Some(4))
    );
}
