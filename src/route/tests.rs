//! Native tests of the route module: rule matching (every condition, first match wins),
//! aliases, unknown models, the default, each selection strategy with a deterministic
//! chooser, and the client's `allowed_models` / `provider` preferences.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Map, Value};

use super::prefs::{ClientPrefs, Sort, ROUTER_FIELDS};
use super::select::{self, Chooser};
use super::{route, Decision, RouteError, RouteRequest, TargetStatus, ASSUMED_OUTPUT_TOKENS};
use crate::classify::{Classification, Complexity, Task};
use crate::config::plan::{compile, Plan, Price, Target};
use crate::config::raw::Strategy;
use crate::endpoint::Endpoint;
use crate::glob::Glob;
use crate::health::{Availability, Budget, Unhealthy};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A chooser whose answers the test decides: `random` pops from a queue (0 when empty),
/// `next_turn` counts per key from 0. Every call is recorded.
#[derive(Default)]
struct FakeChooser {
    randoms: VecDeque<u64>,
    turns: HashMap<String, u64>,
    random_calls: usize,
    turn_keys: Vec<String>,
    /// Health by board key; keys not listed are unknown (available).
    health: HashMap<String, TargetStatus>,
    health_keys: Vec<String>,
}

impl FakeChooser {
    fn with_randoms(values: &[u64]) -> FakeChooser {
        FakeChooser {
            randoms: values.iter().copied().collect(),
            ..FakeChooser::default()
        }
    }
}

impl Chooser for FakeChooser {
    fn random(&mut self) -> u64 {
        self.random_calls += 1;
        self.randoms.pop_front().unwrap_or(0)
    }

    fn health(&mut self, key: &str, _budget: &Budget) -> Option<TargetStatus> {
        self.health_keys.push(key.to_owned());
        self.health.get(key).copied()
    }

    fn next_turn(&mut self, key: &str) -> u64 {
        self.turn_keys.push(key.to_owned());
        let turn = self.turns.entry(key.to_owned()).or_insert(0);
        let current = *turn;
        *turn = turn.wrapping_add(1);
        current
    }
}

fn plan_with_env(v: Value, env: &dyn Fn(&str) -> Option<String>) -> Plan {
    match compile(v.to_string().as_bytes(), env) {
        Ok(plan) => plan,
        Err(e) => panic!("test configuration does not compile: {e}"),
    }
}

fn plan(v: Value) -> Plan {
    plan_with_env(v, &|_| Some("k".to_owned()))
}

/// Three keyed upstreams `a`, `b`, `c` plus `local` without auth, and `v`'s other members.
fn plan_of(mut v: Value) -> Plan {
    v["upstreams"] = json!({
        "a": {"auth": {"type": "bearer", "key_env": "A_KEY"}},
        "b": {"auth": {"type": "bearer", "key_env": "B_KEY"}},
        "c": {"auth": {"type": "bearer", "key_env": "C_KEY"}},
        "local": {}
    });
    plan(v)
}

fn class() -> Classification {
    Classification {
        task: Task::General,
        complexity: Complexity::Low,
        tags: Vec::new(),
        estimated_prompt_tokens: 100,
        has_tools: false,
        has_images: false,
        stream: false,
    }
}

/// One request to route; `run` builds the `RouteRequest` that borrows it.
struct Req {
    endpoint: Endpoint,
    model: Option<String>,
    class: Classification,
    headers: Vec<(String, String)>,
    prefs: ClientPrefs,
    max_output_tokens: Option<u64>,
    client: Option<crate::clients::Client>,
    format: super::capable::OutputFormat,
}

fn req() -> Req {
    Req {
        endpoint: Endpoint::ChatCompletions,
        model: None,
        class: class(),
        headers: Vec::new(),
        prefs: ClientPrefs::default(),
        max_output_tokens: None,
        client: None,
        format: Default::default(),
    }
}

fn model(m: &str) -> Req {
    Req {
        model: Some(m.to_owned()),
        ..req()
    }
}

impl Req {
    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn prefs(mut self, body: Value) -> Req {
        self.prefs = prefs(body);
        self
    }

