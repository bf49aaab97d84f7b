//! Admission at the rate-limit service through `RequestFlow` against `MockHost`: the calls
//! made (one descriptor each), the request paused until every answer is in, the verdicts
//! (admitted, over a limit, failed under each failure mode) and the usage report at the end.

use prost::Message;

use super::clients::*;
use super::*;

use crate::ratelimit::proto::{
    Code, DescriptorStatus, Duration, RateLimit, RateLimitRequest, RateLimitResponse,
};

fn service_config(extra: Value) -> Value {
    let mut config = clients_config();
    let mut service = json!({"cluster": "ratelimit", "timeout_ms": 50});
    if let (Some(s), Some(e)) = (service.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    config["rate_limit_service"] = service;
    // team-f: rpm 5, tpm 1000; a target budget on gpt-4o-mini (alias `fast`).
    config["models"]["fast"]["targets"][0]["budget"] = json!({"rpm": 3});
    config
}

fn service_router(extra: Value) -> Router {
    Router::new(plan_json(&service_config(extra)))
}

/// A call as sent: `service/method`, the descriptor's entries, the hits.
type Call = (String, Vec<(String, String)>, u32);

/// Each call made so far.
fn calls(host: &MockHost) -> Vec<Call> {
    host.grpc_calls
        .iter()
        .map(|c| {
            let r = RateLimitRequest::decode(c.message.as_slice()).expect("a RateLimitRequest");
            assert_eq!(r.domain, "llm-router");
            assert_eq!(r.descriptors.len(), 1, "one descriptor per call");
            let entries: Vec<(String, String)> = r.descriptors[0]
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            (
                format!("{}/{}", c.service, c.method),
                entries,
                r.hits_addend,
            )
        })
        .collect()
}

fn ok() -> Vec<u8> {
    RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![],
    }
    .encode_to_vec()
}

fn over(status: Option<DescriptorStatus>) -> Vec<u8> {
    RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses: status.into_iter().collect(),
    }
    .encode_to_vec()
}

/// Delivers the answer `message` (gRPC status 0) or `status` to call `token`.
fn answer(r: &mut Router, flow: &mut RequestFlow, token: u32, status: u32, message: Vec<u8>) {
    let size = message.len();
    r.host.grpc_answer = Some(message);
    flow.on_grpc_response(&mut r.host, token, status, size);
}

const SHOULD: &str = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

#[test]
fn admission_calls_the_service_per_limit_and_waits_for_every_answer() {
    let mut r = service_router(json!({}));
    let (mut flow, flows) = r.send(keyed("sk-team-f", &model("fast")));
    assert_eq!(flows, (Flow::Pause, Flow::Pause), "paused for the service");
    let entries = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        calls(&r.host),
        [
            (
                SHOULD.to_owned(),
                entries(&[("limit", "client_rpm"), ("client", "team-f")]),
                1
            ),
            (
                SHOULD.to_owned(),
                entries(&[("limit", "client_tpm"), ("client", "team-f")]),
                14
            ),
            (
                SHOULD.to_owned(),
                entries(&[("limit", "target_rpm"), ("target", "openai/gpt-4o-mini")]),
                1
            ),
        ]
    );
    let call = &r.host.grpc_calls[0];
    assert_eq!(call.timeout_ms, 50);
    assert_eq!(
        call.upstream,
        crate::ratelimit::proto::grpc_service("ratelimit")
    );
    // Nothing counted in this Envoy's shared data: the ledger is the service's.
    assert!(r
        .host
        .shared
        .keys()
        .all(|k| !k.starts_with("llm_router.c.")));
    // Not sent before every answer is in.
    answer(&mut r, &mut flow, 1, 0, ok());
    answer(&mut r, &mut flow, 3, 0, ok());
    assert_eq!(r.host.resumed, 0);
    assert!(r.host.header("x-llm-router-cluster").is_none());
    answer(&mut r, &mut flow, 2, 0, ok());
    assert_eq!(r.host.resumed, 1);
    assert!(r.host.local_reply.is_none());
    assert_eq!(
        destination(&r.host),
        ("openai-cluster".to_owned(), "gpt-4o-mini".to_owned())
    );
    // A late or repeated answer changes nothing.
    answer(&mut r, &mut flow, 2, 0, ok());
    assert_eq!(r.host.resumed, 1);
    assert_eq!(r.stat("team-f", "requests"), 1);
    assert_eq!(
        r.flushed().metric("llm_router.rate_limit_service.ok"),
        Some(3)
    );
}

