//! Native tests of the context-window failover: which 400 bodies count, which candidates
//! the next attempt may go to, and the attempt filter holding a 400, marking it for the
//! retry and handing the shortened list to the next attempt, against `MockHost`.

use std::rc::Rc;

use serde_json::json;

use super::*;
use crate::config::capabilities::Capability;
use crate::config::compile;
use crate::health::HealthBoard;
use crate::host::mock::MockHost;
use crate::metrics::skips::stat_name;
use crate::metrics::Metrics;
use crate::pipeline::attempt::{encode_failover, parse_failover, AttemptFlow, HEADER_FAILOVER};
use crate::pipeline::{Flow, StreamFlow};

/// Alias `m`: a/s1 (8192), a/s2 (8192), b/open (undeclared), b/big (128000), a/s3 (4096).
fn plan() -> Rc<Plan> {
    let w = |n: u64| json!({"context_window": n});
    let cfg = json!({
        "upstreams": {"a": {"cluster": "ca"}, "b": {"cluster": "cb"}},
        "models": {"m": {"targets": [
            {"upstream": "a", "model": "s1", "capabilities": w(8192)},
            {"upstream": "a", "model": "s2", "capabilities": w(8192)},
            {"upstream": "b", "model": "open"},
            {"upstream": "b", "model": "big", "capabilities": w(128_000)},
            {"upstream": "a", "model": "s3", "capabilities": w(4096)}
        ]}},
        "failover": {"cluster": "llm_failover", "max_attempts": 5}
    });
    Rc::new(compile(cfg.to_string().as_bytes(), &|_| None).expect("config compiles"))
}

fn key(t: &str) -> String {
    let (u, m) = t.split_once('/').expect("upstream/model");
    HealthBoard::key(u, m)
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| key(n)).collect()
}

const OPENAI: &str = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;

#[test]
fn context_length_errors_are_recognised_by_code_and_message() {
    for body in [
        OPENAI,
        r#"{"error":{"message":"Your input exceeds the context window of this model.","code":"context_length_exceeded"}}"#,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
        r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","param":null,"code":400}"#,
        r#"{"detail":"Prompt contains 40000 tokens, too large for model with 32768 maximum context length"}"#,
        r#"{"error":"context_length_exceeded"}"#,
        r#"{"error":{"code":"CONTEXT_LENGTH_EXCEEDED"}}"#,
    ] {
        assert!(is_context_length_error(body.as_bytes()), "{body}");
    }
    for body in [
        r#"{"error":{"message":"Invalid value for 'temperature': 3.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#,
        r#"{"error":{"message":"max_tokens is too large: 9000. This model supports at most 4096 completion tokens."}}"#,
        // A client's prompt quoted elsewhere in the error is not the error's own text.
        r#"{"error":{"message":"bad request","param":"maximum context length"},"echo":"prompt is too long"}"#,
        "prompt is too long",
        "",
        "[]",
        r#"{"error":{"message":42,"code":["context_length_exceeded"]}}"#,
    ] {
        assert!(!is_context_length_error(body.as_bytes()), "{body}");
    }
    let huge = format!(
        r#"{{"error":{{"code":"context_length_exceeded","message":"{}"}}}}"#,
        "x".repeat(MAX_ERROR_BODY)
    );
    assert!(!is_context_length_error(huge.as_bytes()));
}