    fn run_with(&self, plan: &Plan, chooser: &mut dyn Chooser) -> Result<Decision, RouteError> {
        let header = |name: &str| {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let request = RouteRequest {
            endpoint: self.endpoint,
            model: self.model.as_deref(),
            classification: &self.class,
            header: &header,
            prefs: &self.prefs,
            max_output_tokens: self.max_output_tokens,
            client: self.client.as_ref(),
            format: self.format,
        };
        route(plan, &request, chooser)
    }

    fn run(&self, plan: &Plan) -> Result<Decision, RouteError> {
        self.run_with(plan, &mut FakeChooser::default())
    }

    /// The decision's source, or a description of the error.
    fn source(&self, plan: &Plan) -> String {
        match self.run(plan) {
            Ok(d) => d.source,
            Err(e) => format!("{e:?}"),
        }
    }
}

fn prefs(body: Value) -> ClientPrefs {
    match body {
        Value::Object(map) => ClientPrefs::from_body(&map).expect("valid preferences"),
        other => panic!("not an object: {other}"),
    }
}

/// The candidates as `upstream/model`.
fn names(plan: &Plan, d: &Decision) -> Vec<String> {
    d.candidates
        .iter()
        .map(|c| format!("{}/{}", plan.upstreams[c.upstream].name, c.model))
        .collect()
}

fn ok(plan: &Plan, r: &Req) -> Decision {
    match r.run(plan) {
        Ok(d) => d,
        Err(e) => panic!("expected a decision, got {e:?}"),
    }
}

fn no_candidate(plan: &Plan, r: &Req) -> String {
    match r.run(plan) {
        Err(RouteError::NoCandidate(why)) => why,
        other => panic!("expected NoCandidate, got {other:?}"),
    }
}

/// A rule `name` with `match_` that sends to `upstream`/`name`.
fn rule(name: &str, match_: Value, upstream: &str) -> Value {
    json!({"name": name, "match": match_, "targets": [{"upstream": upstream, "model": name}]})
}

/// A plan whose only rule is `rule("r", match_, "b")`, with default to `a`.
fn one_rule(match_: Value) -> Plan {
    plan_of(json!({
        "classifier": {"tags": [
            {"name": "legal", "keywords": ["contract"]},
            {"name": "medical", "keywords": ["diagnosis"]},
            {"name": "finance", "keywords": ["invoice"]}
        ]},
        "rules": [rule("r", match_, "b")],
        "default": {"targets": [{"upstream": "a", "model": "default-model"}]}
    }))
}

const HIT: &str = "rule:r";
const MISS: &str = "default";

// ---------------------------------------------------------------------------------------
// Rule conditions
// ---------------------------------------------------------------------------------------

#[test]
fn empty_match_applies_to_auto_requests_only() {
    let p = one_rule(json!({}));
    assert_eq!(req().source(&p), HIT);
    // An explicit model is routed by a rule only when the rule names it.
    assert_eq!(
        model("gpt-4o").source(&p),
        "UnknownModel(\"gpt-4o\")",
        "the rule must not capture an explicit model"
    );
}

#[test]
fn model_condition_exact() {
    let p = one_rule(json!({"model": ["gpt-4o"]}));
    assert_eq!(model("gpt-4o").source(&p), HIT);
    assert_eq!(
        model("gpt-4o-mini").source(&p),
        "UnknownModel(\"gpt-4o-mini\")"
    );
    assert_eq!(
        model("GPT-4o").source(&p),
        "UnknownModel(\"GPT-4o\")",
        "case-sensitive"
    );
    assert_eq!(
        req().source(&p),
        MISS,
        "without `auto` it does not match auto"
    );
}

#[test]
fn model_condition_globs() {
    let p = one_rule(json!({"model": ["gpt-4o*", "claude-?-opus", "*-instruct"]}));
    for m in ["gpt-4o", "gpt-4o-mini", "claude-3-opus", "llama-3-instruct"] {
        assert_eq!(model(m).source(&p), HIT, "{m}");
    }
    for m in ["gpt-4", "claude-35-opus", "llama-3-instruct-v2", "Gpt-4o"] {
        assert_ne!(model(m).source(&p), HIT, "{m}");
    }
}

#[test]
fn model_condition_auto() {
    let p = one_rule(json!({"model": ["auto"]}));
    assert_eq!(req().source(&p), HIT, "auto / omitted model");
    assert_ne!(model("x").source(&p), HIT);

    let p = one_rule(json!({"model": ["auto", "x"]}));
    assert_eq!(req().source(&p), HIT);
    assert_eq!(model("x").source(&p), HIT);

    // `*` captures every explicit model, but not auto (name `auto` for that).
    let p = one_rule(json!({"model": ["*"]}));
    assert_eq!(model("anything").source(&p), HIT);
    assert_eq!(req().source(&p), MISS);
}

#[test]
fn task_condition() {
    let p = one_rule(json!({"task": ["coding", "math"]}));
    for (task, hit) in [
        (Task::Coding, true),
        (Task::Math, true),
        (Task::General, false),
        (Task::Vision, false),
    ] {
        let mut r = req();
        r.class.task = task;
        assert_eq!(r.source(&p) == HIT, hit, "{task:?}");
    }
}

#[test]
fn complexity_condition() {
    let p = one_rule(json!({"complexity": ["high", "xhigh"]}));
    for (level, hit) in [
        (Complexity::Low, false),
        (Complexity::Medium, false),
        (Complexity::High, true),
        (Complexity::Xhigh, true),
    ] {
        let mut r = req();
        r.class.complexity = level;
        assert_eq!(r.source(&p) == HIT, hit, "{level:?}");
    }
}

#[test]
fn tags_condition_any_of() {
    let p = one_rule(json!({"tags": ["legal", "medical"]}));
    for (tags, hit) in [
        (vec![], false),
        (vec!["finance"], false),
        (vec!["legal"], true),
        (vec!["finance", "medical"], true),
    ] {
        let mut r = req();
        r.class.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        assert_eq!(r.source(&p) == HIT, hit, "{tags:?}");
    }
}

#[test]
fn path_condition() {
    let p = one_rule(json!({"path": ["chat", "messages"]}));
    for (endpoint, hit) in [
        (Endpoint::ChatCompletions, true),
        (Endpoint::AnthropicMessages, true),
        (Endpoint::Completions, false),
        (Endpoint::Responses, false),
        (Endpoint::Embeddings, false),
    ] {
        let r = Req { endpoint, ..req() };
        assert_eq!(r.source(&p) == HIT, hit, "{endpoint:?}");
    }
    let p = one_rule(json!({"path": ["embeddings"]}));
    let r = Req {
        endpoint: Endpoint::Embeddings,
        ..req()
    };
    assert_eq!(r.source(&p), HIT);
}

#[test]
fn header_condition_exact() {
    let p = one_rule(json!({"headers": [{"name": "X-Team", "exact": "research"}]}));
    assert_eq!(req().header("x-team", "research").source(&p), HIT);
    assert_eq!(req().header("x-team", "Research").source(&p), MISS);
    assert_eq!(req().header("x-team", "research ").source(&p), MISS);
    assert_eq!(req().source(&p), MISS, "absent header");
}

#[test]
fn header_condition_regex_is_unanchored() {
    let p = one_rule(json!({"headers": [{"name": "x-tier", "regex": "gold|platinum"}]}));
    assert_eq!(req().header("x-tier", "gold").source(&p), HIT);
    assert_eq!(
        req().header("x-tier", "super-platinum-plus").source(&p),
        HIT
    );
    assert_eq!(req().header("x-tier", "silver").source(&p), MISS);
    assert_eq!(req().source(&p), MISS, "absent header");
    let p = one_rule(json!({"headers": [{"name": "x-tier", "regex": "^gold$"}]}));
    assert_eq!(req().header("x-tier", "golden").source(&p), MISS);
}

#[test]
fn header_condition_present() {
    let p = one_rule(json!({"headers": [{"name": "x-debug", "present": true}]}));
    assert_eq!(req().header("x-debug", "").source(&p), HIT);
    assert_eq!(req().source(&p), MISS);
    let p = one_rule(json!({"headers": [{"name": "x-debug", "present": false}]}));
    assert_eq!(req().source(&p), HIT);
    assert_eq!(req().header("x-debug", "1").source(&p), MISS);
}

#[test]
fn header_conditions_all_must_hold() {
    let p = one_rule(json!({"headers": [
        {"name": "x-team", "exact": "research"},
        {"name": "x-tier", "regex": "gold"}
    ]}));
    assert_eq!(
        req()
            .header("x-team", "research")
            .header("x-tier", "gold")
            .source(&p),
        HIT
    );
    assert_eq!(req().header("x-team", "research").source(&p), MISS);
    assert_eq!(req().header("x-tier", "gold").source(&p), MISS);
}

#[test]
fn header_names_are_looked_up_lower_case() {
    let p = one_rule(json!({"headers": [{"name": "X-Team", "exact": "a"}]}));
    let asked = std::cell::RefCell::new(Vec::new());
    let header = |name: &str| {
        asked.borrow_mut().push(name.to_owned());
        Some("a".to_owned())
    };
    let c = class();
    let prefs = ClientPrefs::default();
    let request = RouteRequest {
        endpoint: Endpoint::ChatCompletions,
        model: None,
        classification: &c,
        header: &header,
        prefs: &prefs,
        max_output_tokens: None,
        client: None,
        format: Default::default(),
    };
    let d = route(&p, &request, &mut FakeChooser::default()).expect("routes");
    assert_eq!(d.source, HIT);
    assert_eq!(asked.into_inner(), ["x-team"]);
}

#[test]
fn boolean_conditions() {
    for (field, set) in [
        (
            "stream",
            (|c: &mut Classification, v| c.stream = v) as fn(&mut Classification, bool),
        ),
        ("tools", |c, v| c.has_tools = v),
        ("images", |c, v| c.has_images = v),
    ] {
        for want in [true, false] {
            let p = one_rule(json!({ field: want }));
            for actual in [true, false] {
                let mut r = req();
                set(&mut r.class, actual);
                assert_eq!(
                    r.source(&p) == HIT,
                    want == actual,
                    "{field}: want {want}, request {actual}"
                );
            }
        }
    }
}

#[test]
fn prompt_token_bounds_are_inclusive() {
    let p = one_rule(json!({"min_prompt_tokens": 100, "max_prompt_tokens": 200}));
    for (tokens, hit) in [
        (0, false),
        (99, false),
        (100, true),
        (200, true),
        (201, false),
    ] {
        let mut r = req();
        r.class.estimated_prompt_tokens = tokens;
        assert_eq!(r.source(&p) == HIT, hit, "{tokens}");
    }
    let p = one_rule(json!({"min_prompt_tokens": 30000}));
    let mut r = req();
    r.class.estimated_prompt_tokens = u64::MAX;
    assert_eq!(r.source(&p), HIT);
    let p = one_rule(json!({"max_prompt_tokens": 0}));
    r.class.estimated_prompt_tokens = 0;
    assert_eq!(r.source(&p), HIT);
}

#[test]
fn all_conditions_must_hold() {
    let p = one_rule(json!({
        "model": ["gpt-4o*"], "task": ["coding"], "complexity": ["high"],
        "path": ["chat"], "stream": false, "tools": true,
        "headers": [{"name": "x-team", "present": true}]
    }));
    let full = || {
        let mut r = model("gpt-4o-mini").header("x-team", "x");
        r.class.task = Task::Coding;
        r.class.complexity = Complexity::High;
        r.class.has_tools = true;
        r
    };
    assert_eq!(full().source(&p), HIT);
    let mut r = full();
    r.model = Some("o1".to_owned());
    assert_ne!(r.source(&p), HIT);
    let mut r = full();
    r.class.task = Task::Math;
    assert_ne!(r.source(&p), HIT);
    let mut r = full();
    r.class.complexity = Complexity::Xhigh;
    assert_ne!(r.source(&p), HIT);
    let mut r = full();
    r.endpoint = Endpoint::Responses;
    assert_ne!(r.source(&p), HIT);
    let mut r = full();
    r.class.stream = true;
    assert_ne!(r.source(&p), HIT);
    let mut r = full();
    r.class.has_tools = false;
    assert_ne!(r.source(&p), HIT);
    let mut r = full();
    r.headers.clear();
    assert_ne!(r.source(&p), HIT);
}

#[test]
fn first_matching_rule_wins() {
    let p = plan_of(json!({
        "rules": [
            rule("never", json!({"task": ["vision"]}), "c"),
            rule("coding", json!({"task": ["coding"]}), "a"),
            rule("catch-all", json!({}), "b"),
            rule("coding-again", json!({"task": ["coding"]}), "c")
        ]
    }));
    let mut r = req();
    r.class.task = Task::Coding;
    let d = ok(&p, &r);
    assert_eq!(d.source, "rule:coding");
    assert_eq!(names(&p, &d), ["a/coding"]);
    let d = ok(&p, &req());
    assert_eq!(d.source, "rule:catch-all");
    assert_eq!(names(&p, &d), ["b/catch-all"]);
}

// ---------------------------------------------------------------------------------------
// Aliases, unknown models, default
// ---------------------------------------------------------------------------------------

fn alias_plan(extra: Value) -> Plan {
    let mut v = json!({
        "models": {
            "fast": {"targets": [{"upstream": "a", "model": "a-small"},
                                 {"upstream": "b", "model": "b-small"}]},
            "smart": {"targets": [{"upstream": "c", "model": "c-large"}]}
        },
        "rules": [rule("coding", json!({"task": ["coding"]}), "c")],
        "default": {"use_model": "fast"}
    });
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    plan_of(v)
}

#[test]
fn alias_by_model_name() {
    let p = alias_plan(json!({}));
    let d = ok(&p, &model("smart"));
    assert_eq!(d.source, "model:smart");
    assert_eq!(names(&p, &d), ["c/c-large"]);
    assert_eq!(d.strategy, Strategy::Priority);
    assert!(d.allow_fallbacks);
    assert_eq!(d.chosen().map(|c| c.model.as_str()), Some("c-large"));

    let d = ok(&p, &model("fast"));
    assert_eq!(d.source, "model:fast");
    assert_eq!(
        names(&p, &d),
        ["a/a-small", "b/b-small"],
        "all targets, for failover"
    );
}

#[test]
fn an_explicit_alias_is_not_captured_by_rules_without_model() {
    let p = alias_plan(json!({}));
    let mut r = model("fast");
    r.class.task = Task::Coding;
    assert_eq!(r.source(&p), "model:fast");
    let mut r = req();
    r.class.task = Task::Coding;
    assert_eq!(r.source(&p), "rule:coding");
}

#[test]
fn a_rule_naming_the_model_beats_the_alias() {
    let p = plan_of(json!({
        "models": {"fast": {"targets": [{"upstream": "a", "model": "a-small"}]}},
        "rules": [rule("fast-to-b", json!({"model": ["fast"]}), "b")]
    }));
    let d = ok(&p, &model("fast"));
    assert_eq!(d.source, "rule:fast-to-b");
    assert_eq!(names(&p, &d), ["b/fast-to-b"]);
}

#[test]
fn alias_lookup_is_exact() {
    let p = alias_plan(json!({}));
    assert_eq!(
        model("Fast").run(&p),
        Err(RouteError::UnknownModel("Fast".to_owned()))
    );
    assert_eq!(
        model("a-small").run(&p),
        Err(RouteError::UnknownModel("a-small".to_owned())),
        "an upstream model id is not an alias"
    );
}

#[test]
fn default_for_auto() {
    let p = alias_plan(json!({}));
    let d = ok(&p, &req());
    assert_eq!(d.source, "default");
    assert_eq!(names(&p, &d), ["a/a-small", "b/b-small"]);
}

#[test]
fn without_default_auto_gets_no_candidate() {
    let p = plan_of(json!({"models": {"m": {"targets": [{"upstream": "a", "model": "x"}]}}}));
    let why = no_candidate(&p, &req());
    assert!(why.contains("no default route"), "{why}");
}

#[test]
fn unknown_model_is_rejected_by_default() {
    let p = alias_plan(json!({}));
    assert_eq!(
        model("gpt-5").run(&p),
        Err(RouteError::UnknownModel("gpt-5".to_owned()))
    );
}

#[test]
fn unknown_model_passthrough() {
    let p = alias_plan(json!({"unknown_model": "passthrough", "passthrough_upstream": "local"}));
    let d = ok(&p, &model("my-fine-tune:v2"));
    assert_eq!(d.source, "passthrough");
    assert_eq!(d.strategy, Strategy::Priority);
    assert_eq!(
        names(&p, &d),
        ["local/my-fine-tune:v2"],
        "the model is forwarded unchanged"
    );
    // Aliases and rules still come first.
    assert_eq!(model("fast").source(&p), "model:fast");
    assert_eq!(req().source(&p), "default");
}

#[test]
fn passthrough_upstream_without_passthrough_mode_is_unused() {
    let p = alias_plan(json!({"passthrough_upstream": "local"}));
    assert_eq!(
        model("x").run(&p),
        Err(RouteError::UnknownModel("x".to_owned()))
    );
}

#[test]
fn passthrough_respects_preferences_and_keys() {
    let p = plan_with_env(
        json!({
            "upstreams": {"a": {"auth": {"type": "bearer", "key_env": "A_KEY"}}},
            "unknown_model": "passthrough",
            "passthrough_upstream": "a"
        }),
        &|_| None,
    );
    let why = no_candidate(&p, &model("m"));
    assert!(why.contains("(passthrough)"), "{why}");
    assert!(why.contains("A_KEY"), "{why}");
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn strategy_plan(strategy: &str, targets: Value) -> Plan {
    plan_of(json!({"models": {"m": {"strategy": strategy, "targets": targets}}}))
}

fn three_targets() -> Value {
    json!([
        {"upstream": "a", "model": "m-a", "weight": 3, "price": {"input": 1, "output": 1}},
        {"upstream": "b", "model": "m-b", "weight": 1, "price": {"input": 1, "output": 1}},
        {"upstream": "c", "model": "m-c", "weight": 2, "price": {"input": 1, "output": 1}}
    ])
}

#[test]
fn priority_keeps_the_configured_order() {
    let p = strategy_plan("priority", three_targets());
    let mut chooser = FakeChooser::default();
    let d = model("m").run_with(&p, &mut chooser).expect("routes");
    assert_eq!(d.strategy, Strategy::Priority);
    assert_eq!(names(&p, &d), ["a/m-a", "b/m-b", "c/m-c"]);
    assert_eq!(chooser.random_calls, 0);
    assert!(chooser.turn_keys.is_empty());
}

#[test]
fn weighted_picks_in_proportion_to_weight() {
    let p = strategy_plan("weighted", three_targets());
    // Total weight 6: tickets 0-2 → a, 3 → b, 4-5 → c; the rest keep their order.
    let expect = [
        (0, ["a/m-a", "b/m-b", "c/m-c"]),
        (2, ["a/m-a", "b/m-b", "c/m-c"]),
        (3, ["b/m-b", "a/m-a", "c/m-c"]),
        (4, ["c/m-c", "a/m-a", "b/m-b"]),
        (5, ["c/m-c", "a/m-a", "b/m-b"]),
        (6, ["a/m-a", "b/m-b", "c/m-c"]),
        (9, ["b/m-b", "a/m-a", "c/m-c"]),
        (u64::MAX, ["b/m-b", "a/m-a", "c/m-c"]), // u64::MAX % 6 == 3
    ];
    for (random, order) in expect {
        let mut chooser = FakeChooser::with_randoms(&[random]);
        let d = model("m").run_with(&p, &mut chooser).expect("routes");
        assert_eq!(d.strategy, Strategy::Weighted);
        assert_eq!(names(&p, &d), order, "random {random}");
        assert_eq!(chooser.random_calls, 1);
    }
}

#[test]
fn weighted_distribution_over_all_tickets() {
    let p = strategy_plan("weighted", three_targets());
    let mut counts: HashMap<String, u32> = HashMap::new();
    for ticket in 0..600 {
        let mut chooser = FakeChooser::with_randoms(&[ticket]);
        let d = model("m").run_with(&p, &mut chooser).expect("routes");
        *counts.entry(names(&p, &d)[0].clone()).or_default() += 1;
    }
    assert_eq!(counts["a/m-a"], 300);
    assert_eq!(counts["b/m-b"], 100);
    assert_eq!(counts["c/m-c"], 200);
}

#[test]
fn round_robin_takes_turns_by_action_name() {
    let p = plan_of(json!({
        "models": {"spread": {"strategy": "round_robin", "targets": [
            {"upstream": "a", "model": "x"}, {"upstream": "b", "model": "x"},
            {"upstream": "c", "model": "x"}]}},
        "rules": [{"name": "rr", "match": {"task": ["coding"]}, "use_model": "spread"}]
    }));
    let mut chooser = FakeChooser::default();
    let firsts: Vec<String> = (0..4)
        .map(|_| {
            let d = model("spread").run_with(&p, &mut chooser).expect("routes");
            assert_eq!(d.strategy, Strategy::RoundRobin);
            assert_eq!(d.candidates.len(), 3);
            names(&p, &d)[0].clone()
        })
        .collect();
    assert_eq!(firsts, ["a/x", "b/x", "c/x", "a/x"]);
    // Rotation: the failover order continues after the chosen one.
    let d = model("spread").run_with(&p, &mut chooser).expect("routes");
    assert_eq!(names(&p, &d), ["b/x", "c/x", "a/x"]);
    assert!(chooser.turn_keys.iter().all(|k| k == "spread"));

    // A rule using the alias counts its own turns.
    let mut r = req();
    r.class.task = Task::Coding;
    let d = r.run_with(&p, &mut chooser).expect("routes");
    assert_eq!(d.source, "rule:rr");
    assert_eq!(names(&p, &d)[0], "a/x");
    assert_eq!(
        chooser.turn_keys.last().map(String::as_str),
        Some("rule:rr")
    );
}

#[test]
fn round_robin_turn_is_taken_modulo_the_pool() {
    let p = plan_of(
        json!({"models": {"s": {"strategy": "round_robin", "targets": [
        {"upstream": "a", "model": "x"}, {"upstream": "b", "model": "x"}]}}}),
    );
    let mut chooser = FakeChooser::default();
    chooser.turns.insert("s".to_owned(), u64::MAX);
    let d = model("s").run_with(&p, &mut chooser).expect("routes");
    // u64::MAX is odd: the second target.
    assert_eq!(names(&p, &d), ["b/x", "a/x"]);
}

#[test]
fn a_single_candidate_takes_no_turn_and_no_randomness() {
    for strategy in ["round_robin", "weighted"] {
        let p = plan_of(json!({"models": {"s": {"strategy": strategy, "targets": [
            {"upstream": "a", "model": "x"}]}}}));
        let mut chooser = FakeChooser::default();
        let d = model("s").run_with(&p, &mut chooser).expect("routes");
        assert_eq!(names(&p, &d), ["a/x"]);
        assert!(chooser.turn_keys.is_empty(), "{strategy}");
        assert_eq!(chooser.random_calls, 0, "{strategy}");
    }
}

fn cheapest_plan() -> Plan {
    // Per million tokens: `in-heavy` is cheap to read, `out-heavy` cheap to write.
    strategy_plan(
        "cheapest",
        json!([
            {"upstream": "a", "model": "in-heavy", "price": {"input": 5.0, "output": 1.0}},
            {"upstream": "b", "model": "out-heavy", "price": {"input": 1.0, "output": 10.0}},
            {"upstream": "c", "model": "same-as-a", "price": {"input": 5.0, "output": 1.0}}
        ]),
    )
}

#[test]
fn cheapest_uses_prompt_estimate_and_max_tokens() {
    let p = cheapest_plan();
    // 1000 prompt, 10 output: in-heavy 5010, out-heavy 1100 → out-heavy.
    let mut r = model("m");
    r.class.estimated_prompt_tokens = 1000;
    r.max_output_tokens = Some(10);
    let d = ok(&p, &r);
    assert_eq!(d.strategy, Strategy::Cheapest);
    assert_eq!(names(&p, &d), ["b/out-heavy", "a/in-heavy", "c/same-as-a"]);

    // 1000 prompt, 2000 output: in-heavy 7000, out-heavy 21000 → in-heavy; ties keep order.
    r.max_output_tokens = Some(2000);
    let d = ok(&p, &r);
    assert_eq!(names(&p, &d), ["a/in-heavy", "c/same-as-a", "b/out-heavy"]);
}

#[test]
fn cheapest_assumes_512_output_tokens() {
    assert_eq!(ASSUMED_OUTPUT_TOKENS, 512);
    let p = cheapest_plan();
    // Break-even prompt size with 512 output tokens: 5p + 512 = p + 5120 → p = 1152.
    let mut r = model("m");
    r.class.estimated_prompt_tokens = 1151;
    assert_eq!(names(&p, &ok(&p, &r))[0], "a/in-heavy");
    r.class.estimated_prompt_tokens = 1153;
    assert_eq!(names(&p, &ok(&p, &r))[0], "b/out-heavy");
    // With an explicit max_tokens of 512 the result is the same as without.
    r.max_output_tokens = Some(512);
    assert_eq!(names(&p, &ok(&p, &r))[0], "b/out-heavy");
}

#[test]
fn least_busy_and_lowest_latency_keep_priority_order() {
    for strategy in [
        ("least_busy", Strategy::LeastBusy),
        ("lowest_latency", Strategy::LowestLatency),
    ] {
        let p = strategy_plan(strategy.0, three_targets());
        let mut chooser = FakeChooser::with_randoms(&[4]);
        let d = model("m").run_with(&p, &mut chooser).expect("routes");
        assert_eq!(d.strategy, strategy.1);
        assert_eq!(names(&p, &d), ["a/m-a", "b/m-b", "c/m-c"], "{}", strategy.0);
        assert_eq!(chooser.random_calls, 0);
        assert!(chooser.turn_keys.is_empty());
    }
}

fn target(upstream: usize, weight: u32, price: Option<(f64, f64)>) -> Target {
    Target {
        upstream,
        model: format!("m{upstream}"),
        weight,
        price: price.map(|(input, output)| Price {
            input,
            output,
            cached_input: input,
        }),
        budget: Budget::default(),
        key: format!("k{upstream}"),
        caps: Default::default(),
    }
}

#[test]
fn select_order_direct() {
    let targets = [
        target(0, 0, None),
        target(1, 0, Some((1.0, 1.0))),
        target(2, 2, Some((0.5, 0.5))),
    ];
    let pool: Vec<&Target> = targets.iter().collect();
    let ups = |v: Vec<&Target>| v.iter().map(|t| t.upstream).collect::<Vec<_>>();

    // Weighted: zero weights are never chosen while another has weight.
    for ticket in 0..10 {
        let mut c = FakeChooser::with_randoms(&[ticket]);
        let out = select::order(Strategy::Weighted, &pool, "k", 0, 0, &mut c);
        assert_eq!(ups(out), [2, 0, 1]);
    }
    // Weighted with a total weight of zero keeps the order and asks for nothing.
    let zero = [target(0, 0, None), target(1, 0, None)];
    let zero_pool: Vec<&Target> = zero.iter().collect();
    let mut c = FakeChooser::default();
    let out = select::order(Strategy::Weighted, &zero_pool, "k", 0, 0, &mut c);
    assert_eq!(ups(out), [0, 1]);
    assert_eq!(c.random_calls, 0);

    // Cheapest: a target without a price costs infinity and goes last.
    let mut c = FakeChooser::default();
    let out = select::order(Strategy::Cheapest, &pool, "k", 100, 100, &mut c);
    assert_eq!(ups(out), [2, 1, 0]);

    // Round robin uses the key it is given.
    let mut c = FakeChooser::default();
    let out = select::order(Strategy::RoundRobin, &pool, "the-key", 0, 0, &mut c);
    assert_eq!(ups(out), [0, 1, 2]);
    let out = select::order(Strategy::RoundRobin, &pool, "the-key", 0, 0, &mut c);
    assert_eq!(ups(out), [1, 2, 0]);
    assert_eq!(c.turn_keys, ["the-key", "the-key"]);

    // Empty pool: nothing to order.
    let mut c = FakeChooser::default();
    assert!(select::order(Strategy::RoundRobin, &[], "k", 0, 0, &mut c).is_empty());
}

#[test]
fn cost_formula() {
    let t = target(0, 1, Some((2.0, 8.0)));
    // (2 × 1_000_000 + 8 × 500_000) / 1_000_000 = 6.
    assert_eq!(select::cost(&t, 1_000_000, 500_000), 6.0);
    assert_eq!(select::cost(&t, 0, 0), 0.0);
    assert_eq!(select::cost(&target(0, 1, None), 1, 1), f64::INFINITY);
}

// ---------------------------------------------------------------------------------------
// Client preferences
// ---------------------------------------------------------------------------------------

fn prefs_plan() -> Plan {
    plan_of(json!({
        "models": {"m": {"targets": [
            {"upstream": "a", "model": "gpt-4o-mini", "price": {"input": 3, "output": 3}},
            {"upstream": "b", "model": "llama-3.1-8b", "price": {"input": 2, "output": 2}},
            {"upstream": "c", "model": "gpt-4o", "price": {"input": 1, "output": 1}}
        ]}},
        "default": {"use_model": "m"}
    }))
}

#[test]
fn allowed_models_by_model_id_glob() {
    let p = prefs_plan();
    let d = ok(&p, &model("m").prefs(json!({"allowed_models": ["gpt-*"]})));
    assert_eq!(names(&p, &d), ["a/gpt-4o-mini", "c/gpt-4o"]);
    let d = ok(&p, &model("m").prefs(json!({"allowed_models": ["gpt-4o"]})));
    assert_eq!(names(&p, &d), ["c/gpt-4o"], "a literal is exact");
    let d = ok(
        &p,
        &model("m").prefs(json!({"allowed_models": ["llama-*", "gpt-4o"]})),
    );
    assert_eq!(names(&p, &d), ["b/llama-3.1-8b", "c/gpt-4o"]);
}

#[test]
fn allowed_models_by_qualified_name() {
    let p = prefs_plan();
    let d = ok(&p, &model("m").prefs(json!({"allowed_models": ["b/*"]})));
    assert_eq!(names(&p, &d), ["b/llama-3.1-8b"]);
    let d = ok(
        &p,
        &model("m").prefs(json!({"allowed_models": ["c/gpt-4o"]})),
    );
    assert_eq!(names(&p, &d), ["c/gpt-4o"]);
    let d = ok(
        &p,
        &model("m").prefs(json!({"allowed_models": ["*/gpt-4o*"]})),
    );
    assert_eq!(names(&p, &d), ["a/gpt-4o-mini", "c/gpt-4o"]);
}

#[test]
fn allowed_models_excluding_everything() {
    let p = prefs_plan();
    let why = no_candidate(
        &p,
        &model("m").prefs(json!({"allowed_models": ["claude-*"]})),
    );
    assert_eq!(
        why,
        "No target is available for this request (model:m): excluded by allowed_models."
    );
    let why = no_candidate(&p, &req().prefs(json!({"allowed_models": ["claude-*"]})));
    assert!(why.contains("(default)"), "{why}");
}

#[test]
fn empty_allowed_models_allows_everything() {
    let p = prefs_plan();
    let d = ok(&p, &model("m").prefs(json!({"allowed_models": []})));
    assert_eq!(d.candidates.len(), 3);
    let d = ok(&p, &model("m").prefs(json!({"allowed_models": null})));
    assert_eq!(d.candidates.len(), 3);
}

#[test]
fn provider_only_is_case_insensitive() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"only": ["C", "a"]}})),
    );
    assert_eq!(
        names(&p, &d),
        ["a/gpt-4o-mini", "c/gpt-4o"],
        "configured order kept"
    );
    let why = no_candidate(
        &p,
        &model("m").prefs(json!({"provider": {"only": ["zzz"]}})),
    );
    assert!(why.ends_with(": excluded by provider.only."), "{why}");
    // An empty `only` list admits nothing.
    let why = no_candidate(&p, &model("m").prefs(json!({"provider": {"only": []}})));
    assert!(why.contains("provider.only"), "{why}");
}

