//! Capabilities in the request flow: a request goes to the first candidate that can serve
//! it (the body names that one), each skip is counted on the skipped target's
//! `capability_skips.<reason>` stat, and a request no candidate can serve gets the 503
//! naming them, counted too.

use super::*;
use crate::config::capabilities::Capability;
use crate::metrics::skips::stat_name;
use crate::metrics::Metrics;

/// Alias `m`: `openai/text-only` (no vision, 8192 window), then `local/vision-ok`.
fn caps_plan() -> Plan {
    let mut config = test_config();
    config["capabilities"] = json!({"vision-ok": {"vision": true, "streaming": true}});
    config["models"]["m"] = json!({"targets": [
        {"upstream": "openai", "model": "text-only",
         "capabilities": {"vision": false, "context_window": 8192, "streaming": false}},
        {"upstream": "local", "model": "vision-ok"}
    ]});
    plan_json(&config)
}

fn with_metrics(plan: Plan) -> (RequestFlow, Rc<Metrics>, MockHost) {
    let plan = Rc::new(plan);
    let mut host = MockHost::default();
    let metrics = Rc::new(Metrics::define(&plan, &mut host));
    let flow = RequestFlow::new(Rc::clone(&plan), 7).with_metrics(Rc::clone(&metrics));
    (flow, metrics, host)
}

/// A skip counter's label, reason and value.
type Counted = (String, Capability, i64);

/// Runs `body` through a flow with stats; returns the flow results, the host and every
/// skip counter that is not 0 (label, reason, value).
fn send(body: &str) -> ((Flow, Flow), MockHost, Vec<Counted>) {
    let (mut flow, metrics, defined) = with_metrics(caps_plan());
    let mut host = chat(body);
    host.metrics = defined.metrics;
    let flows = run(&mut flow, &mut host);
    metrics.flush(&mut host);
    let mut counted = Vec::new();
    for label in ["openai/text-only", "local/vision-ok"] {
        for c in Capability::ALL {
            let v = host.metric(&stat_name(label, c)).expect("defined");
            if v != 0 {
                counted.push((label.to_owned(), c, v));
            }
        }
    }
    (flows, host, counted)
}

const IMAGE: &str = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}]}"#;

#[test]
fn a_request_goes_to_the_first_candidate_that_can_serve_it_and_the_skip_is_counted() {
    let (flows, host, counted) = send(IMAGE);
    assert_eq!(flows, (Flow::Pause, Flow::Continue));
    assert_eq!(host.header("x-llm-router-cluster"), Some("vllm"));
    assert!(
        body_str(&host).contains(r#""model":"vision-ok""#),
        "{}",
        body_str(&host)
    );
    assert_eq!(
        counted,
        [("openai/text-only".to_owned(), Capability::Vision, 1)]
    );

    // Streaming and the window: the same target, other reasons.
    let (_, host, counted) =
        send(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#);
    assert!(body_str(&host).contains(r#""model":"vision-ok""#));
    assert_eq!(
        counted,
        [("openai/text-only".to_owned(), Capability::Streaming, 1)]
    );
    let (_, host, counted) =
        send(r#"{"model":"m","max_tokens":9000,"messages":[{"role":"user","content":"hi"}]}"#);
    assert!(body_str(&host).contains(r#""model":"vision-ok""#));
    assert_eq!(
        counted,
        [("openai/text-only".to_owned(), Capability::ContextWindow, 1)]
    );

    // A request that fits is not moved and counts nothing.
    let (_, host, counted) = send(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    assert!(body_str(&host).contains(r#""model":"text-only""#));
    assert!(counted.is_empty());
}

#[test]
fn no_capable_candidate_is_a_503_naming_each_and_counted() {
    let body = r#"{"model":"m","provider":{"require_parameters":true},"response_format":{"type":"json_object"},"messages":[{"role":"user","content":"hi"}]}"#;
    let ((_, last), host, counted) = send(body);
    assert_eq!(last, Flow::Pause);
    let (status, v) = reply(&host);
    assert_eq!(status, 503);
    assert_eq!(v["error"]["code"], "no_available_target");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        "No target is available for this request (model:m): \
         openai/text-only: json_output not declared (provider.require_parameters); \
         local/vision-ok: json_output not declared (provider.require_parameters)."
    );
    assert_eq!(
        counted,
        [
            ("openai/text-only".to_owned(), Capability::JsonOutput, 1),
            ("local/vision-ok".to_owned(), Capability::JsonOutput, 1)
        ]
    );
    // The upstream headers were never touched.
    assert_eq!(host.header("x-llm-router-cluster"), None);
}

#[test]
fn require_parameters_is_a_router_field_and_must_be_a_boolean() {
    let body =
        r#"{"model":"m","provider":{"require_parameters":true},"stream":true,"messages":[]}"#;
    let (_, host, counted) = send(body);
    // vision-ok declares streaming (by model id): it serves; provider is cut from the body.
    assert_eq!(
        body_str(&host),
        r#"{"model":"vision-ok","stream":true,"messages":[]}"#
    );
    assert_eq!(
        counted,
        [("openai/text-only".to_owned(), Capability::Streaming, 1)]
    );
    let (status, v, _, _) = refused(
        caps_plan(),
        chat(r#"{"model":"m","provider":{"require_parameters":"yes"},"messages":[]}"#),
    );
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "provider.require_parameters");
    assert_eq!(v["error"]["code"], "invalid_type");
}