#[test]
fn the_next_candidates_are_those_with_a_larger_or_undeclared_window() {
    let p = plan();
    let all = keys(&["a/s1", "a/s2", "b/open", "b/big", "a/s3"]);
    // s1 (8192) failed: s2 (8192) and s3 (4096) are left out; open and big stay.
    assert_eq!(
        after_context_error(&p, &all, 0),
        Some((keys(&["a/s1", "b/open", "b/big"]), keys(&["a/s2", "a/s3"])))
    );
    // open (undeclared) failed: every later one may be larger.
    assert_eq!(
        after_context_error(&p, &all, 2),
        Some((all.clone(), Vec::new()))
    );
    // big failed: only s3 is later, and smaller.
    assert_eq!(after_context_error(&p, &all, 3), None);
    // The last one, or past the end.
    assert_eq!(after_context_error(&p, &all, 4), None);
    assert_eq!(after_context_error(&p, &all, 9), None);
    // A key the plan does not know counts as undeclared.
    let odd = vec![key("a/s1"), "llm_router.h.x/y".to_owned()];
    assert_eq!(
        after_context_error(&p, &odd, 0),
        Some((odd.clone(), Vec::new()))
    );

    assert!(
        may_have_skipped(&p, &all, 1),
        "s2 follows s1 with the same window"
    );
    assert!(!may_have_skipped(&p, &all, 0));
    let no_windows = keys(&["b/open", "b/open"]);
    assert!(!may_have_skipped(&p, &no_windows, 5));
    let growing = keys(&["a/s3", "a/s1", "b/big"]);
    assert!(!may_have_skipped(&p, &growing, 3));
}

/// Attempt `number` of a request whose failover list is `list`, rewritten and sent.
fn attempt(p: &Rc<Plan>, number: u32, list: &[&str], host: &mut MockHost) -> AttemptFlow {
    attempt_with(AttemptFlow::new(Rc::clone(p)), number, list, host)
}

fn attempt_with(
    mut flow: AttemptFlow,
    number: u32,
    list: &[&str],
    host: &mut MockHost,
) -> AttemptFlow {
    let body = r#"{"model":"s1","messages":[]}"#;
    host.request_headers = vec![
        (":method".to_owned(), "POST".to_owned()),
        (":path".to_owned(), "/v1/chat/completions".to_owned()),
        ("content-length".to_owned(), body.len().to_string()),
        ("x-envoy-attempt-count".to_owned(), number.to_string()),
        (
            HEADER_FAILOVER.to_owned(),
            encode_failover(
                7,
                &keys(list).iter().map(String::as_str).collect::<Vec<_>>(),
            ),
        ),
    ];
    host.request_body = body.as_bytes().to_vec();
    host.headers_sent = false;
    if flow.on_request_headers(host, false) == Flow::Pause {
        assert_eq!(flow.on_request_body(host, body.len(), true), Flow::Continue);
    }
    flow
}