#[test]
fn provider_ignore() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"ignore": ["A"]}})),
    );
    assert_eq!(names(&p, &d), ["b/llama-3.1-8b", "c/gpt-4o"]);
    let why = no_candidate(
        &p,
        &model("m").prefs(json!({"provider": {"ignore": ["a", "b", "c"]}})),
    );
    assert!(why.ends_with(": excluded by provider.ignore."), "{why}");
}

#[test]
fn provider_order_puts_named_upstreams_first() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"order": ["C", "b"]}})),
    );
    assert_eq!(
        names(&p, &d),
        ["c/gpt-4o", "b/llama-3.1-8b", "a/gpt-4o-mini"]
    );
    // Unknown names in `order` are skipped.
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"order": ["nope", "b"]}})),
    );
    assert_eq!(
        names(&p, &d),
        ["b/llama-3.1-8b", "a/gpt-4o-mini", "c/gpt-4o"]
    );
}

#[test]
fn provider_order_overrides_the_strategy() {
    let p = strategy_plan("weighted", three_targets());
    let mut chooser = FakeChooser::with_randoms(&[4]);
    let r = model("m").prefs(json!({"provider": {"order": ["b"]}}));
    let d = r.run_with(&p, &mut chooser).expect("routes");
    assert_eq!(names(&p, &d), ["b/m-b", "a/m-a", "c/m-c"]);
    assert_eq!(chooser.random_calls, 0);
}

