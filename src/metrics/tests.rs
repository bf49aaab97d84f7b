//! Native tests of the metrics module against `MockHost`: names and label sanitizing,
//! bounded cardinality, collision suffixes, the per-request calls, define failures, cost
//! arithmetic, and the `stats_tags` regexes run the way Envoy runs them.

use regex::Regex;
use serde_json::{json, Value};

use super::skips::{stat_name as skip_stat_name, TAG_REASON, TAG_REGEX_REASON};
use super::*;
use crate::clients::stats::{ClientStat, TAG_CLIENT, TAG_REGEX_CLIENT};
use crate::config::capabilities::Capability;
use crate::config::plan::compile;
use crate::host::mock::MockHost;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn plan(v: Value) -> Plan {
    let bytes = serde_json::to_vec(&v).unwrap();
    match compile(&bytes, &|_| None) {
        Ok(p) => p,
        Err(e) => panic!("test plan does not compile: {e}"),
    }
}

/// Two upstreams, a rule, two aliases (one priced), a default reusing an alias.
fn sample_plan() -> Plan {
    plan(json!({
        "upstreams": {"openai": {}, "local": {}},
        "rules": [{"name": "code", "match": {"task": ["coding"]},
                   "targets": [{"upstream": "local", "model": "qwen-2.5-coder"}]}],
        "models": {
            "fast": {"targets": [{"upstream": "openai", "model": "gpt-4.1-mini",
                                  "price": {"input": 0.4, "output": 1.6}}]},
            "big": {"targets": [{"upstream": "openai", "model": "gpt-4.1"}]}
        },
        "default": {"use_model": "fast"}
    }))
}

fn key(upstream: &str, model: &str) -> String {
    HealthBoard::key(upstream, model)
}

fn defined(plan: &Plan) -> (Metrics, MockHost) {
    let mut host = MockHost::default();
    let m = Metrics::define(plan, &mut host);
    (m, host)
}

fn names(host: &MockHost) -> Vec<&str> {
    host.metrics.iter().map(|(_, n)| n.as_str()).collect()
}

fn value(host: &MockHost, name: &str) -> i64 {
    match host.metric(name) {
        Some(v) => v,
        None => panic!("stat {name} is not defined; defined: {:?}", names(host)),
    }
}

