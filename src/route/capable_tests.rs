//! Native tests of capability filtering: each constraint, unknown versus `false`,
//! `provider.require_parameters`, composition with the other narrowing (allowed models,
//! `provider.only` / `ignore`, fallbacks, health), the skip notices and the 503 reason.

use serde_json::{json, Value};

use super::*;
use crate::classify::{Classification, Complexity, Task};
use crate::config::plan::{compile, Plan};
use crate::endpoint::Endpoint;
use crate::health::{Availability, Budget, Unhealthy};
use crate::route::{route, Chooser, ClientPrefs, Decision, RouteError, RouteRequest, TargetStatus};

/// Records skips; health as given (unknown targets available).
#[derive(Default)]
struct Recorder {
    skips: Vec<(String, Capability)>,
    health: Vec<(String, TargetStatus)>,
    health_reads: Vec<String>,
}

impl Chooser for Recorder {
    fn random(&mut self) -> u64 {
        0
    }
    fn next_turn(&mut self, _key: &str) -> u64 {
        0
    }
    fn health(&mut self, key: &str, _budget: &Budget) -> Option<TargetStatus> {
        self.health_reads.push(key.to_owned());
        self.health.iter().find(|(k, _)| k == key).map(|(_, s)| *s)
    }
    fn skipped(&mut self, key: &str, capability: Capability) {
        self.skips.push((key.to_owned(), capability));
    }
}

/// Alias `m`: `a/small` (8192 window, 1024 output, text only, no tools, no streaming),
/// `b/vision` (vision and tools, JSON output, structured outputs unknown) and `c/open`
/// (nothing declared).
fn plan() -> Plan {
    let v = json!({
        "upstreams": {"a": {}, "b": {}, "c": {}},
        "capabilities": {"vision-model": {"vision": true, "tools": true}},
        "models": {"m": {"targets": [
            {"upstream": "a", "model": "small",
             "capabilities": {"context_window": 8192, "max_output_tokens": 1024,
                              "vision": false, "tools": false, "json_output": false,
                              "structured_outputs": false, "streaming": false}},
            {"upstream": "b", "model": "vision-model",
             "capabilities": {"context_window": 128000, "json_output": true,
                              "streaming": true}},
            {"upstream": "c", "model": "open"}
        ]}}
    });
    match compile(v.to_string().as_bytes(), &|_| None) {
        Ok(p) => p,
        Err(e) => panic!("test configuration does not compile: {e}"),
    }
}

fn class(tokens: u64) -> Classification {
    Classification {
        task: Task::General,
        complexity: Complexity::Low,
        tags: Vec::new(),
        estimated_prompt_tokens: tokens,
        has_tools: false,
        has_images: false,
        stream: false,
    }
}

/// A request: its classification, output cap, format and body members for the preferences.
struct Req {
    class: Classification,
    output: Option<u64>,
    format: OutputFormat,
    prefs: Value,
}

fn req() -> Req {
    Req {
        class: class(100),
        output: None,
        format: OutputFormat::Text,
        prefs: json!({}),
    }
}

impl Req {
    fn run(&self, plan: &Plan, chooser: &mut Recorder) -> Result<Decision, RouteError> {
        let Value::Object(body) = &self.prefs else {
            panic!("prefs must be an object")
        };
        let prefs = ClientPrefs::from_body(body).expect("valid preferences");
        let request = RouteRequest {
            endpoint: Endpoint::ChatCompletions,
            model: Some("m"),
            classification: &self.class,
            header: &|_| None,
            prefs: &prefs,
            max_output_tokens: self.output,
            client: None,
            format: self.format,
        };
        route(plan, &request, chooser)
    }

    /// The candidates as `upstream/model`, and the skips as `key: reason`.
    fn outcome(&self, plan: &Plan) -> (Vec<String>, Vec<String>) {
        let mut chooser = Recorder::default();
        let names = match self.run(plan, &mut chooser) {
            Ok(d) => d
                .candidates
                .iter()
                .map(|c| format!("{}/{}", plan.upstreams[c.upstream].name, c.model))
                .collect(),
            Err(e) => vec![format!("{e:?}")],
        };
        let skips = chooser
            .skips
            .iter()
            .map(|(k, c)| format!("{}: {}", k.trim_start_matches("llm_router.h."), c.name()))
            .collect();
        (names, skips)
    }
}

const ALL: [&str; 3] = ["a/small", "b/vision-model", "c/open"];