#[test]
fn provider_order_without_fallbacks() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"order": ["c", "b"], "allow_fallbacks": false}})),
    );
    assert_eq!(names(&p, &d), ["c/gpt-4o"]);
    assert!(!d.allow_fallbacks);
    // When nothing named in `order` is a candidate, the first configured one is used.
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"order": ["zzz"], "allow_fallbacks": false}})),
    );
    assert_eq!(names(&p, &d), ["a/gpt-4o-mini"]);
}

#[test]
fn allow_fallbacks_false_keeps_only_the_choice() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"allow_fallbacks": false}})),
    );
    assert_eq!(names(&p, &d), ["a/gpt-4o-mini"]);
    assert!(!d.allow_fallbacks);
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"allow_fallbacks": true}})),
    );
    assert_eq!(d.candidates.len(), 3);
    assert!(d.allow_fallbacks);
}

#[test]
fn provider_sort_overrides_the_strategy() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"sort": "price"}})),
    );
    assert_eq!(d.strategy, Strategy::Cheapest);
    assert_eq!(
        names(&p, &d),
        ["c/gpt-4o", "b/llama-3.1-8b", "a/gpt-4o-mini"]
    );
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"sort": "latency"}})),
    );
    assert_eq!(d.strategy, Strategy::LowestLatency);
    assert_eq!(names(&p, &d)[0], "a/gpt-4o-mini");
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"sort": "throughput"}})),
    );
    assert_eq!(d.strategy, Strategy::LeastBusy);
    assert_eq!(names(&p, &d)[0], "a/gpt-4o-mini");

    // Sorting by price over targets without prices keeps their order.
    let p = strategy_plan(
        "round_robin",
        json!([
        {"upstream": "a", "model": "x"}, {"upstream": "b", "model": "y"}]),
    );
    let mut chooser = FakeChooser::default();
    let r = model("m").prefs(json!({"provider": {"sort": "price"}}));
    let d = r.run_with(&p, &mut chooser).expect("routes");
    assert_eq!(names(&p, &d), ["a/x", "b/y"]);
    assert!(
        chooser.turn_keys.is_empty(),
        "round robin replaced by price"
    );
}

