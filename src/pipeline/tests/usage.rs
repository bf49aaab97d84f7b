//! The response side of a request: `/v1/models`, `stream_options.include_usage` added and
//! its usage-only chunk removed, `x-llm-router-cost`, and the access-log record published as
//! filter state.

use super::*;
use crate::audit::STATE_LOG;
use crate::pipeline::answer::HEADER_COST;

/// `test_config` with usage reporting on and a priced alias.
fn usage_plan(include_stream_usage: bool, cost_header: bool) -> Plan {
    let mut config = test_config();
    config["models"]["priced"] = json!({"targets": [{"upstream": "openai", "model": "p-1",
        "price": {"input": 2.0, "output": 8.0, "cached_input": 0.5}}]});
    config["usage"] =
        json!({"include_stream_usage": include_stream_usage, "cost_header": cost_header});
    plan_json(&config)
}

fn get(path: &str, extra: &[(&str, &str)]) -> MockHost {
    let mut headers = vec![(":method", "GET"), (":path", path), (":authority", "r")];
    headers.extend_from_slice(extra);
    MockHost::with_request(&headers, b"")
}

/// The upstream answers with these headers.
fn answer(flow: &mut RequestFlow, host: &mut MockHost, headers: &[(&str, &str)]) -> Flow {
    host.headers_sent = true;
    host.response_headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    flow.on_response_headers(host, false)
}

/// One response body chunk; returns the flow and what the client gets of it.
fn body_chunk(
    flow: &mut RequestFlow,
    host: &mut MockHost,
    data: &[u8],
    end: bool,
) -> (Flow, Vec<u8>) {
    host.response_body = data.to_vec();
    let f = flow.on_response_body(host, data.len(), end);
    (f, host.response_body.clone())
}

fn state(host: &MockHost, name: &str) -> Value {
    let bytes = host
        .filter_state
        .get(name)
        .unwrap_or_else(|| panic!("no filter state {name}"));
    serde_json::from_slice(bytes).expect("filter state is JSON")
}

const SSE: &[(&str, &str)] = &[(":status", "200"), ("content-type", "text/event-stream")];
const USAGE_CHUNK: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":5,\"total_tokens\":35,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n";

#[test]
fn models_are_answered_from_the_configuration() {
    let mut flow = flow_for(test_plan());
    let mut host = get("/v1/models", &[]);
    assert_eq!(flow.on_request_headers(&mut host, true), Flow::Pause);
    let r = host.local_reply.clone().expect("answered");
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "auto");
    assert!(ids.contains(&"gpt-4o") && ids.contains(&"claude"));
    flow.on_log(&mut host);
    let log = state(&host, STATE_LOG);
    assert_eq!(
        (log["endpoint"].as_str(), log["status"].as_u64()),
        (Some("models"), Some(200))
    );

    let mut host = get("/v1/models/nope", &[]);
    let mut flow = flow_for(test_plan());
    flow.on_request_headers(&mut host, true);
    assert_eq!(reply(&host).0, 404);

    // Off: the request goes on to Envoy's route.
    let mut config = test_config();
    config["models_endpoint"] = json!(false);
    let mut flow = flow_for(plan_json(&config));
    let mut host = get("/v1/models", &[]);
    assert_eq!(flow.on_request_headers(&mut host, true), Flow::Continue);
    assert!(host.local_reply.is_none());
    flow.on_log(&mut host);
    assert!(host.filter_state.is_empty());
}