/// The provider answers `status` with `body`; returns what the flow did with the headers
/// and with the body.
fn answer(flow: &mut AttemptFlow, host: &mut MockHost, status: &str, body: &str) -> (Flow, Flow) {
    host.headers_sent = true;
    host.response_headers = vec![
        (":status".to_owned(), status.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
        ("content-length".to_owned(), body.len().to_string()),
    ];
    host.response_body = body.as_bytes().to_vec();
    let headers = flow.on_response_headers(host, false);
    let body = flow.on_response_body(host, body.len(), true);
    (headers, body)
}

const LIST: [&str; 5] = ["a/s1", "a/s2", "b/open", "b/big", "a/s3"];

#[test]
fn a_context_length_400_is_held_marked_and_the_shortened_list_published() {
    let p = plan();
    let mut host = MockHost::default();
    let metrics = Rc::new(Metrics::define(&p, &mut host));
    let flow = AttemptFlow::new(Rc::clone(&p)).with_metrics(Rc::clone(&metrics));
    let mut flow = attempt_with(flow, 1, &LIST, &mut host);
    let flows = answer(&mut flow, &mut host, "400", OPENAI);
    assert_eq!(flows, (Flow::Pause, Flow::Continue), "held, then let go");
    assert_eq!(host.response_header(HEADER_RETRY), Some(RETRY_CONTEXT));
    let published = host.filter_state.get(&state_name(1)).expect("published");
    let (tokens, list) =
        parse_failover(std::str::from_utf8(published).expect("text")).expect("a failover list");
    assert_eq!(tokens, 7);
    assert_eq!(list, keys(&["a/s1", "b/open", "b/big"]));
    // The candidates left out are counted as context-window skips.
    metrics.flush(&mut host);
    for (label, n) in [("a/s2", 1), ("a/s3", 1), ("b/big", 0)] {
        assert_eq!(
            host.metric(&stat_name(label, Capability::ContextWindow)),
            Some(n),
            "{label}"
        );
    }

    // Attempt 2 reads it (filter state is shared by the attempts of one stream) and goes to
    // b/open, not a/s2.
    let mut next = MockHost {
        properties: host.filter_state.clone(),
        ..MockHost::default()
    };
    let _ = attempt(&p, 2, &LIST, &mut next);
    assert_eq!(next.header("x-llm-router-cluster"), Some("cb"));
    assert!(String::from_utf8_lossy(&next.request_body).contains(r#""model":"open""#));

    // Attempt 3 after a 5xx of attempt 2 reads back to attempt 1's list: b/big.
    let mut third = MockHost {
        properties: host.filter_state.clone(),
        ..MockHost::default()
    };
    let _ = attempt(&p, 3, &LIST, &mut third);
    assert!(String::from_utf8_lossy(&third.request_body).contains(r#""model":"big""#));
}

#[test]
fn the_next_candidate_is_marked_without_state_when_nothing_is_skipped() {
    let p = plan();
    let mut host = MockHost::default();
    let mut flow = attempt(&p, 1, &["b/open", "b/big"], &mut host);
    assert_eq!(
        answer(&mut flow, &mut host, "400", OPENAI),
        (Flow::Pause, Flow::Continue)
    );
    assert_eq!(host.response_header(HEADER_RETRY), Some(RETRY_CONTEXT));
    assert!(host.filter_state.is_empty());
    // Attempt 2 of a list where no window was declared before it reads nothing.
    let mut next = MockHost::default();
    let _ = attempt(&p, 2, &["b/open", "b/big"], &mut next);
    assert!(String::from_utf8_lossy(&next.request_body).contains(r#""model":"big""#));
}

#[test]
fn other_answers_are_never_marked() {
    let p = plan();
    let plain = r#"{"error":{"message":"Invalid value for 'temperature'","code":"invalid_value"}}"#;
    let cases = [
        // A plain 400: held (a larger window is left), let go unmarked.
        (&LIST[..], "400", plain, Flow::Pause),
        // A context error without a larger candidate left: not even held.
        (&["b/big", "a/s3"][..], "400", OPENAI, Flow::Continue),
        (&["a/s1"][..], "400", OPENAI, Flow::Continue),
        // Other statuses with the same body.
        (&LIST[..], "200", OPENAI, Flow::Continue),
        (&LIST[..], "413", OPENAI, Flow::Continue),
        (&LIST[..], "500", OPENAI, Flow::Continue),
    ];
    for (list, status, body, at_headers) in cases {
        let mut host = MockHost::default();
        let mut flow = attempt(&p, 1, list, &mut host);
        let flows = answer(&mut flow, &mut host, status, body);
        assert_eq!(flows, (at_headers, Flow::Continue), "{status} {list:?}");
        assert_eq!(
            host.response_header(HEADER_RETRY),
            None,
            "{status} {list:?}"
        );
        assert!(host.filter_state.is_empty());
    }
}

#[test]
fn a_held_400_ends_at_trailers_or_when_too_large() {
    let p = plan();
    // The body ends in trailers (Envoy's decompressor adds them).
    let mut host = MockHost::default();
    let mut flow = attempt(&p, 1, &LIST, &mut host);
    host.headers_sent = true;
    host.response_headers = vec![(":status".to_owned(), "400".to_owned())];
    host.response_body = OPENAI.as_bytes().to_vec();
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        flow.on_response_body(&mut host, OPENAI.len(), false),
        Flow::Pause
    );
    assert_eq!(flow.on_response_trailers(&mut host), Flow::Continue);
    assert_eq!(host.response_header(HEADER_RETRY), Some(RETRY_CONTEXT));

    // Without a body: not held (nothing would follow to let it go).
    let mut host = MockHost::default();
    let mut flow = attempt(&p, 1, &LIST, &mut host);
    host.headers_sent = true;
    host.response_headers = vec![(":status".to_owned(), "400".to_owned())];
    assert_eq!(flow.on_response_headers(&mut host, true), Flow::Continue);

    // Declared too large: not held. Growing too large while held: let go unread.
    let mut host = MockHost::default();
    let mut flow = attempt(&p, 1, &LIST, &mut host);
    host.headers_sent = true;
    host.response_headers = vec![
        (":status".to_owned(), "400".to_owned()),
        (
            "content-length".to_owned(),
            (MAX_ERROR_BODY + 1).to_string(),
        ),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    let mut host = MockHost::default();
    let mut flow = attempt(&p, 1, &LIST, &mut host);
    host.headers_sent = true;
    host.response_headers = vec![(":status".to_owned(), "400".to_owned())];
    host.response_body = OPENAI.as_bytes().to_vec();
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        flow.on_response_body(&mut host, MAX_ERROR_BODY + 1, false),
        Flow::Continue
    );
    assert_eq!(host.response_header(HEADER_RETRY), None);
    // Later chunks pass as usual.
    assert_eq!(flow.on_response_body(&mut host, 10, true), Flow::Continue);
}

#[test]
fn a_published_list_that_cannot_be_read_falls_back_to_the_header() {
    let p = plan();
    let mut host = MockHost::default();
    host.properties
        .insert(state_name(1), b"not a list".to_vec());
    let _ = attempt(&p, 2, &LIST, &mut host);
    assert!(String::from_utf8_lossy(&host.request_body).contains(r#""model":"s2""#));
}

#[test]
fn the_client_never_gets_the_retry_mark() {
    use crate::pipeline::attempt::{served, HEADER_SERVED};
    use crate::pipeline::RequestFlow;
    // A context-length 400 that Envoy did not retry (a route without retriable_headers):
    // the client gets the provider's answer without the router's mark.
    let p = plan();
    let body = r#"{"model":"m","messages":[]}"#;
    let mut host = MockHost::with_request(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("content-length", &body.len().to_string()),
        ],
        body.as_bytes(),
    );
    let mut flow = RequestFlow::new(Rc::clone(&p), 1);
    assert_eq!(flow.on_request_headers(&mut host, false), Flow::Pause);
    assert_eq!(
        flow.on_request_body(&mut host, body.len(), true),
        Flow::Continue
    );
    assert_eq!(host.header("x-llm-router-cluster"), Some("llm_failover"));
    host.headers_sent = true;
    host.response_headers = vec![
        (":status".to_owned(), "400".to_owned()),
        (HEADER_RETRY.to_owned(), RETRY_CONTEXT.to_owned()),
        (HEADER_SERVED.to_owned(), served(1, &key("a/s1"))),
    ];
    assert_eq!(flow.on_response_headers(&mut host, false), Flow::Continue);
    assert_eq!(host.response_header(HEADER_RETRY), None);
    assert_eq!(host.response_header(":status"), Some("400"));
    assert_eq!(host.response_header("x-llm-router-model"), Some("s1"));
}

#[test]
fn the_context_retry_is_off_where_envoy_would_crash() {
    assert!(!envoy_supports_context_retry(None));
    assert!(!envoy_supports_context_retry(Some((1, 36))));
    assert!(!envoy_supports_context_retry(Some((0, 99))));
    assert!(envoy_supports_context_retry(Some((1, 37))));
    assert!(envoy_supports_context_retry(Some((1, 40))));
    assert!(envoy_supports_context_retry(Some((2, 0))));
    // Off: a context-length 400 is neither held nor marked.
    let p = plan();
    let mut host = MockHost::default();
    let flow = AttemptFlow::new(Rc::clone(&p)).with_context_retry(false);
    let mut flow = attempt_with(flow, 1, &LIST, &mut host);
    assert_eq!(
        answer(&mut flow, &mut host, "400", OPENAI),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(host.response_header(HEADER_RETRY), None);
    assert!(host.filter_state.is_empty());
}