#[test]
fn sort_and_no_fallbacks_combine() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({"provider": {"sort": "price", "allow_fallbacks": false}})),
    );
    assert_eq!(names(&p, &d), ["c/gpt-4o"]);
}

#[test]
fn preferences_combine() {
    let p = prefs_plan();
    let d = ok(
        &p,
        &model("m").prefs(json!({
            "allowed_models": ["gpt-*"],
            "provider": {"ignore": ["c"], "order": ["b"]}
        })),
    );
    assert_eq!(names(&p, &d), ["a/gpt-4o-mini"]);
}

// ---------------------------------------------------------------------------------------
// NoCandidate reasons
// ---------------------------------------------------------------------------------------

#[test]
fn missing_key_upstreams_are_skipped() {
    let env = |name: &str| (name != "A_KEY").then(|| "k".to_owned());
    let p = plan_with_env(
        json!({
            "upstreams": {
                "a": {"auth": {"type": "bearer", "key_env": "A_KEY"}},
                "b": {"auth": {"type": "bearer", "key_env": "B_KEY"}}
            },
            "models": {
                "both": {"targets": [{"upstream": "a", "model": "x"}, {"upstream": "b", "model": "y"}]},
                "only-a": {"targets": [{"upstream": "a", "model": "x"}]}
            }
        }),
        &env,
    );
    let d = ok(&p, &model("both"));
    assert_eq!(names(&p, &d), ["b/y"]);
    let why = no_candidate(&p, &model("only-a"));
    assert_eq!(
        why,
        "No target is available for this request (model:only-a): \
         upstream `a` has no API key (A_KEY is not set)."
    );
}

