//! The `rate_limit_service` section, the calls of a request and the verdicts.

use prost::Message;
use serde_json::json;

use super::checks::{admission, month_label, usage, Charge};
use super::proto::{self, Code, RateLimitRequest, RateLimitResponse};
use super::verdict::{answer, combine, Answer, Verdict};
use super::*;
use crate::clients::Limits;
use crate::config::plan::compile;

fn compiled(service: serde_json::Value) -> Result<crate::config::plan::Plan, ConfigError> {
    let config = json!({
        "upstreams": {"a": {"cluster": "a"}},
        "default": {"targets": [{"upstream": "a", "model": "m", "budget": {"tpm": 100}}]},
        "rate_limit_service": service
    });
    compile(config.to_string().as_bytes(), &|_| None)
}

fn refused(service: serde_json::Value) -> String {
    match compiled(service) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.field,
    }
}

#[test]
fn the_section_compiles_with_defaults_and_refuses_bad_fields_by_name() {
    let plan = compiled(json!({"cluster": "ratelimit"})).expect("compiles");
    let s = plan.rate_limit_service.expect("a service");
    assert_eq!((s.domain.as_str(), s.timeout_ms), ("llm-router", 100));
    assert_eq!(s.failure_mode, FailureMode::Allow);
    assert_eq!(s.usage_report, UsageReport::ShouldRateLimit);
    assert_eq!(s.report_method(), (SERVICE, METHOD));
    assert_eq!(s.budget("llm_router.h.a/m").and_then(|b| b.tpm), Some(100));
    assert_eq!(refused(json!({})), "rate_limit_service");
    assert_eq!(
        refused(json!({"cluster": ""})),
        "rate_limit_service.cluster"
    );
    assert_eq!(
        refused(json!({"cluster": "a\u{7f}b"})),
        "rate_limit_service.cluster"
    );
    assert_eq!(
        refused(json!({"cluster": "x".repeat(121)})),
        "rate_limit_service.cluster"
    );
    assert_eq!(
        refused(json!({"cluster": "r", "domain": "a b"})),
        "rate_limit_service.domain"
    );
    assert_eq!(
        refused(json!({"cluster": "r", "timeout_ms": 0})),
        "rate_limit_service.timeout_ms"
    );
    assert_eq!(
        refused(json!({"cluster": "r", "timeout_ms": 10_001})),
        "rate_limit_service.timeout_ms"
    );
    assert_eq!(
        refused(json!({"cluster": "r", "failure_mode": "open"})),
        "rate_limit_service.failure_mode"
    );
    assert_eq!(
        refused(json!({"cluster": "r", "usage_report": "x"})),
        "rate_limit_service.usage_report"
    );
    assert_eq!(
        refused(json!({"cluster": "r", "tls": true})),
        "rate_limit_service.tls"
    );
}

#[test]
fn the_grpc_service_names_the_cluster_and_stays_ascii() {
    let bytes = proto::grpc_service(&"c".repeat(120));
    assert!(bytes.is_ascii(), "the host call takes it as a string");
    assert_eq!(&proto::grpc_service("rls")[..], b"\x0a\x05\x0a\x03rls");
}

fn decoded(c: &Check) -> (Vec<(String, String)>, u32) {
    let r = RateLimitRequest::decode(c.message.as_slice()).expect("decodes");
    assert_eq!(r.domain, "d");
    let d = &r.descriptors[0];
    let entries = d
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    (entries, r.hits_addend)
}

#[test]
fn each_limit_is_a_call_of_its_own_with_its_hits() {
    let limits = Limits {
        rpm: Some(1),
        tpm: Some(2),
        monthly_budget_micro: Some(3),
    };
    let budget = Budget {
        rpm: Some(4),
        tpm: Some(5),
    };
    // 2026-12-31T23:59:59Z.
    let now = 1_798_761_599_000;
    let charge = Charge {
        client: Some(("team", &limits)),
        target: Some(("up/m", &budget)),
        now_ms: now,
    };
    let calls = admission("d", &charge, 7, 0);
    let kinds: Vec<&str> = calls.iter().map(|c| c.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "client_rpm",
            "client_tpm",
            "client_budget",
            "target_rpm",
            "target_tpm"
        ]
    );
    let hits: Vec<u32> = calls.iter().map(|c| decoded(c).1).collect();
    // A cost of 0 is charged as 1: every call adds at least one hit.
    assert_eq!(hits, [1, 7, 1, 1, 7]);
    assert_eq!(
        decoded(&calls[2]).0[2],
        ("month".to_owned(), "2026-12".to_owned())
    );
    // The end: only what is left to add; nothing for a limit with nothing to add.
    let calls = usage("d", &charge, 0, 0);
    assert!(calls.is_empty());
    let calls = usage("d", &charge, u64::MAX, 9);
    let hits: Vec<(&str, u32)> = calls
        .iter()
        .map(|c| (c.kind.name(), decoded(c).1))
        .collect();
    assert_eq!(
        hits,
        [
            ("client_tpm", u32::MAX),
            ("client_budget", 9),
            ("target_tpm", u32::MAX)
        ]
    );
    assert_eq!(month_label(0), "1970-01");
    assert_eq!(month_label(now + 1000), "2027-01");
}

