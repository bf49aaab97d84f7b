//! The service's logic with in-memory counters (no network, no Redis).

use super::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

const LIMITS: &str = r#"
- namespace: llm-router
  name: "client team-a rpm"
  max_value: 20
  seconds: 60
  conditions: ["descriptors[0].limit == 'client_rpm'", "descriptors[0].client == 'team-a'"]
  variables: []
- namespace: llm-router
  name: "client team-a budget"
  max_value: 1000
  seconds: 2764800
  conditions: ["descriptors[0].limit == 'client_budget'", "descriptors[0].client == 'team-a'"]
  variables: ["descriptors[0].month"]
"#;

async fn service(limits: &str) -> Arc<Rls> {
    let rls = Arc::new(Rls::new(
        Limiter::Memory(RateLimiter::new(1000)),
        Duration::ZERO,
    ));
    rls.configure(parse_limits(limits).expect("limits parse"))
        .await
        .expect("configure");
    rls
}

fn request(domain: &str, entries: &[(&str, &str)], hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }],
        hits_addend: hits,
    }
}

async fn code(rls: &Arc<Rls>, req: RateLimitRequest, op: Op) -> Code {
    let resp = rls.handle(req, op).await.expect("call succeeds");
    Code::try_from(resp.overall_code).expect("known code")
}

const RPM: &[(&str, &str)] = &[("limit", "client_rpm"), ("client", "team-a")];

#[tokio::test]
async fn twenty_of_thirty_admitted_at_max_twenty() {
    let rls = service(LIMITS).await;
    let mut codes = Vec::new();
    for _ in 0..30 {
        codes.push(code(&rls, request("llm-router", RPM, 0), Op::CheckAndUpdate).await);
    }
    assert!(codes[..20].iter().all(|c| *c == Code::Ok), "{codes:?}");
    assert!(
        codes[20..].iter().all(|c| *c == Code::OverLimit),
        "{codes:?}"
    );
    // Another client, and another domain, have no limit here.
    let other = &[("limit", "client_rpm"), ("client", "team-b")];
    assert_eq!(
        code(&rls, request("llm-router", other, 0), Op::CheckAndUpdate).await,
        Code::Ok
    );
    assert_eq!(
        code(&rls, request("elsewhere", RPM, 0), Op::CheckAndUpdate).await,
        Code::Ok
    );
}

#[tokio::test]
async fn statuses_carry_remaining_and_reset() {
    let rls = service(LIMITS).await;
    let resp = rls
        .handle(request("llm-router", RPM, 5), Op::CheckAndUpdate)
        .await
        .expect("call");
    assert_eq!(resp.statuses.len(), 1);
    let s = &resp.statuses[0];
    assert_eq!(s.code, i32::from(Code::Ok));
    assert_eq!(s.limit_remaining, 15);
    let reset = s.duration_until_reset.as_ref().expect("reset");
    assert!(reset.seconds > 0 && reset.seconds <= 60, "{reset:?}");
    let limit = s.current_limit.as_ref().expect("limit");
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (20, Unit::Minute.into())
    );
    assert_eq!(limit.name, "client team-a rpm");
}

#[tokio::test]
async fn report_always_adds() {
    let rls = service(LIMITS).await;
    for _ in 0..3 {
        // 3 x 10 > 20: every Report is OK all the same.
        assert_eq!(
            code(&rls, request("llm-router", RPM, 10), Op::Report).await,
            Code::Ok
        );
    }
    assert_eq!(
        code(&rls, request("llm-router", RPM, 1), Op::Check).await,
        Code::OverLimit
    );
    assert_eq!(
        code(&rls, request("llm-router", RPM, 1), Op::CheckAndUpdate).await,
        Code::OverLimit
    );
}

#[tokio::test]
async fn check_counts_nothing() {
    let rls = service(LIMITS).await;
    for _ in 0..30 {
        assert_eq!(
            code(&rls, request("llm-router", RPM, 20), Op::Check).await,
            Code::Ok
        );
    }
    assert_eq!(
        code(&rls, request("llm-router", RPM, 21), Op::Check).await,
        Code::OverLimit
    );
    assert_eq!(
        code(&rls, request("llm-router", RPM, 20), Op::CheckAndUpdate).await,
        Code::Ok
    );
}