#[test]
fn reasons_are_deduplicated_and_joined() {
    let env = |name: &str| (name != "A_KEY").then(|| "k".to_owned());
    let p = plan_with_env(
        json!({
            "upstreams": {
                "a": {"auth": {"type": "bearer", "key_env": "A_KEY"}},
                "b": {}, "c": {}
            },
            "models": {"m": {"targets": [
                {"upstream": "a", "model": "x1"},
                {"upstream": "a", "model": "x2"},
                {"upstream": "b", "model": "y"},
                {"upstream": "c", "model": "z1"},
                {"upstream": "c", "model": "z2"}
            ]}}
        }),
        &env,
    );
    let why = no_candidate(
        &p,
        &model("m").prefs(json!({"provider": {"ignore": ["b", "c"]}})),
    );
    assert_eq!(
        why,
        "No target is available for this request (model:m): \
         upstream `a` has no API key (A_KEY is not set); excluded by provider.ignore."
    );
    // Preferences are checked before keys: an ignored upstream is reported as ignored.
    let why = no_candidate(
        &p,
        &model("m").prefs(json!({"provider": {"only": ["zzz"]}})),
    );
    assert_eq!(
        why,
        "No target is available for this request (model:m): excluded by provider.only."
    );
}

#[test]
fn rule_source_appears_in_the_reason() {
    let p = plan_with_env(
        json!({
            "upstreams": {"a": {"auth": {"type": "api-key", "key_env": "AZ"}}},
            "rules": [{"name": "all", "targets": [{"upstream": "a", "model": "x"}]}]
        }),
        &|_| None,
    );
    let why = no_candidate(&p, &req());
    assert!(why.contains("(rule:all)"), "{why}");
    assert!(why.contains("AZ is not set"), "{why}");
}

// ---------------------------------------------------------------------------------------
// Parsing the client's preferences
// ---------------------------------------------------------------------------------------

fn prefs_err(body: Value) -> crate::errors::ApiError {
    let Value::Object(map) = body else {
        panic!("not an object")
    };
    ClientPrefs::from_body(&map).expect_err("refused")
}

#[test]
fn router_fields() {
    assert_eq!(ROUTER_FIELDS, ["allowed_models", "provider"]);
}

#[test]
fn prefs_defaults() {
    let p = ClientPrefs::from_body(&Map::new()).expect("empty body");
    assert_eq!(p, ClientPrefs::default());
    assert!(p.allow_fallbacks);
    assert!(p.only.is_none());
    assert_eq!(p.strategy_override(), None);
    let p = prefs(json!({"allowed_models": null, "provider": null}));
    assert_eq!(p, ClientPrefs::default());
    let p = prefs(
        json!({"provider": {"only": null, "ignore": null, "order": null,
                                       "sort": null, "allow_fallbacks": null}}),
    );
    assert_eq!(p, ClientPrefs::default());
}