fn response(code: Code) -> Vec<u8> {
    RateLimitResponse {
        overall_code: code as i32,
        statuses: vec![],
    }
    .encode_to_vec()
}

#[test]
fn answers_combine_into_one_verdict() {
    assert_eq!(answer(0, Some(&response(Code::Ok))), Answer::Ok(None));
    assert_eq!(
        answer(0, Some(&response(Code::OverLimit))),
        Answer::OverLimit(None)
    );
    assert!(matches!(
        answer(0, Some(&response(Code::Unknown))),
        Answer::Failed(_)
    ));
    assert!(matches!(answer(14, None), Answer::Failed(w) if w.contains("UNAVAILABLE")));
    assert!(matches!(answer(0, None), Answer::Failed(_)));
    assert!(matches!(answer(0, Some(b"\x0a\xff")), Answer::Failed(_)));
    // An empty message is a RateLimitResponse with every field unset: UNKNOWN.
    assert!(matches!(answer(0, Some(b"")), Answer::Failed(_)));
    let ok = (LimitKind::ClientRequests, Answer::Ok(None));
    let failed = (LimitKind::ClientTokens, Answer::Failed("x".to_owned()));
    let over = (LimitKind::TargetTokens, Answer::OverLimit(None));
    assert_eq!(
        combine(std::slice::from_ref(&ok)),
        Verdict::Admitted(vec![])
    );
    assert!(
        matches!(combine(&[ok.clone(), failed.clone()]), Verdict::Unavailable(w) if w.starts_with("client_tpm"))
    );
    // A limit over wins over a failure: the request is refused either way.
    assert_eq!(
        combine(&[failed, over, ok]),
        Verdict::Limited {
            kind: LimitKind::TargetTokens,
            status: None
        }
    );
}

#[test]
fn durations_round_up_to_milliseconds() {
    let d = |seconds, nanos| proto::Duration { seconds, nanos }.as_ms();
    assert_eq!(d(1, 1), Some(1001));
    assert_eq!(d(0, 0), Some(0));
    assert_eq!(d(-1, 0), None);
    assert_eq!(d(i64::MAX, 0), Some(u64::MAX));
}

#[test]
fn definitions_follow_the_plan_and_quote_what_they_write() {
    let config = json!({
        "upstreams": {"a": {"cluster": "a"}},
        "default": {"targets": [{"upstream": "a", "model": "o'dd\\m", "budget": {"rpm": 5}}]},
        "clients": {"identity_header": "x-client", "keys": [
            {"name": "team-a", "rpm": 20, "monthly_budget": 2},
            {"name": "team-b", "rpm": 7},
            {"name": "free"}]},
        "rate_limit_service": {"cluster": "r", "domain": "fleet"}
    });
    let plan = compile(config.to_string().as_bytes(), &|_| None).expect("compiles");
    let defs = definitions::definitions(&plan);
    let summary: Vec<(&str, &str, u64)> = defs
        .iter()
        .map(|d| (d.kind.name(), d.subject.as_str(), d.max))
        .collect();
    assert_eq!(
        summary,
        [
            ("client_rpm", "team-a", 20),
            ("client_budget", "team-a", 2_000_000),
            ("client_rpm", "team-b", 7),
            ("target_rpm", "a/o'dd\\m", 5)
        ]
    );
    let limitador = definitions::limitador(&plan);
    assert_eq!(limitador.matches("- namespace: \"fleet\"").count(), 4);
    assert!(
        limitador.contains(r#""descriptors[0].target == 'a/o\\'dd\\\\m'""#),
        "{limitador}"
    );
    assert!(limitador.contains("seconds: 2764800\n  conditions"));
    assert!(limitador.contains(r#"variables: ["descriptors[0].month"]"#));
    // envoyproxy/ratelimit: one node per kind (keys are unique at each level).
    let ratelimit = definitions::envoy_ratelimit(&plan);
    assert_eq!(
        ratelimit.matches("value: \"client_rpm\"").count(),
        1,
        "{ratelimit}"
    );
    assert!(ratelimit.contains("rate_limit: {unit: year, requests_per_unit: 2000000}"));
}