#[test]
fn over_limit_is_the_clients_429_with_retry_after_and_rate_limit_headers() {
    let mut r = service_router(json!({}));
    let (mut flow, _) = r.send(keyed("sk-team-f", &model("fast")));
    let status = DescriptorStatus {
        code: Code::OverLimit as i32,
        current_limit: Some(RateLimit {
            requests_per_unit: 5,
        }),
        limit_remaining: 0,
        duration_until_reset: Some(Duration {
            seconds: 12,
            nanos: 0,
        }),
    };
    answer(&mut r, &mut flow, 1, 0, over(Some(status)));
    answer(&mut r, &mut flow, 2, 0, ok());
    answer(&mut r, &mut flow, 3, 0, ok());
    assert_eq!(r.host.resumed, 0);
    let a = error_reply(&r.host);
    assert_eq!(a.status, 429);
    assert_eq!(a.kind().1, "rate_limit_exceeded");
    assert_eq!(a.header("retry-after"), Some("12"));
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("5"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(a.header("x-ratelimit-reset-requests"), Some("12s"));
    assert_eq!(r.stat("team-f", "rate_limited"), 1);
    assert_eq!(r.stat("team-f", "requests"), 0);
    // Without the service's figures (Limitador): a minute, and the configured limit.
    let (mut flow, _) = r.send(keyed("sk-team-f", &model("fast")));
    answer(&mut r, &mut flow, 4, 0, ok());
    answer(&mut r, &mut flow, 5, 0, over(None));
    answer(&mut r, &mut flow, 6, 0, ok());
    let a = error_reply(&r.host);
    assert_eq!((a.status, a.header("retry-after")), (429, Some("60")));
    assert_eq!(a.header("x-ratelimit-limit-tokens"), Some("1000"));
}

#[test]
fn a_failed_service_follows_the_failure_mode() {
    for (mode, want) in [("allow", None), ("deny", Some(503))] {
        let mut r = service_router(json!({"failure_mode": mode}));
        let (mut flow, _) = r.send(keyed("sk-team-f", &model("fast")));
        answer(&mut r, &mut flow, 1, 0, ok());
        // A timeout (DEADLINE_EXCEEDED) and an answer that is no RateLimitResponse.
        answer(&mut r, &mut flow, 2, 4, Vec::new());
        answer(&mut r, &mut flow, 3, 0, b"\xff\xff\xff".to_vec());
        match want {
            None => {
                assert_eq!(r.host.resumed, 1, "{mode}");
                assert!(r.host.local_reply.is_none());
                assert_eq!(
                    r.flushed()
                        .metric("llm_router.rate_limit_service.failure_mode_allowed"),
                    Some(1)
                );
            }
            Some(status) => {
                assert_eq!(r.host.resumed, 0, "{mode}");
                let a = error_reply(&r.host);
                assert_eq!(
                    (a.status, a.kind().1),
                    (status, "rate_limit_service_unavailable")
                );
                assert_eq!(a.header("retry-after"), Some("1"));
            }
        }
        assert_eq!(
            r.flushed().metric("llm_router.rate_limit_service.error"),
            Some(2)
        );
    }
    // Calls the host refuses at once (an unknown cluster): decided in the body callback.
    let mut r = service_router(json!({}));
    r.host.grpc_fails = true;
    let (_, flows) = r.send(keyed("sk-team-f", &model("fast")));
    assert_eq!(flows, (Flow::Pause, Flow::Continue));
    assert_eq!(r.host.resumed, 0);
}

#[test]
fn the_end_reports_usage_beyond_the_estimate_by_the_configured_method() {
    for (report, method) in [
        ("should_rate_limit", SHOULD),
        (
            "kuadrant",
            "kuadrant.service.ratelimit.v1.RateLimitService/Report",
        ),
    ] {
        let mut r = service_router(json!({"usage_report": report}));
        let (mut flow, _) = r.send(keyed("sk-team-f", &model("fast")));
        for token in 1..=3 {
            answer(&mut r, &mut flow, token, 0, ok());
        }
        r.complete(
            &mut flow,
            Some(r#"{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50}"#),
            &[],
        );
        let made = calls(&r.host);
        // 14 charged at admission; 36 more.
        assert_eq!(made.len(), 4, "{report}: {made:?}");
        assert_eq!(made[3].0, method);
        assert_eq!(made[3].1[0], ("limit".to_owned(), "client_tpm".to_owned()));
        assert_eq!(made[3].2, 36);
        assert_eq!(
            r.flushed()
                .metric("llm_router.rate_limit_service.usage_reports"),
            Some(1)
        );
    }
}

#[test]
fn a_budget_is_charged_per_calendar_month_at_the_service() {
    let mut r = service_router(json!({}));
    r.at(NOV_2026);
    let (mut flow, _) = r.send(keyed("sk-team-d", &model("fast")));
    let made = calls(&r.host);
    assert_eq!(made.len(), 2, "{made:?}");
    assert_eq!(
        made[0].1,
        [
            ("limit", "client_budget"),
            ("client", "team-d"),
            ("month", "2026-11")
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // 14 prompt tokens at 1 per million: 14 millionths.
    assert_eq!(made[0].2, 14);
    answer(&mut r, &mut flow, 1, 0, ok());
    answer(&mut r, &mut flow, 2, 0, ok());
    r.at(DEC_2026 + 5);
    r.complete(
        &mut flow,
        Some(r#"{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50}"#),
        &[],
    );
    let made = calls(&r.host);
    // 20 + 300 = 320 millionths in all, 306 beyond the estimate, in the month it ended.
    assert_eq!(made.len(), 3, "{made:?}");
    assert_eq!(made[2].1[2], ("month".to_owned(), "2026-12".to_owned()));
    assert_eq!(made[2].2, 306);
    // Over the budget: insufficient_quota until the next month.
    r.at(NOV_2026);
    let (mut flow, _) = r.send(keyed("sk-team-d", &model("fast")));
    answer(&mut r, &mut flow, 4, 0, over(None));
    answer(&mut r, &mut flow, 5, 0, ok());
    let a = error_reply(&r.host);
    assert_eq!((a.status, a.kind().1), (429, "insufficient_quota"));
    let until_december = (DEC_2026 - NOV_2026).div_ceil(1000).to_string();
    assert_eq!(a.header("retry-after"), Some(until_december.as_str()));
}

#[test]
fn target_budgets_leave_the_health_board_for_the_service() {
    let plan = plan_json(&service_config(json!({})));
    let service = plan.rate_limit_service.as_ref().expect("a service");
    let budget = service
        .budget("llm_router.h.openai/gpt-4o-mini")
        .expect("the budget");
    assert_eq!(budget.rpm, Some(3));
    assert!(plan
        .targets
        .values()
        .all(|t| t.budget == Default::default()));
    // A client without limits only has the target's call.
    let mut r = service_router(json!({}));
    let (_, flows) = r.send(keyed("sk-team-b", &model("fast")));
    assert_eq!(flows, (Flow::Pause, Flow::Pause));
    assert_eq!(calls(&r.host).len(), 1);
    // No limit anywhere: no call, no wait.
    let (_, flows) = r.send(keyed("sk-team-b", &model("smart")));
    assert_eq!(flows, (Flow::Pause, Flow::Continue));
    assert_eq!(calls(&r.host).len(), 1);
}

#[test]
fn the_services_figures_become_the_responses_rate_limit_headers() {
    let mut r = service_router(json!({}));
    let (mut flow, _) = r.send(keyed("sk-team-f", &model("fast")));
    let status = DescriptorStatus {
        code: Code::Ok as i32,
        current_limit: Some(RateLimit {
            requests_per_unit: 5,
        }),
        limit_remaining: 3,
        duration_until_reset: Some(Duration {
            seconds: 40,
            nanos: 0,
        }),
    };
    let with_status = RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![status],
    }
    .encode_to_vec();
    answer(&mut r, &mut flow, 1, 0, with_status);
    answer(&mut r, &mut flow, 2, 0, ok());
    answer(&mut r, &mut flow, 3, 0, ok());
    r.respond(&mut flow, &[("x-ratelimit-limit-requests", "500")]);
    assert_eq!(
        r.host.response_header("x-ratelimit-limit-requests"),
        Some("5")
    );
    assert_eq!(
        r.host.response_header("x-ratelimit-remaining-requests"),
        Some("3")
    );
    assert_eq!(
        r.host.response_header("x-ratelimit-reset-requests"),
        Some("40s")
    );
}