#[test]
fn prefs_are_parsed_and_lower_cased() {
    let p = prefs(json!({
        "allowed_models": ["GPT-*", "b/x"],
        "provider": {"only": ["OpenAI"], "ignore": ["Groq"], "order": ["Azure", "openai"],
                     "sort": "throughput", "allow_fallbacks": false,
                     "data_collection": "deny", "quantizations": ["fp8"]}
    }));
    assert_eq!(
        p.allowed_models,
        [Glob::new("GPT-*"), Glob::new("b/x")],
        "globs keep their case: model ids are case-sensitive"
    );
    assert_eq!(p.only, Some(vec!["openai".to_owned()]));
    assert_eq!(p.ignore, ["groq"]);
    assert_eq!(p.order, ["azure", "openai"]);
    assert_eq!(p.sort, Some(Sort::Throughput));
    assert!(!p.allow_fallbacks);
    assert_eq!(p.strategy_override(), Some(Strategy::LeastBusy));
    assert_eq!(
        prefs(json!({"provider": {"sort": "price"}})).strategy_override(),
        Some(Strategy::Cheapest)
    );
    assert_eq!(
        prefs(json!({"provider": {"sort": "latency"}})).strategy_override(),
        Some(Strategy::LowestLatency)
    );
}

#[test]
fn prefs_errors_name_the_param() {
    let cases = [
        (
            json!({"allowed_models": "gpt-*"}),
            "allowed_models",
            "invalid_type",
        ),
        (
            json!({"allowed_models": [1]}),
            "allowed_models",
            "invalid_type",
        ),
        (
            json!({"allowed_models": [""]}),
            "allowed_models",
            "invalid_type",
        ),
        (
            json!({"allowed_models": [null]}),
            "allowed_models",
            "invalid_type",
        ),
        (json!({"provider": "openai"}), "provider", "invalid_type"),
        (json!({"provider": ["openai"]}), "provider", "invalid_type"),
        (
            json!({"provider": {"only": "openai"}}),
            "provider.only",
            "invalid_type",
        ),
        (
            json!({"provider": {"ignore": [true]}}),
            "provider.ignore",
            "invalid_type",
        ),
        (
            json!({"provider": {"order": {}}}),
            "provider.order",
            "invalid_type",
        ),
        (
            json!({"provider": {"sort": "cost"}}),
            "provider.sort",
            "invalid_value",
        ),
        (
            json!({"provider": {"sort": 1}}),
            "provider.sort",
            "invalid_type",
        ),
        (
            json!({"provider": {"allow_fallbacks": "false"}}),
            "provider.allow_fallbacks",
            "invalid_type",
        ),
    ];
    for (body, param, code) in cases {
        let e = prefs_err(body.clone());
        assert_eq!(e.status, 400, "{body}");
        assert_eq!(e.param, Some(param), "{body}");
        assert_eq!(e.code, code, "{body}");
        assert_eq!(e.kind, "invalid_request_error");
        assert!(e.message.contains(param), "{body}: {}", e.message);
    }
}

#[test]
fn prefs_list_limits() {
    let list =
        |n: usize, len: usize| -> Vec<String> { (0..n).map(|i| format!("{i:0>len$}")).collect() };
    prefs(json!({"allowed_models": list(64, 256)}));
    prefs(json!({"provider": {"only": list(64, 256)}}));
    let e = prefs_err(json!({"allowed_models": list(65, 3)}));
    assert_eq!(e.param, Some("allowed_models"));
    let e = prefs_err(json!({"provider": {"order": list(1, 257)}}));
    assert_eq!(e.param, Some("provider.order"));
    let e = prefs_err(json!({"provider": {"ignore": list(65, 3)}}));
    assert_eq!(e.param, Some("provider.ignore"));
    // The length limit is counted in bytes.
    prefs(json!({"allowed_models": ["é".repeat(128)]}));
    let e = prefs_err(json!({"allowed_models": ["é".repeat(129)]}));
    assert_eq!(e.param, Some("allowed_models"));
}

#[test]
fn excludes_and_apply_order_directly() {
    let p =
        prefs(json!({"allowed_models": ["x*"], "provider": {"only": ["a", "b"], "ignore": ["b"]}}));
    assert_eq!(
        p.excludes("A", "x1"),
        None,
        "upstream names compare case-insensitively"
    );
    assert_eq!(
        p.excludes("a", "y1").as_deref(),
        Some("excluded by allowed_models")
    );
    assert_eq!(
        p.excludes("c", "x1").as_deref(),
        Some("excluded by provider.only")
    );
    assert_eq!(
        p.excludes("b", "x1").as_deref(),
        Some("excluded by provider.ignore")
    );

    let targets = [target(0, 1, None), target(1, 1, None), target(2, 1, None)];
    let pool: Vec<&Target> = targets.iter().collect();
    let names = ["a", "b", "c"];
    let name_of = |t: &Target| names[t.upstream];
    let p = prefs(json!({"provider": {"order": ["c", "C", "a"]}}));
    let out: Vec<usize> = p
        .apply_order(&pool, name_of)
        .iter()
        .map(|t| t.upstream)
        .collect();
    assert_eq!(out, [2, 0, 1], "a name repeated in order is used once");
}

// ---------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------

fn status(availability: Availability, in_flight: u32, latency_ms: Option<u64>) -> TargetStatus {
    TargetStatus {
        availability,
        in_flight,
        latency_ms,
    }
}

fn down(until_ms: u64) -> TargetStatus {
    status(
        Availability::Unavailable {
            until_ms,
            reason: Unhealthy::CoolingDown,
        },
        0,
        None,
    )
}

fn health_chooser(entries: &[(&str, TargetStatus)]) -> FakeChooser {
    FakeChooser {
        health: entries
            .iter()
            .map(|(k, s)| (format!("llm_router.h.{k}"), *s))
            .collect(),
        ..FakeChooser::default()
    }
}

/// Alias `x` over a/m-a, b/m-b, c/m-c with `strategy`, plus `extra` top-level members.
fn three(strategy: &str, extra: Value) -> Plan {
    let mut v = json!({"models": {"x": {"strategy": strategy, "targets": [
        {"upstream": "a", "model": "m-a", "weight": 1, "price": {"input": 3, "output": 3}},
        {"upstream": "b", "model": "m-b", "weight": 1, "price": {"input": 2, "output": 2}},
        {"upstream": "c", "model": "m-c", "weight": 1, "price": {"input": 1, "output": 1}}]}}});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    plan_of(v)
}

fn route_x(plan: &Plan, chooser: &mut FakeChooser) -> Result<Decision, RouteError> {
    model("x").run_with(plan, chooser)
}

#[test]
fn health_is_read_once_per_candidate_by_key() {
    let p = three("priority", json!({}));
    let mut c = FakeChooser::default();
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(names(&p, &d), ["a/m-a", "b/m-b", "c/m-c"]);
    assert_eq!(
        c.health_keys,
        [
            "llm_router.h.a/m-a",
            "llm_router.h.b/m-b",
            "llm_router.h.c/m-c"
        ]
    );
    assert!(d
        .candidates
        .iter()
        .all(|c| c.availability == Availability::Available));
    assert_eq!(d.candidates[1].key, "llm_router.h.b/m-b");
}