#[test]
fn a_plain_request_keeps_every_candidate() {
    let (names, skips) = req().outcome(&plan());
    assert_eq!(names, ALL);
    assert!(skips.is_empty());
}

#[test]
fn each_boolean_constraint_skips_declared_false_only() {
    let p = plan();
    type Set = fn(&mut Req);
    let cases: [(&str, Set); 5] = [
        ("vision", |r| r.class.has_images = true),
        ("tools", |r| r.class.has_tools = true),
        ("json_output", |r| r.format = OutputFormat::JsonObject),
        ("structured_outputs", |r| {
            r.format = OutputFormat::JsonSchema
        }),
        ("streaming", |r| r.class.stream = true),
    ];
    for (name, set) in cases {
        let mut r = req();
        set(&mut r);
        let (names, skips) = r.outcome(&p);
        // a/small declares false; the others declare true or nothing (unknown): kept.
        assert_eq!(names, ["b/vision-model", "c/open"], "{name}");
        assert_eq!(skips, [format!("a/small: {name}")], "{name}");
    }
}

#[test]
fn the_context_window_holds_the_prompt_estimate_plus_the_output_cap() {
    let p = plan();
    let fits = |tokens: u64, output: Option<u64>| {
        let r = Req {
            class: class(tokens),
            output,
            ..req()
        };
        r.outcome(&p)
    };
    assert_eq!(fits(8192, None).0, ALL, "exactly the window fits");
    let (names, skips) = fits(8193, None);
    assert_eq!(names, ["b/vision-model", "c/open"]);
    assert_eq!(skips, ["a/small: context_window"]);
    assert_eq!(fits(7192, Some(1000)).0, ALL);
    assert_eq!(fits(7193, Some(1000)).0, ["b/vision-model", "c/open"]);
    // Over every declared window: only the undeclared one is left.
    let (names, skips) = fits(200_000, Some(10));
    assert_eq!(names, ["c/open"]);
    assert_eq!(
        skips,
        ["a/small: context_window", "b/vision-model: context_window"]
    );
    // No overflow on absurd caps.
    assert_eq!(fits(u64::MAX, Some(u64::MAX)).0, ["c/open"]);
}

#[test]
fn the_output_cap_must_fit_max_output_tokens() {
    let p = plan();
    let r = |output| Req { output, ..req() };
    assert_eq!(r(Some(1024)).outcome(&p).0, ALL);
    let (names, skips) = r(Some(1025)).outcome(&p);
    assert_eq!(names, ["b/vision-model", "c/open"]);
    assert_eq!(skips, ["a/small: max_output_tokens"]);
    assert_eq!(r(None).outcome(&p).0, ALL, "no cap asked, none checked");
}

#[test]
fn require_parameters_keeps_targets_that_declare_true_for_what_the_request_uses() {
    let p = plan();
    let strict = json!({"provider": {"require_parameters": true}});
    // A request that uses nothing: every target stays, declared or not.
    let r = Req {
        prefs: strict.clone(),
        ..req()
    };
    assert_eq!(r.outcome(&p).0, ALL);
    // Images: only b declares vision (through its model's entry).
    let mut r = Req {
        prefs: strict.clone(),
        ..req()
    };
    r.class.has_images = true;
    let (names, skips) = r.outcome(&p);
    assert_eq!(names, ["b/vision-model"]);
    assert_eq!(skips, ["a/small: vision", "c/open: vision"]);
    // Structured outputs: b does not declare them either.
    let r = Req {
        prefs: strict.clone(),
        format: OutputFormat::JsonSchema,
        ..req()
    };
    let mut chooser = Recorder::default();
    let Err(RouteError::NoCandidate(why)) = r.run(&p, &mut chooser) else {
        panic!("expected a 503")
    };
    assert!(
        why.contains(
            "b/vision-model: structured_outputs not declared (provider.require_parameters)"
        ),
        "{why}"
    );
    assert!(why.contains("a/small: no structured_outputs"), "{why}");
    // Every capability the request uses must be declared: streaming and JSON on b, yes.
    let mut r = Req {
        prefs: strict,
        format: OutputFormat::JsonObject,
        ..req()
    };
    r.class.stream = true;
    assert_eq!(r.outcome(&p).0, ["b/vision-model"]);
    r.class.has_tools = true;
    assert_eq!(r.outcome(&p).0, ["b/vision-model"]);
    // `false` is the default: unknown does not skip.
    let mut r = Req {
        prefs: json!({"provider": {"require_parameters": false}}),
        ..req()
    };
    r.class.has_images = true;
    assert_eq!(r.outcome(&p).0, ["b/vision-model", "c/open"]);
}