#[tokio::test]
async fn month_variable_separates_counters() {
    let rls = service(LIMITS).await;
    let may = &[
        ("limit", "client_budget"),
        ("client", "team-a"),
        ("month", "2026-05"),
    ];
    let june = &[
        ("limit", "client_budget"),
        ("client", "team-a"),
        ("month", "2026-06"),
    ];
    assert_eq!(
        code(&rls, request("llm-router", may, 900), Op::CheckAndUpdate).await,
        Code::Ok
    );
    assert_eq!(
        code(&rls, request("llm-router", may, 101), Op::CheckAndUpdate).await,
        Code::OverLimit
    );
    assert_eq!(
        code(&rls, request("llm-router", june, 1000), Op::CheckAndUpdate).await,
        Code::Ok
    );
    assert_eq!(
        code(&rls, request("llm-router", may, 100), Op::CheckAndUpdate).await,
        Code::Ok
    );
    // Without the variable's entry the budget limit does not apply at all.
    let no_month = &[("limit", "client_budget"), ("client", "team-a")];
    assert_eq!(
        code(
            &rls,
            request("llm-router", no_month, 5000),
            Op::CheckAndUpdate
        )
        .await,
        Code::Ok
    );
}

#[tokio::test]
async fn empty_domain_is_unknown_and_nothing_is_counted() {
    let rls = service(LIMITS).await;
    assert_eq!(
        code(&rls, request("", RPM, 50), Op::CheckAndUpdate).await,
        Code::Unknown
    );
    assert_eq!(
        code(&rls, request("", RPM, 50), Op::Report).await,
        Code::Unknown
    );
    assert_eq!(
        code(&rls, request("llm-router", RPM, 20), Op::CheckAndUpdate).await,
        Code::Ok
    );
}

/// limitador unwraps a condition's evaluation error (`descriptors[0]` of an empty list is
/// out of bounds): the panic stays in its task and the call fails with INTERNAL.
#[tokio::test]
async fn no_descriptor_fails_the_call_not_the_server() {
    let rls = service(LIMITS).await;
    let req = RateLimitRequest {
        domain: "llm-router".into(),
        ..Default::default()
    };
    let err = rls
        .handle(req, Op::CheckAndUpdate)
        .await
        .expect_err("fails");
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert_eq!(
        code(&rls, request("llm-router", RPM, 1), Op::CheckAndUpdate).await,
        Code::Ok
    );
}

#[test]
fn example_limits_parse() {
    let limits = parse_limits(include_str!("../limits.example.yaml")).expect("example parses");
    assert_eq!(limits.len(), 5);
    assert!(parse_limits("- namespace: x\n  max_value: 1\n  seconds: 1\n  conditions: [\"descriptors[0].a ==\"]\n  variables: []\n").is_err());
}

#[test]
fn args() {
    let a = parse_args(
        [
            "--listen",
            "127.0.0.1:0",
            "--limits",
            "f.yaml",
            "--delay-ms",
            "250",
        ]
        .map(String::from)
        .into_iter(),
    )
    .expect("args");
    assert_eq!(
        (a.listen.port(), a.redis, a.delay),
        (0, None, Duration::from_millis(250))
    );
    assert!(parse_args(["--limits", "f"].map(String::from).into_iter()).is_err());
    assert!(parse_args(["--bogus"].map(String::from).into_iter()).is_err());
}

/// Two limits apply; when one is over, limitador counts the hit on neither.
#[tokio::test]
async fn one_limit_over_counts_on_none() {
    let limits = format!(
        "{LIMITS}{}",
        r#"
- namespace: llm-router
  name: "everyone rpm"
  max_value: 5
  seconds: 60
  conditions: ["descriptors[0].limit == 'client_rpm'"]
  variables: []
"#
    );
    let rls = service(&limits).await;
    let got: Vec<Code> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(code(&rls, request("llm-router", RPM, 1), Op::CheckAndUpdate).await);
        }
        v
    };
    assert_eq!(got.iter().filter(|c| **c == Code::Ok).count(), 5, "{got:?}");
    // team-a's own limit (20) counted only the 5 admitted.
    let Limiter::Memory(limiter) = &rls.limiter else {
        panic!("in memory")
    };
    let counters = limiter
        .get_counters(&Namespace::from("llm-router"))
        .expect("counters");
    let remaining = |name: &str| {
        counters
            .iter()
            .find(|c| c.limit().name() == Some(name))
            .and_then(|c| c.remaining())
    };
    assert_eq!(remaining("client team-a rpm"), Some(15));
    assert_eq!(remaining("everyone rpm"), Some(0));
}