#[test]
fn every_ordering_strategy_skips_unavailable_targets() {
    for strategy in ["priority", "weighted", "round_robin", "cheapest"] {
        let p = three(strategy, json!({}));
        // c is the cheapest and a is first in priority: take both out.
        let mut c = health_chooser(&[("a/m-a", down(5_000)), ("c/m-c", down(3_000))]);
        let d = route_x(&p, &mut c).expect("decision");
        assert_eq!(
            names(&p, &d),
            ["b/m-b", "c/m-c", "a/m-a"],
            "{strategy}: the usable one first, then the unusable soonest back first"
        );
        assert_eq!(d.candidates[0].availability, Availability::Available);
        assert_eq!(d.candidates[1].availability.ready_at(), 3_000);
    }
}

#[test]
fn weighted_and_round_robin_choose_among_usable_targets_only() {
    let p = three("weighted", json!({}));
    // The ticket 1 of total 2 (a is out) picks the second usable target, c.
    let mut c = health_chooser(&[("a/m-a", down(1))]);
    c.randoms = [1].into_iter().collect();
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(names(&p, &d)[0], "c/m-c");
    let p = three("round_robin", json!({}));
    let mut c = health_chooser(&[("b/m-b", down(1))]);
    let firsts: Vec<String> = (0..4)
        .map(|_| names(&p, &route_x(&p, &mut c).expect("decision"))[0].clone())
        .collect();
    assert_eq!(firsts, ["a/m-a", "c/m-c", "a/m-a", "c/m-c"]);
}

#[test]
fn a_probe_able_target_keeps_its_place() {
    let p = three("priority", json!({}));
    let mut c = health_chooser(&[("a/m-a", status(Availability::Probe, 0, None))]);
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(names(&p, &d)[0], "a/m-a");
    assert_eq!(d.candidates[0].availability, Availability::Probe);
}

#[test]
fn least_busy_orders_by_requests_in_flight() {
    let p = three("least_busy", json!({}));
    let mut c = health_chooser(&[
        ("a/m-a", status(Availability::Available, 5, None)),
        ("b/m-b", status(Availability::Available, 2, None)),
        ("c/m-c", status(Availability::Available, 2, None)),
    ]);
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(
        names(&p, &d),
        ["b/m-b", "c/m-c", "a/m-a"],
        "ties keep the order"
    );
    // The idle one is cooling down: it goes last.
    let mut c = health_chooser(&[
        ("a/m-a", status(Availability::Available, 5, None)),
        ("b/m-b", status(Availability::Available, 2, None)),
        ("c/m-c", down(9)),
    ]);
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(names(&p, &d), ["b/m-b", "a/m-a", "c/m-c"]);
}

#[test]
fn lowest_latency_orders_by_average_unmeasured_first() {
    let p = three("lowest_latency", json!({}));
    let mut c = health_chooser(&[
        ("a/m-a", status(Availability::Available, 0, Some(900))),
        ("b/m-b", status(Availability::Available, 0, Some(100))),
    ]);
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(
        names(&p, &d),
        ["c/m-c", "b/m-b", "a/m-a"],
        "c has no sample yet: it goes first to be measured"
    );
    // provider.sort: "latency" turns any strategy into lowest_latency.
    let p = three("priority", json!({}));
    let mut c = health_chooser(&[
        ("a/m-a", status(Availability::Available, 0, Some(900))),
        ("b/m-b", status(Availability::Available, 0, Some(100))),
        ("c/m-c", status(Availability::Available, 0, Some(500))),
    ]);
    let d = model("x")
        .prefs(json!({"provider": {"sort": "latency"}}))
        .run_with(&p, &mut c)
        .expect("decision");
    assert_eq!(names(&p, &d), ["b/m-b", "c/m-c", "a/m-a"]);
    let d = model("x")
        .prefs(json!({"provider": {"sort": "throughput"}}))
        .run_with(&p, &mut c)
        .expect("decision");
    assert_eq!(names(&p, &d), ["a/m-a", "b/m-b", "c/m-c"], "all idle");
}

#[test]
fn all_unavailable_goes_to_the_soonest_by_default() {
    let p = three("priority", json!({}));
    let mut c = health_chooser(&[
        ("a/m-a", down(7_000)),
        ("b/m-b", down(2_000)),
        ("c/m-c", down(5_000)),
    ]);
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(names(&p, &d), ["b/m-b", "c/m-c", "a/m-a"]);
}

#[test]
fn all_unavailable_is_refused_when_configured() {
    let p = three(
        "priority",
        json!({"health": {"when_all_unhealthy": "reject"}}),
    );
    let mut c = health_chooser(&[
        ("a/m-a", down(7_000)),
        ("b/m-b", down(2_000)),
        ("c/m-c", down(5_000)),
    ]);
    assert_eq!(
        route_x(&p, &mut c),
        Err(RouteError::AllUnavailable { until_ms: 2_000 })
    );
    // One usable target is enough.
    let mut c = health_chooser(&[("a/m-a", down(7_000)), ("b/m-b", down(2_000))]);
    let d = route_x(&p, &mut c).expect("decision");
    assert_eq!(names(&p, &d)[0], "c/m-c");
}

#[test]
fn provider_order_and_no_fallbacks_respect_health() {
    let p = three("priority", json!({}));
    let mut c = health_chooser(&[("c/m-c", down(1))]);
    let d = model("x")
        .prefs(json!({"provider": {"order": ["c", "b"]}}))
        .run_with(&p, &mut c)
        .expect("decision");
    assert_eq!(names(&p, &d), ["b/m-b", "a/m-a", "c/m-c"]);
    let d = model("x")
        .prefs(json!({"provider": {"allow_fallbacks": false}}))
        .run_with(&p, &mut health_chooser(&[("a/m-a", down(1))]))
        .expect("decision");
    assert_eq!(names(&p, &d), ["b/m-b"]);
}

#[test]
fn passthrough_targets_share_one_key_per_upstream() {
    let p = plan_of(json!({"unknown_model": "passthrough", "passthrough_upstream": "b"}));
    let mut c = FakeChooser::default();
    let d = model("whatever-1").run_with(&p, &mut c).expect("decision");
    assert_eq!(d.candidates[0].key, "llm_router.h.b");
    assert_eq!(c.health_keys, ["llm_router.h.b"]);
}

#[test]
fn an_anthropic_format_upstream_serves_only_endpoints_it_can_translate() {
    let p = plan(json!({
        "upstreams": {
            "claude": {"format": "anthropic"},
            "gpt": {"format": "openai"}
        },
        "default": {"targets": [{"upstream": "claude", "model": "c"}, {"upstream": "gpt", "model": "g"}]}
    }));
    for endpoint in [Endpoint::ChatCompletions, Endpoint::AnthropicMessages] {
        let d = ok(&p, &Req { endpoint, ..req() });
        assert_eq!(names(&p, &d), ["claude/c", "gpt/g"], "{endpoint:?}");
    }
    for endpoint in [
        Endpoint::Completions,
        Endpoint::Responses,
        Endpoint::Embeddings,
    ] {
        let d = ok(&p, &Req { endpoint, ..req() });
        assert_eq!(names(&p, &d), ["gpt/g"], "{endpoint:?}");
    }
    let only = plan(json!({
        "upstreams": {"claude": {"format": "anthropic"}},
        "default": {"targets": [{"upstream": "claude", "model": "c"}]}
    }));
    let why = no_candidate(
        &only,
        &Req {
            endpoint: Endpoint::Embeddings,
            ..req()
        },
    );
    assert!(
        why.contains(
            "upstream `claude` speaks the Anthropic Messages API, which has no embeddings endpoint"
        ),
        "{why}"
    );
}