#[test]
fn the_503_names_each_skipped_candidate_and_why() {
    let p = plan();
    let mut r = Req {
        class: class(9000),
        ..req()
    };
    r.class.has_tools = true;
    r.prefs = json!({"provider": {"ignore": ["b", "c"]}});
    let mut chooser = Recorder::default();
    let Err(RouteError::NoCandidate(why)) = r.run(&p, &mut chooser) else {
        panic!("expected a 503")
    };
    assert_eq!(
        why,
        "No target is available for this request (model:m): excluded by provider.ignore; \
         a/small: context window 8192 < 9000 tokens."
    );
    // b/vision-model has tools: ask for more than its window too.
    r.prefs = json!({"provider": {"ignore": ["c"]}});
    r.class.estimated_prompt_tokens = 127_000;
    r.output = Some(1001);
    let Err(RouteError::NoCandidate(why)) = r.run(&p, &mut Recorder::default()) else {
        panic!("expected a 503")
    };
    assert!(
        why.contains("a/small: context window 8192 < 128001 tokens"),
        "{why}"
    );
    assert!(
        why.contains("b/vision-model: context window 128000 < 128001 tokens"),
        "{why}"
    );
    let r = Req {
        output: Some(2000),
        format: OutputFormat::JsonObject,
        prefs: json!({"provider": {"only": ["a"]}}),
        ..req()
    };
    let Err(RouteError::NoCandidate(why)) = r.run(&p, &mut Recorder::default()) else {
        panic!("expected a 503")
    };
    assert!(
        why.contains("a/small: max output tokens 1024 < 2000 requested"),
        "{why}"
    );
    let mut r = req();
    r.class.has_images = true;
    r.prefs = json!({"provider": {"only": ["a"]}});
    let Err(RouteError::NoCandidate(why)) = r.run(&p, &mut Recorder::default()) else {
        panic!("expected a 503")
    };
    assert!(why.ends_with("a/small: no vision."), "{why}");
}

#[test]
fn the_503_reason_is_bounded() {
    let targets: Vec<Value> = (0..200)
        .map(|i| {
            json!({"upstream": "a", "model": format!("model-with-a-long-name-{i:03}-{}", "x".repeat(200)),
                   "capabilities": {"vision": false}})
        })
        .collect();
    let v = json!({"upstreams": {"a": {}}, "models": {"m": {"targets": targets}}});
    let p = compile(v.to_string().as_bytes(), &|_| None).expect("compiles");
    let mut r = req();
    r.class.has_images = true;
    let mut chooser = Recorder::default();
    let Err(RouteError::NoCandidate(why)) = r.run(&p, &mut chooser) else {
        panic!("expected a 503")
    };
    assert!(why.len() < MAX_REASON_BYTES + 400, "{} bytes", why.len());
    assert!(why.contains("model-with-a-long-name-000"), "{why}");
    let named = why.matches(": no vision").count();
    assert!(named >= 3, "{why}");
    assert!(
        why.ends_with(&format!("and {} more.", 200 - named)),
        "{why}"
    );
    // Every skip is still reported for the stats.
    assert_eq!(chooser.skips.len(), 200);
}

#[test]
fn capabilities_compose_with_the_other_narrowing_and_health() {
    let p = plan();
    // allowed_models first: the excluded target is not a capability skip.
    let mut r = Req {
        prefs: json!({"allowed_models": ["small", "open"]}),
        ..req()
    };
    r.class.has_images = true;
    let (names, skips) = r.outcome(&p);
    assert_eq!(names, ["c/open"]);
    assert_eq!(skips, ["a/small: vision"]);
    // No fallbacks: the first capable candidate alone.
    let mut r = Req {
        prefs: json!({"provider": {"allow_fallbacks": false}}),
        ..req()
    };
    r.class.stream = true;
    assert_eq!(r.outcome(&p).0, ["b/vision-model"]);
    // provider.order among the capable ones.
    let mut r = Req {
        prefs: json!({"provider": {"order": ["c", "a"]}}),
        ..req()
    };
    r.class.has_tools = true;
    assert_eq!(r.outcome(&p).0, ["c/open", "b/vision-model"]);
    // Skipped candidates are never read from the health board; unhealthy capable ones
    // still follow last.
    let mut chooser = Recorder::default();
    let key_b = p.aliases["m"].targets[1].key.clone();
    chooser.health.push((
        key_b.clone(),
        TargetStatus {
            availability: Availability::Unavailable {
                until_ms: 5,
                reason: Unhealthy::CoolingDown,
            },
            ..TargetStatus::UNKNOWN
        },
    ));
    let mut r = req();
    r.class.has_images = true;
    let d = r.run(&p, &mut chooser).expect("routes");
    let order: Vec<&str> = d.candidates.iter().map(|c| c.model.as_str()).collect();
    assert_eq!(order, ["open", "vision-model"]);
    assert_eq!(chooser.health_reads.len(), 2);
    assert!(!chooser
        .health_reads
        .contains(&p.aliases["m"].targets[0].key));
}