#[test]
fn include_usage_is_added_to_streaming_chat_only_when_asked_for() {
    let cases = [
        // (include_stream_usage, path, body, stream_options the upstream gets)
        (
            true,
            CHAT,
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
            Some(json!({"include_usage": true})),
        ),
        (
            true,
            "/v1/completions",
            r#"{"model":"gpt-4o","stream":true,"prompt":"x"}"#,
            Some(json!({"include_usage": true})),
        ),
        (
            true,
            CHAT,
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}"#,
            Some(json!({"include_obfuscation": false, "include_usage": true})),
        ),
        (
            true,
            CHAT,
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"messages":[]}"#,
            Some(json!({"include_usage": true})),
        ),
        // The client asked itself: untouched.
        (
            true,
            CHAT,
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            Some(json!({"include_usage": true})),
        ),
        (true, CHAT, r#"{"model":"gpt-4o","messages":[]}"#, None),
        (
            true,
            "/v1/responses",
            r#"{"model":"gpt-4o","stream":true,"input":"x"}"#,
            None,
        ),
        (
            false,
            CHAT,
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
            None,
        ),
    ];
    for (on, path, body, want) in cases {
        let (_, host) = routed(usage_plan(on, false), post(path, body));
        let sent: Value = serde_json::from_str(body_str(&host)).unwrap();
        assert_eq!(sent.get("stream_options").cloned(), want, "{path} {body}");
        assert_eq!(
            host.header("content-length"),
            Some(host.request_body.len().to_string().as_str())
        );
        if want.is_none() || body.contains(r#""include_usage":true"#) {
            assert_eq!(body_str(&host), body, "nothing else changes");
        }
    }
}

#[test]
fn the_usage_chunk_the_router_asked_for_is_removed_from_the_stream() {
    let body = r#"{"model":"priced","stream":true,"messages":[]}"#;
    let (mut flow, mut host) = routed(usage_plan(true, true), chat(body));
    host.response_headers = vec![];
    let mut sse = SSE.to_vec();
    sse.push(("content-length", "999"));
    assert_eq!(
        answer(&mut flow, &mut host, &sse),
        Flow::Continue,
        "streams are never held"
    );
    assert_eq!(
        host.response_header("content-length"),
        None,
        "events are removed: no length"
    );
    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
    assert_eq!(
        body_chunk(&mut flow, &mut host, first.as_bytes(), false),
        (Flow::Continue, first.as_bytes().to_vec())
    );
    // The usage chunk cut in two, then [DONE].
    let (a, b) = USAGE_CHUNK.split_at(40);
    assert_eq!(body_chunk(&mut flow, &mut host, a.as_bytes(), false).1, b"");
    let rest = format!("{b}data: [DONE]\n\n");
    assert_eq!(
        body_chunk(&mut flow, &mut host, rest.as_bytes(), true).1,
        b"data: [DONE]\n\n"
    );
    assert_eq!(
        host.response_header(HEADER_COST),
        None,
        "no cost header on streams"
    );
    flow.on_log(&mut host);
    let usage = state(&host, STATE_LOG);
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["cached_tokens"].as_u64()
        ),
        (Some(30), Some(10))
    );
    let cost = (20.0 * 2.0 + 10.0 * 0.5 + 5.0 * 8.0) / 1e6;
    assert!(
        (usage["cost"].as_f64().unwrap() - cost).abs() < 1e-12,
        "{usage}"
    );
    assert_eq!(state(&host, STATE_LOG)["total_tokens"].as_u64(), Some(35));
}

#[test]
fn a_client_that_asked_for_usage_keeps_the_chunk_and_nothing_is_held() {
    let body =
        r#"{"model":"priced","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let (mut flow, mut host) = routed(usage_plan(true, false), chat(body));
    answer(&mut flow, &mut host, SSE);
    let (a, b) = USAGE_CHUNK.split_at(40);
    for part in [a, b] {
        assert_eq!(
            body_chunk(&mut flow, &mut host, part.as_bytes(), false).1,
            part.as_bytes()
        );
    }
    body_chunk(&mut flow, &mut host, b"data: [DONE]\n\n", true);
    flow.on_log(&mut host);
    assert_eq!(
        state(&host, STATE_LOG)["completion_tokens"].as_u64(),
        Some(5)
    );
}