fn stat(scope: &str, label: &str, suffix: &str) -> String {
    format!("llm_router.{scope}.{label}.{suffix}")
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

#[test]
fn every_scope_gets_its_stats_with_kinds() {
    let (m, host) = defined(&sample_plan());
    // Targets, each once, in configuration order; then rules, aliases by name, default.
    let target_labels: Vec<&str> = [
        key("local", "qwen-2.5-coder"),
        key("openai", "gpt-4.1"),
        key("openai", "gpt-4.1-mini"),
    ]
    .iter()
    .map(|k| m.target_label(k).unwrap())
    .collect();
    assert_eq!(
        target_labels,
        [
            "local/qwen-2.5-coder",
            "openai/gpt-4.1",
            "openai/gpt-4.1-mini"
        ]
    );
    for (source, label) in [
        ("rule:code", "rule:code"),
        ("model:big", "model:big"),
        ("model:fast", "model:fast"),
        ("default", "default"),
    ] {
        assert_eq!(m.rule_label(source), Some(label));
    }

    let t = "openai/gpt-4.1-mini";
    let expected: Vec<String> = [
        "requests",
        "failures.5xx",
        "failures.429",
        "failures.connect",
        "failures.timeout",
        "cooldowns",
        "failovers",
        "budget_skips",
        "in_flight",
        "latency_ms",
        "ttfb_ms",
        "prompt_tokens",
        "completion_tokens",
        "cost_micro_usd",
        "capability_skips.context_window",
        "capability_skips.max_output_tokens",
        "capability_skips.vision",
        "capability_skips.tools",
        "capability_skips.json_output",
        "capability_skips.structured_outputs",
        "capability_skips.streaming",
    ]
    .iter()
    .map(|s| stat("target", t, s))
    .collect();
    let got: Vec<&str> = names(&host)
        .into_iter()
        .filter(|n| n.starts_with("llm_router.target.openai/gpt-4.1-mini."))
        .collect();
    assert_eq!(got, expected);

    let kind = |name: &str| {
        host.metrics
            .iter()
            .find(|(_, n)| n == name)
            .map(|(k, _)| *k)
    };
    assert_eq!(
        kind(&stat("target", t, "requests")),
        Some(MetricKind::Counter)
    );
    assert_eq!(
        kind(&stat("target", t, "in_flight")),
        Some(MetricKind::Gauge)
    );
    assert_eq!(
        kind(&stat("target", t, "latency_ms")),
        Some(MetricKind::Histogram)
    );
    assert_eq!(
        kind(&stat("rule", "default", "ttfb_ms")),
        Some(MetricKind::Histogram)
    );
}

#[test]
fn cooldowns_only_for_targets_cost_only_where_priced() {
    let (m, host) = defined(&sample_plan());
    let has = |n: String| host.metric_id(&n).is_some();
    // Unpriced target and rule without a priced target: no cost stat.
    assert!(!has(stat("target", "openai/gpt-4.1", "cost_micro_usd")));
    assert!(!has(stat("rule", "model:big", "cost_micro_usd")));
    assert!(!has(stat("rule", "rule:code", "cost_micro_usd")));
    // Priced target, and the alias and default routing to it.
    assert!(has(stat("target", "openai/gpt-4.1-mini", "cost_micro_usd")));
    assert!(has(stat("rule", "model:fast", "cost_micro_usd")));
    assert!(has(stat("rule", "default", "cost_micro_usd")));
    // Cooldowns are a target's.
    assert!(has(stat("target", "openai/gpt-4.1", "cooldowns")));
    assert!(!names(&host)
        .iter()
        .any(|n| n.starts_with("llm_router.rule.") && n.ends_with(".cooldowns")));
    // 3 targets: 14 + 13 + 13; 4 rules: 12 (fast, default) + 12 + 12 (big, code) ... exactly;
    // and 7 capability-skip counters per target:
    let expected = 14 + 13 + 13 + (13 + 12 + 12 + 13) + 3 * 7;
    assert_eq!(m.defined(), expected);
    assert_eq!(host.metrics.len(), expected);
}

#[test]
fn labels_are_sanitized() {
    assert_eq!(label("openai/gpt-4.1"), "openai/gpt-4.1");
    assert_eq!(label("rule:code-and-math"), "rule:code-and-math");
    assert_eq!(label("a@b_c-d:e/*"), "a@b_c-d:e/*");
    // Characters that would break a name or a Prometheus label value.
    assert_eq!(label("my model \"x\"\\{y}"), "my_model__x___y_");
    assert_eq!(label("llama,3;a=b"), "llama_3_a_b");
    // Non-ASCII: one `_` per byte.
    assert_eq!(label("modèle"), "mod__le");
    // Dots never make an empty Envoy name segment.
    assert_eq!(label(".hidden"), "_hidden");
    assert_eq!(label("trailing."), "trailing_");
    assert_eq!(label("a..b...c"), "a._b._.c");
    assert_eq!(label("."), "_");
    assert_eq!(label(""), "_");
    // Capped.
    let long = "x".repeat(1000);
    assert_eq!(label(&long).len(), MAX_LABEL_BYTES);
    let dotted = format!("{}.y", "x".repeat(MAX_LABEL_BYTES - 1));
    assert_eq!(
        label(&dotted),
        format!("{}_", "x".repeat(MAX_LABEL_BYTES - 1))
    );
    // Always a valid label: no empty segment, nothing outside the set.
    for raw in ["..", "a.", ".a.", "a. .b", "\u{0}\n\t", "ü.ü"] {
        let l = label(raw);
        assert!(!l.split('.').any(str::is_empty), "{raw:?} -> {l:?}");
        assert!(l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@*".contains(&b)));
    }
}

#[test]
fn model_names_with_odd_characters_are_sanitized_in_stat_names() {
    let p = plan(json!({
        "upstreams": {"u": {}},
        "default": {"targets": [{"upstream": "u", "model": "accounts/x/models/llama v3.1 \"8b\""}]}
    }));
    let (m, host) = defined(&p);
    let l = m
        .target_label(&key("u", "accounts/x/models/llama v3.1 \"8b\""))
        .unwrap();
    assert_eq!(l, "u/accounts/x/models/llama_v3.1__8b_");
    assert!(host.metric_id(&stat("target", l, "requests")).is_some());
}

#[test]
fn colliding_labels_get_suffixes() {
    // Upstream `a/b` with model `c` and upstream `a` with model `b/c` both read `a/b/c`;
    // models `x y` and `x_y` both become `x_y`.
    let p = plan(json!({
        "upstreams": {"a/b": {}, "a": {}},
        "models": {
            "one": {"targets": [{"upstream": "a/b", "model": "c"}]},
            "two": {"targets": [{"upstream": "a", "model": "b/c"}]},
            "three": {"targets": [{"upstream": "a", "model": "x y"},
                                  {"upstream": "a", "model": "x_y"},
                                  {"upstream": "a", "model": "x?y"}]}
        }
    }));
    let (m, host) = defined(&p);
    assert_eq!(m.target_label(&key("a/b", "c")), Some("a/b/c"));
    assert_eq!(m.target_label(&key("a", "b/c")), Some("a/b/c_2"));
    assert_eq!(m.target_label(&key("a", "x y")), Some("a/x_y"));
    assert_eq!(m.target_label(&key("a", "x_y")), Some("a/x_y_2"));
    assert_eq!(m.target_label(&key("a", "x?y")), Some("a/x_y_3"));
    // Every stat name is defined once.
    let mut all = names(&host);
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n);
}

#[test]
fn target_and_rule_labels_do_not_collide_with_each_other() {
    // A target label equal to a rule label is fine: the scope is part of the name.
    let p = plan(json!({
        "upstreams": {"model:x": {}},
        "models": {"x": {"targets": [{"upstream": "model:x", "model": "m"}]}},
        "default": {"targets": [{"upstream": "model:x", "model": "m"}]}
    }));
    let (m, _) = defined(&p);
    assert_eq!(m.target_label(&key("model:x", "m")), Some("model:x/m"));
    assert_eq!(m.rule_label("model:x"), Some("model:x"));
    assert_eq!(m.rule_label("default"), Some("default"));
}

#[test]
fn names_are_deterministic() {
    let (_, a) = defined(&sample_plan());
    let (_, b) = defined(&sample_plan());
    assert_eq!(names(&a), names(&b));
}

// ---------------------------------------------------------------------------------------
// Cardinality
// ---------------------------------------------------------------------------------------

#[test]
fn client_model_names_never_create_stats() {
    let p = plan(json!({
        "upstreams": {"openai": {}, "local": {}},
        "models": {"fast": {"targets": [{"upstream": "openai", "model": "gpt-4.1-mini"}]}},
        "unknown_model": "passthrough",
        "passthrough_upstream": "local"
    }));
    let (m, mut host) = defined(&p);
    let before = host.metrics.len();
    assert_eq!(m.defined(), before);
    // All passed-through models share one scope per upstream, and the `passthrough` rule.
    assert_eq!(
        m.target_label(&HealthBoard::passthrough_key("local")),
        Some("local/*")
    );
    assert_eq!(m.rule_label("passthrough"), Some("passthrough"));

    for i in 0..100 {
        let model = format!("client-model-{i}");
        // What a request for an unknown model carries (route::route): the upstream's
        // passthrough key and source `passthrough`.
        let at = m.scopes(&HealthBoard::passthrough_key("local"), "passthrough");
        m.request_started(&mut host, at);
        m.request_finished(&mut host, at, &Finish::default());
        // Keys and sources that are not configured count nowhere.
        let nowhere = m.scopes(&key("local", &model), &format!("model:{model}"));
        assert!(nowhere.is_empty());
        m.request_started(&mut host, nowhere);
        m.failover(&mut host, nowhere);
        m.request_finished(&mut host, nowhere, &Finish::default());
    }
    assert_eq!(host.metrics.len(), before);
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", "local/*", "requests")), 100);
    assert_eq!(value(&host, &stat("rule", "passthrough", "requests")), 100);
    assert_eq!(value(&host, &stat("target", "local/*", "in_flight")), 0);
    assert!(!names(&host).iter().any(|n| n.contains("client-model")));
}

#[test]
fn without_passthrough_there_is_no_passthrough_scope() {
    let p = plan(json!({
        "upstreams": {"local": {}},
        "models": {"m": {"targets": [{"upstream": "local", "model": "m"}]}},
        "passthrough_upstream": "local"
    }));
    let (m, host) = defined(&p);
    assert_eq!(m.target_label(&HealthBoard::passthrough_key("local")), None);
    assert_eq!(m.rule_label("passthrough"), None);
    assert!(!names(&host)
        .iter()
        .any(|n| n.contains("passthrough") || n.contains("/*")));
}

// ---------------------------------------------------------------------------------------
// Per-request calls
// ---------------------------------------------------------------------------------------

#[test]
fn a_request_counts_in_its_target_and_rule() {
    let (m, mut host) = defined(&sample_plan());
    let t = "openai/gpt-4.1-mini";
    let at = m.scopes(&key("openai", "gpt-4.1-mini"), "model:fast");
    assert!(!at.is_empty());

    m.request_started(&mut host, at);
    m.request_started(&mut host, at);
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "requests")), 2);
    assert_eq!(value(&host, &stat("rule", "model:fast", "requests")), 2);
    assert_eq!(value(&host, &stat("target", t, "in_flight")), 2);
    assert_eq!(value(&host, &stat("rule", "model:fast", "in_flight")), 2);

    let ok = Finish {
        failure: None,
        latency_ms: Some(1200),
        ttfb_ms: Some(300),
        prompt_tokens: 1000,
        completion_tokens: 250,
        cached_tokens: 0,
    };
    m.request_finished(&mut host, at, &ok);
    let failed = Finish {
        failure: Some(FailureClass::Status5xx),
        ..Finish::default()
    };
    m.request_finished(&mut host, at, &failed);

    for (scope, l) in [("target", t), ("rule", "model:fast")] {
        m.flush(&mut host);
        assert_eq!(value(&host, &stat(scope, l, "in_flight")), 0);
        assert_eq!(value(&host, &stat(scope, l, "failures.5xx")), 1);
        assert_eq!(value(&host, &stat(scope, l, "failures.429")), 0);
        assert_eq!(host.samples(&stat(scope, l, "latency_ms")), [1200]);
        assert_eq!(host.samples(&stat(scope, l, "ttfb_ms")), [300]);
        assert_eq!(value(&host, &stat(scope, l, "prompt_tokens")), 1000);
        assert_eq!(value(&host, &stat(scope, l, "completion_tokens")), 250);
        // 1000 × 0.4 + 250 × 1.6 micro-dollars.
        assert_eq!(value(&host, &stat(scope, l, "cost_micro_usd")), 800);
    }
    // Nothing else moved: not the other targets, not the other rules.
    for (scope, l) in [
        ("target", "openai/gpt-4.1"),
        ("target", "local/qwen-2.5-coder"),
        ("rule", "default"),
        ("rule", "model:big"),
    ] {
        assert_eq!(value(&host, &stat(scope, l, "requests")), 0, "{scope} {l}");
    }
}

#[test]
fn every_failure_class_has_its_counter() {
    let (m, mut host) = defined(&sample_plan());
    let at = m.scopes(&key("local", "qwen-2.5-coder"), "rule:code");
    for class in FailureClass::ALL {
        m.request_started(&mut host, at);
        let end = Finish {
            failure: Some(class),
            ..Finish::default()
        };
        m.request_finished(&mut host, at, &end);
    }
    for class in FailureClass::ALL {
        let suffix = format!("failures.{}", class.name());
        m.flush(&mut host);
        assert_eq!(
            value(&host, &stat("target", "local/qwen-2.5-coder", &suffix)),
            1
        );
        m.flush(&mut host);
        assert_eq!(value(&host, &stat("rule", "rule:code", &suffix)), 1);
    }
    // Failures record no latency and no tokens (zero deltas are not sent).
    assert!(host
        .samples(&stat("rule", "rule:code", "latency_ms"))
        .is_empty());
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("rule", "rule:code", "prompt_tokens")), 0);
}

#[test]
fn unpriced_target_adds_no_cost_even_to_a_priced_rule() {
    let p = plan(json!({
        "upstreams": {"a": {}},
        "default": {"strategy": "priority", "targets": [
            {"upstream": "a", "model": "priced", "price": {"input": 1, "output": 2}},
            {"upstream": "a", "model": "free"}
        ]}
    }));
    let (m, mut host) = defined(&p);
    let end = Finish {
        prompt_tokens: 10,
        completion_tokens: 10,
        ..Finish::default()
    };
    let free = m.scopes(&key("a", "free"), "default");
    m.request_started(&mut host, free);
    m.request_finished(&mut host, free, &end);
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("rule", "default", "cost_micro_usd")), 0);
    let priced = m.scopes(&key("a", "priced"), "default");
    m.request_started(&mut host, priced);
    m.request_finished(&mut host, priced, &end);
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("rule", "default", "cost_micro_usd")), 30);
    assert_eq!(
        value(&host, &stat("target", "a/priced", "cost_micro_usd")),
        30
    );
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("rule", "default", "prompt_tokens")), 20);
}

#[test]
fn cooldowns_failovers_and_budget_skips() {
    let (m, mut host) = defined(&sample_plan());
    let t = "openai/gpt-4.1";
    let at = m.scopes(&key("openai", "gpt-4.1"), "model:big");
    m.cooldown_entered(&mut host, at);
    m.failover(&mut host, at);
    m.failover(&mut host, at);
    m.budget_skip(&mut host, at);
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "cooldowns")), 1);
    assert_eq!(value(&host, &stat("target", t, "failovers")), 2);
    assert_eq!(value(&host, &stat("rule", "model:big", "failovers")), 2);
    assert_eq!(value(&host, &stat("target", t, "budget_skips")), 1);
    assert_eq!(value(&host, &stat("rule", "model:big", "budget_skips")), 1);
    // Not a request.
    assert_eq!(value(&host, &stat("target", t, "requests")), 0);
    assert_eq!(value(&host, &stat("target", t, "in_flight")), 0);
}

#[test]
fn a_target_shared_by_rules_is_one_scope() {
    // `default` uses alias `fast`: same target, two rules.
    let (m, mut host) = defined(&sample_plan());
    let k = key("openai", "gpt-4.1-mini");
    for source in ["model:fast", "default"] {
        let at = m.scopes(&k, source);
        m.request_started(&mut host, at);
    }
    m.flush(&mut host);
    assert_eq!(
        value(&host, &stat("target", "openai/gpt-4.1-mini", "requests")),
        2
    );
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("rule", "model:fast", "requests")), 1);
    assert_eq!(value(&host, &stat("rule", "default", "requests")), 1);
}

#[test]
fn scopes_may_be_partly_known() {
    let (m, mut host) = defined(&sample_plan());
    // A known target under an unknown source, and the other way round.
    let target_only = m.scopes(&key("openai", "gpt-4.1"), "rule:gone");
    let rule_only = m.scopes(&key("openai", "gone"), "model:big");
    assert!(!target_only.is_empty() && !rule_only.is_empty());
    m.request_started(&mut host, target_only);
    m.request_started(&mut host, rule_only);
    m.flush(&mut host);
    assert_eq!(
        value(&host, &stat("target", "openai/gpt-4.1", "requests")),
        1
    );
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("rule", "model:big", "requests")), 1);
    assert!(Scopes::default().is_empty());
}

#[test]
fn finish_from_health_outcome() {
    let ok = Finish::from_outcome(&Outcome::Success {
        latency_ms: 900,
        ttfb_ms: Some(120),
        tokens: 7,
    });
    assert_eq!(
        ok,
        Finish {
            failure: None,
            latency_ms: Some(900),
            ttfb_ms: Some(120),
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
        }
    );
    let cases = [
        (Outcome::Status5xx, Some(FailureClass::Status5xx)),
        (
            Outcome::RateLimited { until_ms: Some(5) },
            Some(FailureClass::Status429),
        ),
        (
            Outcome::RateLimited { until_ms: None },
            Some(FailureClass::Status429),
        ),
        (Outcome::ConnectFailure, Some(FailureClass::Connect)),
        (Outcome::Timeout, Some(FailureClass::Timeout)),
        (Outcome::Cancelled, None),
    ];
    for (outcome, class) in cases {
        let f = Finish::from_outcome(&outcome);
        assert_eq!(f.failure, class, "{outcome:?}");
        assert_eq!(f.latency_ms, None);
        assert_eq!(f.ttfb_ms, None);
    }
}

// ---------------------------------------------------------------------------------------
// Host failures
// ---------------------------------------------------------------------------------------

#[test]
fn a_host_without_metrics_leaves_everything_out() {
    let mut host = MockHost {
        metrics_fail: true,
        ..MockHost::default()
    };
    let m = Metrics::define(&sample_plan(), &mut host);
    assert_eq!(m.defined(), 0);
    assert!(host.metrics.is_empty());
    // Labels and lookups still work; updates are no-ops.
    let at = m.scopes(&key("openai", "gpt-4.1-mini"), "model:fast");
    m.request_started(&mut host, at);
    m.request_finished(
        &mut host,
        at,
        &Finish {
            latency_ms: Some(1),
            prompt_tokens: 5,
            ..Finish::default()
        },
    );
    m.cooldown_entered(&mut host, at);
    assert!(host.metric_values.is_empty() && host.metric_samples.is_empty());
}

#[test]
fn a_refused_stat_is_left_out_and_the_others_work() {
    let mut host = MockHost {
        refuse_metrics_containing: Some(".latency_ms".to_owned()),
        ..MockHost::default()
    };
    let m = Metrics::define(&sample_plan(), &mut host);
    assert!(!names(&host).iter().any(|n| n.ends_with(".latency_ms")));
    let at = m.scopes(&key("openai", "gpt-4.1-mini"), "model:fast");
    m.request_started(&mut host, at);
    m.request_finished(
        &mut host,
        at,
        &Finish {
            latency_ms: Some(10),
            ttfb_ms: Some(4),
            ..Finish::default()
        },
    );
    m.flush(&mut host);
    assert_eq!(
        value(&host, &stat("target", "openai/gpt-4.1-mini", "requests")),
        1
    );
    m.flush(&mut host);
    assert_eq!(
        host.samples(&stat("target", "openai/gpt-4.1-mini", "ttfb_ms")),
        [4]
    );
    // 7 scopes lost one stat each; the 3 targets keep their 7 capability-skip counters.
    assert_eq!(m.defined(), 14 + 13 + 13 + (13 + 12 + 12 + 13) - 7 + 3 * 7);
}

#[test]
fn update_failures_after_define_are_ignored() {
    let (m, mut host) = defined(&sample_plan());
    host.metrics_fail = true;
    let at = m.scopes(&key("openai", "gpt-4.1-mini"), "model:fast");
    m.request_started(&mut host, at);
    m.request_finished(&mut host, at, &Finish::default());
    assert!(host.metric_values.is_empty());
}

#[test]
fn mock_host_metric_semantics_follow_envoy() {
    let mut host = MockHost::default();
    let c = host.define_metric(MetricKind::Counter, "c").unwrap();
    let g = host.define_metric(MetricKind::Gauge, "g").unwrap();
    let h = host.define_metric(MetricKind::Histogram, "h").unwrap();
    assert!(host.increment_metric(c, 0).is_err());
    assert!(host.increment_metric(c, -1).is_err());
    assert!(host.increment_metric(h, 1).is_err());
    assert!(host.increment_metric(99, 1).is_err());
    host.increment_metric(c, 2).unwrap();
    host.record_metric(c, 3).unwrap();
    host.increment_metric(g, 5).unwrap();
    host.increment_metric(g, -2).unwrap();
    host.record_metric(h, 42).unwrap();
    assert_eq!(host.metric("c"), Some(5));
    assert_eq!(host.metric("g"), Some(3));
    host.record_metric(g, 9).unwrap();
    assert_eq!(host.metric("g"), Some(9));
    assert_eq!(host.samples("h"), [42]);
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

#[test]
fn cost_in_micro_dollars() {
    let p = Price {
        input: 2.5,
        output: 10.0,
        cached_input: 0.0,
    };
    // $2.50 per million input tokens = 2.5 micro-dollars per token.
    assert_eq!(cost_micro_usd(&p, 1000, 0, 500), 2500 + 5000);
    assert_eq!(cost_micro_usd(&p, 1_000_000, 0, 0), 2_500_000);
    assert_eq!(cost_micro_usd(&p, 0, 0, 0), 0);
    // Rounded to the nearest micro-dollar.
    let cheap = Price {
        input: 0.15,
        output: 0.6,
        cached_input: 0.0,
    };
    assert_eq!(cost_micro_usd(&cheap, 3, 0, 0), 0); // 0.45
    assert_eq!(cost_micro_usd(&cheap, 10, 0, 0), 2); // 1.5
    assert_eq!(cost_micro_usd(&cheap, 10, 0, 1), 2); // 2.1
    let free = Price {
        input: 0.0,
        output: 0.0,
        cached_input: 0.0,
    };
    assert_eq!(cost_micro_usd(&free, 1_000_000, 0, 1_000_000), 0);
    // Saturates instead of wrapping.
    let dear = Price {
        input: 1e12,
        output: 1e12,
        cached_input: 0.0,
    };
    assert_eq!(cost_micro_usd(&dear, u64::MAX, 0, u64::MAX), u64::MAX);
}

#[test]
fn huge_values_saturate_in_counters() {
    let (m, mut host) = defined(&sample_plan());
    let at = m.scopes(&key("openai", "gpt-4.1-mini"), "model:fast");
    m.request_finished(
        &mut host,
        at,
        &Finish {
            prompt_tokens: u64::MAX,
            ..Finish::default()
        },
    );
    let t = "openai/gpt-4.1-mini";
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "prompt_tokens")), i64::MAX);
    let price = Price {
        input: 0.4,
        output: 1.6,
        cached_input: 0.0,
    };
    let cost = i64::try_from(cost_micro_usd(&price, u64::MAX, 0, 0)).unwrap();
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "cost_micro_usd")), cost);
}

// ---------------------------------------------------------------------------------------
// Envoy tag extraction
// ---------------------------------------------------------------------------------------

/// What Envoy's Prometheus output makes of a stat the filter defined: the three `stats_tags`
/// run on the full name (`wasmcustom.` included), each removing its first group and taking
/// its second as the value; then the `wasmcustom.` namespace is stripped and every other
/// character than `[a-zA-Z0-9_]` becomes `_`.
fn prometheus(name: &str) -> (String, Vec<(&'static str, String)>) {
    let full = format!("wasmcustom.{name}");
    let mut keep = vec![true; full.len()];
    let mut tags = Vec::new();
    for (tag, re) in [
        (TAG_TARGET, TAG_REGEX_TARGET),
        (TAG_RULE, TAG_REGEX_RULE),
        (TAG_CLASS, TAG_REGEX_CLASS),
        (TAG_CLIENT, TAG_REGEX_CLIENT),
        (TAG_REASON, TAG_REGEX_REASON),
    ] {
        let re = Regex::new(re).unwrap();
        if let Some(c) = re.captures(&full) {
            let remove = c.get(1).unwrap();
            for k in &mut keep[remove.range()] {
                *k = false;
            }
            let value = c.get(2).unwrap_or(remove).as_str().to_owned();
            tags.push((tag, value));
        }
    }
    let extracted: String = full
        .char_indices()
        .filter(|(i, _)| keep[*i])
        .map(|(_, c)| c)
        .collect();
    let stripped = extracted.strip_prefix("wasmcustom.").unwrap();
    let sanitized = stripped
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    (sanitized, tags)
}

#[test]
fn stats_tags_turn_labels_and_classes_into_prometheus_labels() {
    let labels = [
        "openai/gpt-4.1",
        "local/*",
        "x/m@v:1",
        "a.requests",
        "b.failures",
        "c.failures.5xx",
        "d.requests.requests",
        "e.in_flight",
        "_",
        "rule:code-and-math",
        "model:gpt-4o",
    ];
    for scope in [Scope::Target, Scope::Rule] {
        for l in labels {
            for s in Stat::ALL {
                let name = stat_name(scope, l, s);
                let (prom, tags) = prometheus(&name);
                let (base, class) = match s {
                    Stat::Failures(c) => ("failures", Some(c.name())),
                    _ => (s.suffix(), None),
                };
                assert_eq!(
                    prom,
                    format!("llm_router_{}_{base}", scope.name()),
                    "{name}"
                );
                let mut expected = vec![(scope.name(), l.to_owned())];
                if let Some(c) = class {
                    expected.push((TAG_CLASS, c.to_owned()));
                }
                assert_eq!(tags, expected, "{name}");
            }
        }
    }
}

#[test]
fn client_stats_get_a_client_label() {
    for name in [
        "team-a",
        "alice@corp.example",
        "a.requests",
        "x_1.forbidden",
    ] {
        for stat in ClientStat::ALL {
            let full = format!("llm_router.client.{}.{}", label(name), stat.suffix());
            let (prom, tags) = prometheus(&full);
            assert_eq!(
                prom,
                format!("llm_router_client_{}", stat.suffix()),
                "{full}"
            );
            assert_eq!(tags, [(TAG_CLIENT, name.to_owned())], "{full}");
        }
    }
    // The per-rule and per-target regexes leave client stats alone, and the other way round.
    let (_, tags) = prometheus("llm_router.target.client.requests");
    assert_eq!(tags, [(TAG_TARGET, "client".to_owned())]);
}

#[test]
fn capability_skips_get_target_and_reason_labels() {
    for l in [
        "openai/gpt-4.1",
        "local/*",
        "a.capability_skips",
        "b.capability_skips.vision",
        "c.failures.5xx",
    ] {
        for reason in Capability::ALL {
            let name = skip_stat_name(l, reason);
            let (prom, tags) = prometheus(&name);
            assert_eq!(prom, "llm_router_target_capability_skips", "{name}");
            assert_eq!(
                tags,
                [
                    (TAG_TARGET, l.to_owned()),
                    (TAG_REASON, reason.name().to_owned())
                ],
                "{name}"
            );
        }
    }
    // The other scopes' stats carry no reason.
    let (_, tags) = prometheus("llm_router.target.x/vision.failovers");
    assert_eq!(tags, [(TAG_TARGET, "x/vision".to_owned())]);
}

#[test]
fn capability_skips_are_counted_per_target_and_reason() {
    let (m, mut host) = defined(&sample_plan());
    let k = key("openai", "gpt-4.1");
    m.skips.count(&k, Capability::Vision);
    m.skips.count(&k, Capability::Vision);
    m.skips.count(&k, Capability::ContextWindow);
    let skip = |t: &str, c: Capability| skip_stat_name(t, c);
    m.flush(&mut host);
    assert_eq!(value(&host, &skip("openai/gpt-4.1", Capability::Vision)), 2);
    assert_eq!(
        value(&host, &skip("openai/gpt-4.1", Capability::ContextWindow)),
        1
    );
    m.flush(&mut host);
    assert_eq!(value(&host, &skip("openai/gpt-4.1", Capability::Tools)), 0);
    assert_eq!(
        value(&host, &skip("openai/gpt-4.1-mini", Capability::Vision)),
        0
    );
    // A key no target has counts nowhere.
    m.flush(&mut host);
    let before = host.metric_values.clone();
    m.skips.count("nope", Capability::Vision);
    m.flush(&mut host);
    assert_eq!(host.metric_values, before);
    // Colliding labels: each target's skips carry the label of its other stats.
    let p = plan(json!({
        "upstreams": {"a/b": {}, "a": {}},
        "models": {"x": {"targets": [{"upstream": "a/b", "model": "c"},
                                     {"upstream": "a", "model": "b/c"}]}}
    }));
    let (m, mut host) = defined(&p);
    let second = key("a", "b/c");
    let label = m.target_label(&second).unwrap().to_owned();
    assert_eq!(label, "a/b/c_2");
    m.skips.count(&second, Capability::Streaming);
    m.flush(&mut host);
    assert_eq!(value(&host, &skip(&label, Capability::Streaming)), 1);
    assert_eq!(value(&host, &skip("a/b/c", Capability::Streaming)), 0);
}

#[test]
fn tag_names_match_scope_names() {
    assert_eq!(TAG_TARGET, Scope::Target.name());
    assert_eq!(TAG_RULE, Scope::Rule.name());
    // The regexes name the prefix and scopes the names use.
    assert!(TAG_REGEX_TARGET.starts_with(&format!("^wasmcustom\\.{PREFIX}\\.target\\.")));
    assert!(TAG_REGEX_RULE.starts_with(&format!("^wasmcustom\\.{PREFIX}\\.rule\\.")));
}

#[test]
fn envoy_yaml_stats_tags_match_the_stat_names() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/envoy.yaml");
    let yaml = std::fs::read_to_string(path).expect("envoy/envoy.yaml");
    for re in [
        TAG_REGEX_TARGET,
        TAG_REGEX_RULE,
        TAG_REGEX_CLASS,
        TAG_REGEX_CLIENT,
        TAG_REGEX_REASON,
    ] {
        assert!(
            yaml.contains(&format!("'{re}'")),
            "envoy/envoy.yaml should have stats_tags regex '{re}'"
        );
    }
}

#[test]
fn target_only_and_rule_only() {
    let (m, mut host) = defined(&sample_plan());
    let t = "openai/gpt-4.1-mini";
    let k = key("openai", "gpt-4.1-mini");
    assert_eq!(m.target(&k), m.scopes(&k, "model:fast").target_only());

    // Two attempts on the target, one request in the rule.
    let end = Finish {
        failure: None,
        latency_ms: Some(50),
        ttfb_ms: None,
        prompt_tokens: 100,
        completion_tokens: 10,
        cached_tokens: 0,
    };
    for _ in 0..2 {
        m.request_started(&mut host, m.target(&k));
        m.request_finished(&mut host, m.target(&k), &end);
    }
    let rule = m.scopes(&k, "model:fast").rule_only();
    m.request_started(&mut host, rule);
    m.request_finished(&mut host, rule, &end);

    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "requests")), 2);
    assert_eq!(value(&host, &stat("rule", "model:fast", "requests")), 1);
    assert_eq!(host.samples(&stat("target", t, "latency_ms")), [50, 50]);
    assert_eq!(
        host.samples(&stat("rule", "model:fast", "latency_ms")),
        [50]
    );
    // 100 × 0.4 + 10 × 1.6 = 56 per request: the rule is priced by the target it names.
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "cost_micro_usd")), 112);
    assert_eq!(
        value(&host, &stat("rule", "model:fast", "cost_micro_usd")),
        56
    );
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("rule", "model:fast", "in_flight")), 0);

    // A rule-only scope never counts a cooldown; a target-only one does.
    m.cooldown_entered(&mut host, rule);
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "cooldowns")), 0);
    m.cooldown_entered(&mut host, m.target(&k));
    m.flush(&mut host);
    assert_eq!(value(&host, &stat("target", t, "cooldowns")), 1);
    assert!(!rule.is_empty() && !m.target(&k).is_empty());
    assert!(m.scopes("nope", "model:fast").target_only().is_empty());
    assert!(m.scopes(&k, "nope").rule_only().is_empty());
}