#[test]
fn output_format_is_read_from_each_api_shape() {
    let of = |v: Value| match v {
        Value::Object(m) => OutputFormat::of(&m),
        _ => panic!("object"),
    };
    assert_eq!(of(json!({})), OutputFormat::Text);
    assert_eq!(
        of(json!({"response_format": {"type": "json_object"}})),
        OutputFormat::JsonObject
    );
    assert_eq!(
        of(json!({"response_format": {"type": "json_schema", "json_schema": {}}})),
        OutputFormat::JsonSchema
    );
    assert_eq!(
        of(json!({"response_format": {"type": "text"}})),
        OutputFormat::Text
    );
    assert_eq!(
        of(json!({"text": {"format": {"type": "json_schema"}}})),
        OutputFormat::JsonSchema
    );
    assert_eq!(
        of(json!({"output_format": {"type": "json_schema"}})),
        OutputFormat::JsonSchema
    );
    assert_eq!(
        of(json!({"output_config": {"format": {"type": "json_schema"}}})),
        OutputFormat::JsonSchema
    );
    // Odd shapes are plain text, never an error.
    for odd in [
        json!({"response_format": "json_object"}),
        json!({"response_format": {"type": 1}}),
        json!({"text": "json"}),
        json!({"response_format": null}),
    ] {
        assert_eq!(of(odd.clone()), OutputFormat::Text, "{odd}");
    }
}

#[test]
fn require_parameters_must_be_a_boolean() {
    for (v, want) in [
        (json!(true), Some(true)),
        (json!(false), Some(false)),
        (json!(null), Some(false)),
    ] {
        let Value::Object(body) = json!({"provider": {"require_parameters": v}}) else {
            unreachable!()
        };
        assert_eq!(
            ClientPrefs::from_body(&body)
                .ok()
                .map(|p| p.require_parameters),
            want
        );
    }
    for bad in [json!("true"), json!(1), json!([])] {
        let Value::Object(body) = json!({"provider": {"require_parameters": bad}}) else {
            unreachable!()
        };
        let e = ClientPrefs::from_body(&body).expect_err("refused");
        assert_eq!(
            (e.status, e.param, e.code),
            (400, Some("provider.require_parameters"), "invalid_type")
        );
        assert!(
            e.message.contains("provider.require_parameters"),
            "{}",
            e.message
        );
    }
}

#[test]
fn unfit_is_checked_in_a_fixed_order() {
    let caps = Capabilities {
        context_window: Some(10),
        max_output_tokens: Some(5),
        vision: Some(false),
        ..Capabilities::default()
    };
    let needs = Needs {
        prompt_tokens: 20,
        output_tokens: Some(6),
        images: true,
        ..Needs::default()
    };
    assert_eq!(
        unfit(&caps, &needs, false),
        Some(Unfit::ContextWindow {
            window: 10,
            needed: 26
        })
    );
    let needs = Needs {
        prompt_tokens: 1,
        ..needs
    };
    assert_eq!(
        unfit(&caps, &needs, false),
        Some(Unfit::MaxOutputTokens {
            max: 5,
            requested: 6
        })
    );
    let needs = Needs {
        output_tokens: None,
        ..needs
    };
    assert_eq!(
        unfit(&caps, &needs, false),
        Some(Unfit::Lacks(Capability::Vision))
    );
    assert_eq!(
        unfit(&Capabilities::default(), &needs, true),
        Some(Unfit::Undeclared(Capability::Vision))
    );
    assert_eq!(unfit(&Capabilities::default(), &needs, false), None);
}