#[test]
fn the_cost_header_waits_for_the_end_of_a_priced_answer() {
    let answer_body = br#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100}}"#;
    let (mut flow, mut host) = routed(
        usage_plan(false, true),
        chat(r#"{"model":"priced","messages":[]}"#),
    );
    let json = [(":status", "200"), ("content-type", "application/json")];
    assert_eq!(
        answer(&mut flow, &mut host, &json),
        Flow::Pause,
        "headers wait"
    );
    assert_eq!(
        host.response_header(HEADER_UPSTREAM),
        Some("openai"),
        "stamped meanwhile"
    );
    let (first, _) = answer_body.split_at(30);
    assert_eq!(
        body_chunk(&mut flow, &mut host, first, false).0,
        Flow::Pause
    );
    // At the end Envoy hands over everything it kept.
    assert_eq!(
        body_chunk(&mut flow, &mut host, answer_body, true).0,
        Flow::Continue
    );
    assert_eq!(host.response_header(HEADER_COST), Some("0.0028"));
    assert_eq!(
        host.response_body,
        answer_body.to_vec(),
        "the body is untouched"
    );

    // Unpriced target, error status, a stream, headers that end the stream: never held.
    for (model, headers, end) in [
        ("gpt-4o", &json[..], false),
        (
            "priced",
            &[(":status", "500"), ("content-type", "application/json")][..],
            false,
        ),
        ("priced", SSE, false),
        ("priced", &json[..], true),
    ] {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let (mut flow, mut host) = routed(usage_plan(false, true), chat(&body));
        host.headers_sent = true;
        host.response_headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(
            flow.on_response_headers(&mut host, end),
            Flow::Continue,
            "{model} {headers:?}"
        );
        if !end {
            assert_eq!(
                body_chunk(&mut flow, &mut host, answer_body, true).0,
                Flow::Continue
            );
        }
        assert_eq!(host.response_header(HEADER_COST), None);
    }
}

/// A held answer behind Envoy's decompressor: the last chunk passes without `end_of_stream`
/// and Envoy gives the trailers only once this filter goes on, so the body ends where its
/// JSON closes.
#[test]
fn a_held_answer_ends_where_its_json_closes() {
    let answer_body = br#"{"choices":[{"message":{"content":"}]\"{"}}],"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100}}"#;
    let json = [(":status", "200"), ("content-type", "application/json")];
    let priced = || {
        routed(
            usage_plan(false, true),
            chat(r#"{"model":"priced","messages":[]}"#),
        )
    };
    let (mut flow, mut host) = priced();
    assert_eq!(answer(&mut flow, &mut host, &json), Flow::Pause);
    // Envoy keeps every chunk: each callback sees all of the body so far.
    for cut in [1, 30, answer_body.len() - 1] {
        assert_eq!(
            body_chunk(&mut flow, &mut host, &answer_body[..cut], false).0,
            Flow::Pause,
            "{cut}"
        );
        assert_eq!(host.response_header(HEADER_COST), None);
    }
    assert_eq!(
        body_chunk(&mut flow, &mut host, answer_body, false).0,
        Flow::Continue,
        "the object closed"
    );
    assert_eq!(host.response_header(HEADER_COST), Some("0.0028"));
    assert_eq!(host.response_body, answer_body.to_vec(), "untouched");
    // What follows passes and changes nothing.
    assert_eq!(
        body_chunk(&mut flow, &mut host, b"\n{", false).0,
        Flow::Continue
    );
    assert_eq!(flow.on_response_trailers(&mut host), Flow::Continue);
    flow.on_log(&mut host);
    assert_eq!(state(&host, STATE_LOG)["total_tokens"].as_u64(), Some(1100));

    // Trailers from the upstream itself reach a held body that never closed: read then.
    let (mut flow, mut host) = priced();
    assert_eq!(answer(&mut flow, &mut host, &json), Flow::Pause);
    let cut = answer_body.len() - 1;
    body_chunk(&mut flow, &mut host, &answer_body[..cut], false);
    assert_eq!(flow.on_response_trailers(&mut host), Flow::Continue);
    assert_eq!(host.response_header(HEADER_COST), Some("0.0028"));

    // A held body that is no JSON object or array goes on at once (no usage, no cost).
    let (mut flow, mut host) = priced();
    assert_eq!(answer(&mut flow, &mut host, &json), Flow::Pause);
    assert_eq!(
        body_chunk(&mut flow, &mut host, b"upstream says hi", false).0,
        Flow::Continue
    );
    assert_eq!(host.response_header(HEADER_COST), None);
}

#[test]
fn the_record_names_the_decision_and_hashes_the_key() {
    let mut host =
        chat(r#"{"model":"claude","messages":[{"role":"user","content":"review this contract"}]}"#);
    host.request_headers
        .push(("x-request-id".to_owned(), "rid-7".to_owned()));
    host.now_nanos = 1_795_447_941_806_000_000;
    let (mut flow, mut host) = routed(test_plan(), host);
    host.now_nanos += 30_000_000;
    answer(
        &mut flow,
        &mut host,
        &[(":status", "200"), ("content-type", "application/json")],
    );
    body_chunk(
        &mut flow,
        &mut host,
        br#"{"usage":{"input_tokens":12,"output_tokens":3}}"#,
        true,
    );
    host.now_nanos += 20_000_000;
    host.set_int_property("response.code", 200);
    flow.on_log(&mut host);
    let log = state(&host, STATE_LOG);
    assert_eq!(log["target"], "anthropic/claude-sonnet-4-5");
    assert_eq!(log["rule"], "model:claude");
    assert_eq!(log["tags"], json!(["legal"]));
    assert_eq!(log["time"], "2026-11-23T15:32:21.806Z");
    assert_eq!(log["request_id"], "rid-7");
    // `authorization: Bearer client-secret` is the first credential the client sent.
    assert_eq!(log["client_key_id"], crate::sha256::key_id("client-secret"));
    assert_eq!(
        (log["requested_model"].as_str(), log["endpoint"].as_str()),
        (Some("claude"), Some("chat"))
    );
    assert_eq!(
        (log["ttfb_ms"].as_u64(), log["latency_ms"].as_u64()),
        (Some(30), Some(50))
    );
    assert_eq!(
        (log["status"].as_u64(), log["attempts"].as_u64()),
        (Some(200), Some(1))
    );
    assert_eq!(
        (log["prompt_tokens"].as_u64(), log["total_tokens"].as_u64()),
        (Some(12), Some(15))
    );
    assert_eq!(log["cost"], Value::Null, "no price");
    let text = String::from_utf8(host.filter_state[STATE_LOG].clone()).unwrap();
    assert!(
        !text.contains("client-secret") && !text.contains('\n'),
        "{text}"
    );
}

#[test]
fn refused_requests_are_recorded_and_the_log_can_be_turned_off() {
    let (status, _, mut flow, mut host) =
        refused(test_plan(), chat(r#"{"model":"nope","messages":[]}"#));
    assert_eq!(status, 404);
    flow.on_log(&mut host);
    let log = state(&host, STATE_LOG);
    assert_eq!(
        (log["status"].as_u64(), log["error"].as_str()),
        (Some(404), Some("model_not_found"))
    );
    assert!(log.get("target").is_none());
    assert!(log.get("prompt_tokens").is_none_or(Value::is_null));
    assert_eq!(host.filter_state.len(), 1, "one filter state per request");

    let mut config = test_config();
    config["access_log"] = json!(false);
    let (mut flow, mut host) = routed(
        plan_json(&config),
        chat(r#"{"model":"gpt-4o","messages":[]}"#),
    );
    answer(&mut flow, &mut host, &[(":status", "200")]);
    flow.on_log(&mut host);
    assert!(host.filter_state.is_empty());
}
