//! Native tests of the config module: the bundled configuration compiles, defaults match the
//! README, keys come from the environment (and a missing one skips its upstream), and every
//! refused configuration names the offending field.

use serde_json::{json, Value};

use super::error::ConfigError;
use super::plan::{compile, HeaderTest, Plan};
use super::raw::{Strategy, UnknownModel, DEFAULT_CLUSTER_HEADER, DEFAULT_MAX_BODY_BYTES};
use crate::classify::{Complexity, Task};
use crate::endpoint::Endpoint;

/// The plugin configuration of `envoy/envoy.yaml` (its inline `configuration.value`).
pub(crate) const BUNDLED: &str = r#"{
  "upstreams": {
    "mock-a": {"cluster": "mock-a", "auth": {"type": "bearer", "key_env": "MOCK_API_KEY"}},
    "mock-b": {"cluster": "mock-b", "path_prefix": "/openai/v1",
               "auth": {"type": "x-api-key", "key_env": "MOCK_API_KEY"}},
    "openai": {"cluster": "openai", "host": "api.openai.com",
               "auth": {"type": "bearer", "key_env": "OPENAI_API_KEY"}},
    "anthropic": {"cluster": "anthropic", "host": "api.anthropic.com",
                  "auth": {"type": "x-api-key", "key_env": "ANTHROPIC_API_KEY"},
                  "headers": {"anthropic-version": "2023-06-01"}}
  },
  "models": {
    "fast": {"targets": [{"upstream": "mock-a", "model": "mock-small",
                          "price": {"input": 0.15, "output": 0.6}}]},
    "smart": {"targets": [{"upstream": "mock-b", "model": "mock-large",
                           "price": {"input": 2.5, "output": 10}}]},
    "gpt-4o-mini": {"targets": [{"upstream": "openai", "model": "gpt-4o-mini"}]},
    "claude-sonnet": {"targets": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"}]}
  },
  "classifier": {
    "tags": [{"name": "legal", "keywords": ["contract", "lawsuit", "liability"]}]
  },
  "rules": [
    {"name": "hard", "match": {"complexity": ["high", "xhigh"]}, "use_model": "smart"},
    {"name": "code-and-math", "match": {"task": ["coding", "math"]}, "use_model": "smart"},
    {"name": "legal", "match": {"tags": ["legal"]}, "use_model": "smart"}
  ],
  "default": {"use_model": "fast"},
  "failover": {"cluster": "llm_failover", "max_attempts": 3}
}"#;

/// Every variable is set, to `key-<NAME>`.
fn env_all(name: &str) -> Option<String> {
    Some(format!("key-{name}"))
}

/// No variable is set.
fn env_none(_: &str) -> Option<String> {
    None
}

fn compile_value(v: &Value) -> Result<Plan, ConfigError> {
    compile(v.to_string().as_bytes(), &env_all)
}

fn ok(v: Value) -> Plan {
    match compile_value(&v) {
        Ok(plan) => plan,
        Err(e) => panic!("expected {v} to compile, got {e}"),
    }
}

fn err(v: Value) -> ConfigError {
    match compile_value(&v) {
        Ok(_) => panic!("expected {v} to be refused"),
        Err(e) => e,
    }
}

fn err_str(json: &str) -> ConfigError {
    match compile(json.as_bytes(), &env_all) {
        Ok(_) => panic!("expected {json} to be refused"),
        Err(e) => e,
    }
}

/// Asserts that `v` is refused at `field`, with a message containing `needle`.
#[track_caller]
fn assert_refused(v: Value, field: &str, needle: &str) {
    let e = err(v);
    assert_eq!(e.field, field, "wrong field for error: {e}");
    assert!(
        e.message.contains(needle),
        "message of {e} does not contain {needle:?}"
    );
}

/// A small valid configuration that tests patch.
fn base() -> Value {
    json!({
        "upstreams": {
            "a": {"auth": {"type": "bearer", "key_env": "A_KEY"}},
            "b": {"cluster": "cluster-b", "host": "b.example.com", "path_prefix": "/openai/v1/",
                  "auth": {"type": "x-api-key", "key_env": "B_KEY"},
                  "headers": {"Anthropic-Version": "2023-06-01"}}
        },
        "models": {
            "fast": {"targets": [{"upstream": "a", "model": "a-small"}]},
            "smart": {"strategy": "weighted",
                      "targets": [{"upstream": "a", "model": "a-large", "weight": 3},
                                  {"upstream": "b", "model": "b-large"}]}
        },
        "rules": [
            {"name": "r0", "match": {"task": ["coding"]}, "use_model": "smart"}
        ],
        "default": {"use_model": "fast"}
    })
}

/// `base()` with the JSON value at `pointer` replaced (or inserted into its parent object).
fn patched(pointer: &str, value: Value) -> Value {
    let mut v = base();
    set_at(&mut v, pointer, value);
    v
}

fn set_at(v: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = value;
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let parent = v
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no parent at {parent}"));
    parent
        .as_object_mut()
        .unwrap_or_else(|| panic!("parent of {pointer} is not an object"))
        .insert(key.to_owned(), value);
}

fn remove_at(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .remove(key);
}

fn upstream<'p>(plan: &'p Plan, name: &str) -> &'p super::plan::Upstream {
    plan.upstreams
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("no upstream {name}"))
}

fn upstream_name(plan: &Plan, index: usize) -> &str {
    &plan.upstreams[index].name
}

// ---------------------------------------------------------------------------------------
// The bundled configuration
// ---------------------------------------------------------------------------------------

#[test]
fn bundled_config_compiles() {
    let plan = compile(BUNDLED.as_bytes(), &|name| match name {
        "MOCK_API_KEY" => Some("mock-key".to_owned()),
        "OPENAI_API_KEY" => Some("sk-openai".to_owned()),
        _ => None,
    })
    .expect("bundled configuration compiles");
    assert_eq!(plan.upstreams.len(), 4);
    assert_eq!(plan.aliases.len(), 4);
    assert_eq!(plan.rules.len(), 3);
    assert_eq!(
        plan.rules
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["hard", "code-and-math", "legal"]
    );
    assert_eq!(plan.classifier.tag_names().collect::<Vec<_>>(), ["legal"]);

    let a = upstream(&plan, "mock-a");
    assert_eq!(a.cluster, "mock-a");
    assert_eq!(a.path_prefix, "/v1");
    assert_eq!(a.authority, None);
    let auth = a.auth.as_ref().expect("mock-a has a key");
    assert_eq!(auth.header, "authorization");
    assert_eq!(auth.value, "Bearer mock-key");
    assert_eq!(a.missing_key_env, None);

    let b = upstream(&plan, "mock-b");
    assert_eq!(b.path_prefix, "/openai/v1");
    let auth = b.auth.as_ref().expect("mock-b has a key");
    assert_eq!(
        (auth.header, auth.value.as_str()),
        ("x-api-key", "mock-key")
    );

    let openai = upstream(&plan, "openai");
    assert_eq!(openai.authority.as_deref(), Some("api.openai.com"));
    assert_eq!(
        openai.auth.as_ref().map(|a| a.value.as_str()),
        Some("Bearer sk-openai")
    );

    // ANTHROPIC_API_KEY is not set: the upstream is kept but marked, not refused.
    let anthropic = upstream(&plan, "anthropic");
    assert!(anthropic.auth.is_none());
    assert_eq!(
        anthropic.missing_key_env.as_deref(),
        Some("ANTHROPIC_API_KEY")
    );
    assert_eq!(
        anthropic.headers,
        [("anthropic-version".to_owned(), "2023-06-01".to_owned())]
    );
    assert_eq!(anthropic.authority.as_deref(), Some("api.anthropic.com"));

    let default = plan.default.as_ref().expect("default route");
    assert_eq!(default.name, "default");
    assert_eq!(default.strategy, Strategy::Priority);
    assert_eq!(default.targets.len(), 1);
    assert_eq!(upstream_name(&plan, default.targets[0].upstream), "mock-a");
    assert_eq!(default.targets[0].model, "mock-small");

    let hard = &plan.rules[0];
    assert_eq!(hard.action.name, "rule:hard");
    assert_eq!(hard.action.targets[0].model, "mock-large");
    assert_eq!(
        hard.matcher.complexities.as_deref(),
        Some(&[Complexity::High, Complexity::Xhigh][..])
    );
    assert!(hard.matcher.models.is_none());
    assert_eq!(
        plan.rules[1].matcher.tasks.as_deref(),
        Some(&[Task::Coding, Task::Math][..])
    );
    assert_eq!(
        plan.rules[2].matcher.tags.as_deref(),
        Some(&["legal".to_owned()][..])
    );

    let fast = &plan.aliases["fast"];
    assert_eq!(fast.name, "fast");
    let price = fast.targets[0].price.expect("fast has a price");
    assert_eq!((price.input, price.output), (0.15, 0.6));

    // Defaults of everything the bundled config leaves out.
    assert_eq!(plan.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(plan.cluster_header, "x-llm-router-cluster");
    assert!(plan.response_headers);
    assert_eq!(plan.unknown_model, UnknownModel::Reject);
    assert_eq!(plan.passthrough_upstream, None);
}

#[test]
fn bundled_config_without_any_key_still_compiles() {
    let plan = compile(BUNDLED.as_bytes(), &env_none).expect("compiles without keys");
    for up in &plan.upstreams {
        assert!(up.auth.is_none(), "{}", up.name);
        assert!(up.missing_key_env.is_some(), "{}", up.name);
    }
}

/// The inline `value: |` block that follows the line containing `marker`.
fn yaml_block_after(yaml: &str, marker: &str) -> Option<String> {
    let mut lines = yaml.lines();
    let head = lines.by_ref().find(|l| l.contains(marker))?;
    let head_indent = head.len() - head.trim_start().len();
    let mut block = String::new();
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && indent <= head_indent {
            break;
        }
        block.push_str(line);
        block.push('\n');
    }
    Some(block)
}

#[test]
fn envoy_yaml_configuration_compiles_and_matches_the_copy_here() {
    let yaml = include_str!("../../envoy/envoy.yaml");
    let block = yaml_block_after(yaml, "value: |").expect("envoy.yaml has an inline value");
    let from_yaml: Value = serde_json::from_str(&block).expect("the inline value is JSON");
    let here: Value = serde_json::from_str(BUNDLED).expect("BUNDLED is JSON");
    assert_eq!(
        from_yaml, here,
        "envoy/envoy.yaml changed: update BUNDLED in src/config/tests.rs"
    );
    compile(block.as_bytes(), &env_all).expect("the envoy.yaml configuration compiles");
}

// ---------------------------------------------------------------------------------------
// Defaults and compiled values
// ---------------------------------------------------------------------------------------

#[test]
fn defaults_match_the_readme() {
    assert_eq!(DEFAULT_MAX_BODY_BYTES, 8_388_608);
    assert_eq!(DEFAULT_CLUSTER_HEADER, "x-llm-router-cluster");
    let plan = ok(json!({"upstreams": {"local": {}}}));
    assert_eq!(plan.max_body_bytes, 8_388_608);
    assert_eq!(plan.cluster_header, "x-llm-router-cluster");
    assert!(plan.response_headers);
    assert_eq!(plan.unknown_model, UnknownModel::Reject);
    assert!(plan.passthrough_upstream.is_none());
    assert!(plan.default.is_none());
    assert!(plan.rules.is_empty());
    assert!(plan.aliases.is_empty());
    let up = upstream(&plan, "local");
    assert_eq!(
        up.cluster, "local",
        "cluster defaults to the upstream's name"
    );
    assert_eq!(up.path_prefix, "/v1");
    assert!(up.authority.is_none());
    assert!(up.auth.is_none());
    assert!(up.missing_key_env.is_none(), "no auth: nothing is missing");
    assert!(up.headers.is_empty());
}

#[test]
fn top_level_settings_are_read() {
    let mut v = base();
    set_at(&mut v, "/max_body_bytes", json!(1024));
    set_at(&mut v, "/cluster_header", json!("X-Route-To"));
    set_at(&mut v, "/response_headers", json!(false));
    set_at(&mut v, "/unknown_model", json!("passthrough"));
    set_at(&mut v, "/passthrough_upstream", json!("b"));
    let plan = ok(v);
    assert_eq!(plan.max_body_bytes, 1024);
    assert_eq!(plan.cluster_header, "x-route-to", "lower-cased");
    assert!(!plan.response_headers);
    assert_eq!(plan.unknown_model, UnknownModel::Passthrough);
    assert_eq!(
        plan.passthrough_upstream.map(|i| upstream_name(&plan, i)),
        Some("b")
    );
}

#[test]
fn passthrough_upstream_may_be_given_while_rejecting() {
    let plan = ok(patched("/passthrough_upstream", json!("a")));
    assert_eq!(plan.unknown_model, UnknownModel::Reject);
    assert!(plan.passthrough_upstream.is_some());
}

#[test]
fn upstream_fields_are_compiled() {
    let plan = ok(base());
    let b = upstream(&plan, "b");
    assert_eq!(b.cluster, "cluster-b");
    assert_eq!(b.authority.as_deref(), Some("b.example.com"));
    assert_eq!(b.path_prefix, "/openai/v1", "trailing slash dropped");
    assert_eq!(
        b.headers,
        [("anthropic-version".to_owned(), "2023-06-01".to_owned())],
        "header names lower-cased"
    );
    let auth = b.auth.as_ref().expect("b has a key");
    assert_eq!(auth.header, "x-api-key");
    assert_eq!(auth.value, "key-B_KEY");
}

#[test]
fn path_prefix_of_slash_strips_the_version() {
    let plan = ok(patched("/upstreams/a/path_prefix", json!("/")));
    assert_eq!(upstream(&plan, "a").path_prefix, "");
    let plan = ok(patched("/upstreams/a/path_prefix", json!("/v1")));
    assert_eq!(upstream(&plan, "a").path_prefix, "/v1");
}

#[test]
fn auth_types_map_to_their_headers() {
    for (kind, header, value) in [
        ("bearer", "authorization", "Bearer key-K"),
        ("x-api-key", "x-api-key", "key-K"),
        ("api-key", "api-key", "key-K"),
    ] {
        let plan = ok(patched(
            "/upstreams/a/auth",
            json!({"type": kind, "key_env": "K"}),
        ));
        let auth = upstream(&plan, "a").auth.as_ref().expect("auth");
        assert_eq!(
            (auth.header, auth.value.as_str()),
            (header, value),
            "{kind}"
        );
    }
}

#[test]
fn keys_are_trimmed() {
    let plan = compile(base().to_string().as_bytes(), &|name| {
        (name == "A_KEY").then(|| "  sk-123 \t".to_owned())
    })
    .expect("compiles");
    let a = upstream(&plan, "a");
    assert_eq!(
        a.auth.as_ref().map(|x| x.value.as_str()),
        Some("Bearer sk-123")
    );
    // B_KEY is unset.
    let b = upstream(&plan, "b");
    assert!(b.auth.is_none());
    assert_eq!(b.missing_key_env.as_deref(), Some("B_KEY"));
}

#[test]
fn missing_or_blank_key_marks_the_upstream_as_skipped() {
    for value in [None, Some(""), Some("   ")] {
        let plan = compile(base().to_string().as_bytes(), &|name| {
            if name == "A_KEY" {
                value.map(str::to_owned)
            } else {
                Some("k".to_owned())
            }
        })
        .expect("a missing key is not a configuration error");
        let a = upstream(&plan, "a");
        assert!(a.auth.is_none(), "{value:?}");
        assert_eq!(a.missing_key_env.as_deref(), Some("A_KEY"), "{value:?}");
        let b = upstream(&plan, "b");
        assert!(b.auth.is_some());
        assert!(b.missing_key_env.is_none());
    }
}

#[test]
fn env_is_asked_only_for_the_configured_variables() {
    let asked = std::cell::RefCell::new(Vec::new());
    compile(base().to_string().as_bytes(), &|name| {
        asked.borrow_mut().push(name.to_owned());
        Some("k".to_owned())
    })
    .expect("compiles");
    let mut asked = asked.into_inner();
    asked.sort();
    assert_eq!(asked, ["A_KEY", "B_KEY"]);
}

#[test]
fn key_with_control_characters_is_refused_without_echoing_it() {
    let e = compile(base().to_string().as_bytes(), &|name| {
        Some(if name == "A_KEY" {
            "sk-secret\r\nx-evil: 1".to_owned()
        } else {
            "k".to_owned()
        })
    })
    .expect_err("a key that cannot be a header value is refused");
    assert_eq!(e.field, "upstreams.a.auth.key_env");
    assert!(e.message.contains("A_KEY"), "{e}");
    assert!(!e.to_string().contains("sk-secret"), "{e}");
}

#[test]
fn upstream_debug_never_prints_the_key() {
    let plan = compile(base().to_string().as_bytes(), &|_| {
        Some("sk-very-secret".to_owned())
    })
    .expect("compiles");
    let printed = format!("{plan:?}");
    assert!(!printed.contains("sk-very-secret"), "{printed}");
    assert!(printed.contains("authorization"), "{printed}");
}

#[test]
fn actions_get_names_strategies_and_targets() {
    let plan = ok(base());
    let smart = &plan.aliases["smart"];
    assert_eq!(smart.name, "smart");
    assert_eq!(smart.strategy, Strategy::Weighted);
    assert_eq!(smart.targets.len(), 2);
    assert_eq!(smart.targets[0].weight, 3);
    assert_eq!(smart.targets[1].weight, 1, "weight defaults to 1");
    assert_eq!(smart.targets[1].price, None);
    assert_eq!(upstream_name(&plan, smart.targets[1].upstream), "b");
    assert_eq!(plan.aliases["fast"].strategy, Strategy::Priority);

    // A rule with use_model gets the alias's targets and strategy under its own name.
    let r0 = &plan.rules[0].action;
    assert_eq!(r0.name, "rule:r0");
    assert_eq!(r0.strategy, Strategy::Weighted);
    assert_eq!(r0.targets, smart.targets);
    assert_eq!(
        plan.default.as_ref().map(|d| d.name.as_str()),
        Some("default")
    );
}

#[test]
fn use_model_strategy_can_be_overridden() {
    let plan = ok(patched("/rules/0/strategy", json!("round_robin")));
    assert_eq!(plan.rules[0].action.strategy, Strategy::RoundRobin);
    assert_eq!(plan.aliases["smart"].strategy, Strategy::Weighted);
}

#[test]
fn every_strategy_name_parses() {
    for (name, strategy) in [
        ("priority", Strategy::Priority),
        ("weighted", Strategy::Weighted),
        ("round_robin", Strategy::RoundRobin),
        ("least_busy", Strategy::LeastBusy),
        ("lowest_latency", Strategy::LowestLatency),
    ] {
        let plan = ok(patched("/models/fast/strategy", json!(name)));
        assert_eq!(plan.aliases["fast"].strategy, strategy, "{name}");
    }
    let plan = ok(patched(
        "/models/fast",
        json!({"strategy": "cheapest", "targets": [
            {"upstream": "a", "model": "m", "price": {"input": 1, "output": 2.5}}]}),
    ));
    assert_eq!(plan.aliases["fast"].strategy, Strategy::Cheapest);
    let p = plan.aliases["fast"].targets[0].price.expect("price");
    assert_eq!((p.input, p.output), (1.0, 2.5));
}

#[test]
fn weight_zero_is_allowed_outside_weighted() {
    let plan = ok(patched("/models/fast/targets/0/weight", json!(0)));
    assert_eq!(plan.aliases["fast"].targets[0].weight, 0);
}

#[test]
fn match_conditions_are_compiled() {
    let plan = ok(patched(
        "/rules/0/match",
        json!({
            "model": ["auto", "gpt-4o*", "exact-model"],
            "task": ["coding", "math"],
            "complexity": ["low"],
            "path": ["chat", "completions", "responses", "embeddings", "messages"],
            "headers": [
                {"name": "X-Team", "exact": "research"},
                {"name": "x-tier", "regex": "^gold"},
                {"name": ":authority", "present": true}
            ],
            "stream": true,
            "tools": false,
            "images": true,
            "min_prompt_tokens": 10,
            "max_prompt_tokens": 10
        }),
    ));
    let m = &plan.rules[0].matcher;
    let models = m.models.as_ref().expect("model condition");
    assert!(models.auto);
    assert_eq!(
        models.globs.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        ["gpt-4o*", "exact-model"]
    );
    assert_eq!(m.tasks.as_deref(), Some(&[Task::Coding, Task::Math][..]));
    assert_eq!(m.complexities.as_deref(), Some(&[Complexity::Low][..]));
    assert_eq!(
        m.endpoints.as_deref(),
        Some(
            &[
                Endpoint::ChatCompletions,
                Endpoint::Completions,
                Endpoint::Responses,
                Endpoint::Embeddings,
                Endpoint::AnthropicMessages
            ][..]
        )
    );
    assert_eq!(m.headers.len(), 3);
    assert_eq!(m.headers[0].name, "x-team", "lower-cased");
    assert!(matches!(&m.headers[0].test, HeaderTest::Exact(v) if v == "research"));
    assert!(matches!(&m.headers[1].test, HeaderTest::Regex(r) if r.is_match("golden")));
    assert_eq!(m.headers[2].name, ":authority");
    assert!(matches!(m.headers[2].test, HeaderTest::Present(true)));
    assert_eq!(
        (m.stream, m.tools, m.images),
        (Some(true), Some(false), Some(true))
    );
    assert_eq!(
        (m.min_prompt_tokens, m.max_prompt_tokens),
        (Some(10), Some(10))
    );
}

#[test]
fn a_rule_without_match_matches_everything_auto() {
    let mut v = base();
    remove_at(&mut v, "/rules/0/match");
    let plan = ok(v);
    let m = &plan.rules[0].matcher;
    assert!(m.models.is_none());
    assert!(m.tasks.is_none() && m.complexities.is_none() && m.tags.is_none());
    assert!(m.endpoints.is_none() && m.headers.is_empty());
}

#[test]
fn names_may_use_the_documented_characters() {
    let name = "Az09-_.:/@";
    let plan = ok(json!({
        "upstreams": {name: {}},
        "models": {name: {"targets": [{"upstream": name, "model": "m"}]}},
        "rules": [{"name": name, "targets": [{"upstream": name, "model": "m"}]}]
    }));
    assert_eq!(plan.upstreams[0].name, name);
    assert!(plan.aliases.contains_key(name));
    assert_eq!(plan.rules[0].action.name, format!("rule:{name}"));
    let long = "x".repeat(128);
    ok(json!({"upstreams": {long: {}}}));
}

// ---------------------------------------------------------------------------------------
// Refusals: each names its field
// ---------------------------------------------------------------------------------------

#[test]
fn display_names_the_field() {
    let e = ConfigError::new("rules[0].targets[0].upstream", "unknown upstream `opneai`");
    assert_eq!(
        e.to_string(),
        "invalid plugin configuration: rules[0].targets[0].upstream: unknown upstream `opneai`"
    );
    let e = ConfigError::new("", "EOF while parsing");
    assert_eq!(
        e.to_string(),
        "invalid plugin configuration: EOF while parsing"
    );
}

#[test]
fn readme_example_error() {
    let e = err(patched(
        "/rules/0",
        json!({"name": "r0", "targets": [{"upstream": "opneai", "model": "gpt-4o"}]}),
    ));
    assert_eq!(
        e.to_string(),
        "invalid plugin configuration: rules[0].targets[0].upstream: unknown upstream `opneai`"
    );
}

#[test]
fn not_json_or_not_an_object() {
    let e = err_str("");
    assert!(e.message.contains("EOF"), "{e}");
    let e = err_str("{\"upstreams\": {\"a\": {}},}");
    assert!(!e.message.is_empty());
    let e = err_str("[]");
    assert_eq!(e.field, "");
    let e = err_str("{\"upstreams\": {\"a\": {}}} trailing");
    assert!(e.message.contains("trailing"), "{e}");
}

#[test]
fn upstreams_are_required_and_non_empty() {
    let e = err_str("{}");
    assert_eq!(e.field, "");
    assert!(e.message.contains("missing field `upstreams`"), "{e}");
    assert_refused(
        json!({"upstreams": {}}),
        "upstreams",
        "at least one upstream",
    );
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    let cases = [
        ("/upstream", "upstream"),
        ("/upstreams/a/clutser", "upstreams.a.clutser"),
        ("/upstreams/a/auth/kind", "upstreams.a.auth.kind"),
        ("/models/fast/target", "models.fast.target"),
        (
            "/models/fast/targets/0/wieght",
            "models.fast.targets[0].wieght",
        ),
        (
            "/models/smart/targets/0/price",
            "models.smart.targets[0].price",
        ),
        ("/rules/0/matches", "rules[0].matches"),
        ("/rules/0/match/modle", "rules[0].match.modle"),
        ("/default/model", "default.model"),
    ];
    for (pointer, field) in cases {
        let value = if field.ends_with("price") {
            json!({"input": 1, "output": 1, "cached": 1})
        } else {
            json!(1)
        };
        let e = err(patched(pointer, value));
        let want = if field.ends_with("price") {
            format!("{field}.cached")
        } else {
            field.to_owned()
        };
        assert_eq!(e.field, want, "{pointer}: {e}");
        assert!(e.message.contains("unknown field"), "{pointer}: {e}");
    }
    let e = err(patched("/classifier", json!({"tag": []})));
    assert_eq!(e.field, "classifier.tag", "{e}");
    let mut v = base();
    set_at(
        &mut v,
        "/rules/0/match/headers",
        json!([{"name": "x", "exact": "y", "prefix": "z"}]),
    );
    let e = err(v);
    assert_eq!(e.field, "rules[0].match.headers[0].prefix", "{e}");
}

#[test]
fn wrong_types_name_the_field() {
    let cases = [
        ("/max_body_bytes", json!("big"), "max_body_bytes"),
        ("/max_body_bytes", json!(-1), "max_body_bytes"),
        ("/max_body_bytes", json!(1.5), "max_body_bytes"),
        ("/response_headers", json!("yes"), "response_headers"),
        ("/cluster_header", json!(7), "cluster_header"),
        (
            "/upstreams/a/headers",
            json!({"x-a": 1}),
            "upstreams.a.headers.x-a",
        ),
        (
            "/upstreams/a/path_prefix",
            json!(null),
            "upstreams.a.path_prefix",
        ),
        (
            "/models/smart/targets/0/weight",
            json!(-1),
            "models.smart.targets[0].weight",
        ),
        (
            "/models/smart/targets/0/weight",
            json!(1.5),
            "models.smart.targets[0].weight",
        ),
        (
            "/models/smart/targets/0/weight",
            json!(4294967296u64),
            "models.smart.targets[0].weight",
        ),
        (
            "/models/fast/targets/0/model",
            json!(null),
            "models.fast.targets[0].model",
        ),
        ("/rules", json!({}), "rules"),
        (
            "/rules/0/match/model",
            json!("gpt-4o"),
            "rules[0].match.model",
        ),
        (
            "/rules/0/match/stream",
            json!("true"),
            "rules[0].match.stream",
        ),
        (
            "/rules/0/match/min_prompt_tokens",
            json!(-5),
            "rules[0].match.min_prompt_tokens",
        ),
        (
            "/rules/0/match/task",
            json!(["cooking"]),
            "rules[0].match.task[0]",
        ),
        (
            "/rules/0/match/complexity",
            json!(["low", "extreme"]),
            "rules[0].match.complexity[1]",
        ),
    ];
    for (pointer, value, field) in cases {
        let e = err(patched(pointer, value.clone()));
        assert_eq!(e.field, field, "{pointer} = {value}: {e}");
    }
}

#[test]
fn missing_required_fields_name_their_parent() {
    let e = err(patched("/upstreams/a/auth", json!({"type": "bearer"})));
    assert_eq!(e.field, "upstreams.a.auth", "{e}");
    assert!(e.message.contains("missing field `key_env`"), "{e}");
    let e = err(patched("/models/fast/targets/0", json!({"upstream": "a"})));
    assert_eq!(e.field, "models.fast.targets[0]", "{e}");
    assert!(e.message.contains("missing field `model`"), "{e}");
    let e = err(patched("/rules/0", json!({"use_model": "fast"})));
    assert_eq!(e.field, "rules[0]", "{e}");
    assert!(e.message.contains("missing field `name`"), "{e}");
    let e = err(patched(
        "/rules/0/match/headers",
        json!([{"exact": "research"}]),
    ));
    assert_eq!(e.field, "rules[0].match.headers[0]", "{e}");
}

#[test]
fn bad_enumerations_name_the_field() {
    let e = err(patched("/rules/0/strategy", json!("fastest")));
    assert_eq!(e.field, "rules[0].strategy", "{e}");
    assert!(e.message.contains("unknown variant `fastest`"), "{e}");
    let e = err(patched("/models/fast/strategy", json!("random")));
    assert_eq!(e.field, "models.fast.strategy", "{e}");
    let e = err(patched("/default/strategy", json!("Priority")));
    assert_eq!(e.field, "default.strategy", "{e}");
    let e = err(patched("/upstreams/a/auth/type", json!("basic")));
    assert_eq!(e.field, "upstreams.a.auth.type", "{e}");
    let e = err(patched("/unknown_model", json!("forward")));
    assert_eq!(e.field, "unknown_model", "{e}");
}

#[test]
fn invalid_names() {
    for bad in ["", "has space", "new\nline", "ü", "x,y", "x;y"] {
        let e = err(json!({"upstreams": {bad: {}}}));
        assert_eq!(e.field, format!("upstreams.{bad}"), "{bad:?}: {e}");
        assert!(e.message.contains("not a valid name"), "{e}");

        let e = err(patched(
            "/models",
            json!({bad: {"targets": [{"upstream": "a", "model": "m"}]}}),
        ));
        assert_eq!(e.field, format!("models.{bad}"), "{bad:?}: {e}");

        let e = err(patched("/rules/0/name", json!(bad)));
        assert_eq!(e.field, "rules[0].name", "{bad:?}: {e}");
    }
    let long = "x".repeat(129);
    let e = err(json!({"upstreams": {long.clone(): {}}}));
    assert_eq!(e.field, format!("upstreams.{long}"));
}

#[test]
fn auto_is_reserved() {
    assert_refused(
        patched(
            "/models/auto",
            json!({"targets": [{"upstream": "a", "model": "m"}]}),
        ),
        "models.auto",
        "reserved",
    );
}

#[test]
fn duplicate_rule_names() {
    let mut v = base();
    v["rules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"name": "r1", "use_model": "fast"}));
    v["rules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"name": "r0", "use_model": "fast"}));
    assert_refused(v, "rules[2].name", "duplicate rule name `r0`");
}

#[test]
fn duplicate_keys_in_name_maps_are_refused() {
    // JSON objects with a repeated key would otherwise silently keep the last one.
    let e = err_str(r#"{"upstreams": {"a": {}, "a": {"cluster": "other"}}}"#);
    assert_eq!(e.field, "upstreams", "{e}");
    assert!(
        e.message.contains("duplicate") && e.message.contains("`a`"),
        "{e}"
    );

    let e = err_str(
        r#"{"upstreams": {"a": {}},
            "models": {"m": {"targets": [{"upstream": "a", "model": "x"}]},
                       "m": {"targets": [{"upstream": "a", "model": "y"}]}}}"#,
    );
    assert_eq!(e.field, "models", "{e}");
    assert!(
        e.message.contains("duplicate") && e.message.contains("`m`"),
        "{e}"
    );

    let e = err_str(r#"{"upstreams": {"a": {"headers": {"x-a": "1", "x-a": "2"}}}}"#);
    assert_eq!(e.field, "upstreams.a.headers", "{e}");
    assert!(e.message.contains("duplicate"), "{e}");
}

#[test]
fn duplicate_upstream_headers_differing_in_case_are_refused() {
    let e = err(patched(
        "/upstreams/a/headers",
        json!({"X-Tenant": "1", "x-tenant": "2"}),
    ));
    assert!(e.field.starts_with("upstreams.a.headers."), "{e}");
    assert!(e.message.contains("duplicate"), "{e}");
}

#[test]
fn duplicate_struct_fields_are_refused() {
    let e = err_str(r#"{"upstreams": {"a": {}}, "max_body_bytes": 2048, "max_body_bytes": 4096}"#);
    assert!(e.message.contains("duplicate field"), "{e}");
}

#[test]
fn upstream_validation() {
    let cases: [(&str, Value, &str, &str); 12] = [
        (
            "/upstreams/a/cluster",
            json!(""),
            "upstreams.a.cluster",
            "cluster name",
        ),
        (
            "/upstreams/a/cluster",
            json!("my cluster"),
            "upstreams.a.cluster",
            "cluster name",
        ),
        (
            "/upstreams/a/cluster",
            json!("c\u{7}"),
            "upstreams.a.cluster",
            "cluster name",
        ),
        (
            "/upstreams/a/host",
            json!(""),
            "upstreams.a.host",
            "host name",
        ),
        (
            "/upstreams/a/host",
            json!("api.example.com/v1"),
            "upstreams.a.host",
            "host name",
        ),
        (
            "/upstreams/a/host",
            json!("a b"),
            "upstreams.a.host",
            "host name",
        ),
        (
            "/upstreams/a/path_prefix",
            json!("v1"),
            "upstreams.a.path_prefix",
            "start with `/`",
        ),
        (
            "/upstreams/a/path_prefix",
            json!(""),
            "upstreams.a.path_prefix",
            "start with `/`",
        ),
        (
            "/upstreams/a/path_prefix",
            json!("/v1?x=1"),
            "upstreams.a.path_prefix",
            "`?`",
        ),
        (
            "/upstreams/a/path_prefix",
            json!("/v1#frag"),
            "upstreams.a.path_prefix",
            "`#`",
        ),
        (
            "/upstreams/a/path_prefix",
            json!("/open ai"),
            "upstreams.a.path_prefix",
            "spaces",
        ),
        (
            "/upstreams/a/auth/key_env",
            json!("MY-KEY"),
            "upstreams.a.auth.key_env",
            "environment variable",
        ),
    ];
    for (pointer, value, field, needle) in cases {
        let e = err(patched(pointer, value.clone()));
        assert_eq!(e.field, field, "{pointer} = {value}: {e}");
        assert!(e.message.contains(needle), "{pointer} = {value}: {e}");
    }
    assert_refused(
        patched("/upstreams/a/auth/key_env", json!("")),
        "upstreams.a.auth.key_env",
        "environment variable",
    );
    // Accepted forms.
    ok(patched("/upstreams/a/host", json!("localhost:8080")));
    ok(patched("/upstreams/a/host", json!("[::1]:8080")));
    ok(patched(
        "/upstreams/a/cluster",
        json!("outbound|443||api.openai.com"),
    ));
}

#[test]
fn upstream_header_validation() {
    for name in ["bad header", "x:y", "", "ü"] {
        let e = err(patched("/upstreams/a/headers", json!({name: "v"})));
        assert_eq!(
            e.field,
            format!("upstreams.a.headers.{name}"),
            "{name:?}: {e}"
        );
        assert!(e.message.contains("not a valid header name"), "{e}");
    }
    for name in ["content-length", "Host", "TRANSFER-ENCODING", "connection"] {
        let e = err(patched("/upstreams/a/headers", json!({name: "v"})));
        assert_eq!(
            e.field,
            format!("upstreams.a.headers.{name}"),
            "{name}: {e}"
        );
        assert!(e.message.contains("managed"), "{e}");
    }
    for value in ["a\r\nb", "a\u{0}", "é", "\u{7f}"] {
        let e = err(patched("/upstreams/a/headers", json!({"x-a": value})));
        assert_eq!(e.field, "upstreams.a.headers.x-a", "{value:?}: {e}");
        assert!(e.message.contains("control characters"), "{e}");
    }
    let plan = ok(patched(
        "/upstreams/a/headers",
        json!({"x-empty": "", "x-tab": "a\tb", "x-sym": "!#$%&'*+-.^_`|~"}),
    ));
    assert_eq!(upstream(&plan, "a").headers.len(), 3);
}

#[test]
fn alias_validation() {
    assert_refused(
        patched("/models/fast/use_model", json!("smart")),
        "models.fast.use_model",
        "use_model is for rules and default",
    );
    assert_refused(
        patched("/models/fast", json!({"targets": []})),
        "models.fast.targets",
        "at least one target",
    );
    assert_refused(
        patched("/models/fast", json!({"strategy": "priority"})),
        "models.fast.targets",
        "at least one target",
    );
}

#[test]
fn target_validation() {
    let t = "/models/smart/targets/1";
    let f = "models.smart.targets[1]";
    assert_refused(
        patched(&format!("{t}/upstream"), json!("c")),
        &format!("{f}.upstream"),
        "unknown upstream `c`",
    );
    assert_refused(
        patched(&format!("{t}/upstream"), json!("A")),
        &format!("{f}.upstream"),
        "unknown upstream `A`",
    );
    for model in ["", "m\n", "m\u{1}"] {
        assert_refused(
            patched(&format!("{t}/model"), json!(model)),
            &format!("{f}.model"),
            "non-empty model id",
        );
    }
    for price in [
        json!({"input": -1, "output": 1}),
        json!({"input": 1, "output": -0.01}),
    ] {
        assert_refused(
            patched(&format!("{t}/price"), price.clone()),
            &format!("{f}.price"),
            "non-negative",
        );
    }
    // A number too large for f64 is refused by the JSON parser, still at the field.
    let text = patched(&format!("{t}/price"), json!({"input": 12345, "output": 1}))
        .to_string()
        .replace("12345", "1e309");
    let e = err_str(&text);
    assert!(e.field.starts_with(&format!("{f}.price")), "{e}");
    assert_refused(
        patched(&format!("{t}/weight"), json!(0)),
        &format!("{f}.weight"),
        "at least 1",
    );
    let e = err(patched(&format!("{t}/price"), json!({"input": 1})));
    assert_eq!(e.field, format!("{f}.price"), "{e}");
    assert!(e.message.contains("missing field `output`"), "{e}");
}

#[test]
fn cheapest_needs_a_price_on_every_target() {
    let v = patched(
        "/models/fast",
        json!({"strategy": "cheapest", "targets": [
            {"upstream": "a", "model": "m1", "price": {"input": 1, "output": 1}},
            {"upstream": "b", "model": "m2"}]}),
    );
    assert_refused(v, "models.fast.targets[1].price", "needs a price");

    // A rule that turns an alias without prices into `cheapest` is refused too; the error
    // points at the alias's target that lacks the price.
    assert_refused(
        patched("/rules/0/strategy", json!("cheapest")),
        "models.smart.targets[0].price",
        "needs a price",
    );
    // ... and `weighted` over an alias with a zero weight.
    let mut v = patched("/models/fast/targets/0/weight", json!(0));
    set_at(&mut v, "/default/strategy", json!("weighted"));
    assert_refused(v, "models.fast.targets[0].weight", "at least 1");
}

#[test]
fn rule_action_validation() {
    assert_refused(
        patched("/rules/0/use_model", json!("smrat")),
        "rules[0].use_model",
        "unknown model alias `smrat`",
    );
    assert_refused(
        patched("/rules/0/targets", json!([{"upstream": "a", "model": "m"}])),
        "rules[0].use_model",
        "not both",
    );
    assert_refused(
        patched(
            "/rules/0",
            json!({"name": "r0", "match": {"task": ["coding"]}}),
        ),
        "rules[0].targets",
        "at least one target",
    );
    assert_refused(
        patched(
            "/rules/0",
            json!({"name": "r0", "targets": [{"upstream": "nope", "model": "m"}]}),
        ),
        "rules[0].targets[0].upstream",
        "unknown upstream `nope`",
    );
    // A rule may not name `auto` as an alias: it is not one.
    assert_refused(
        patched("/rules/0/use_model", json!("auto")),
        "rules[0].use_model",
        "unknown model alias `auto`",
    );
}

#[test]
fn default_action_validation() {
    assert_refused(
        patched("/default/use_model", json!("nope")),
        "default.use_model",
        "unknown model alias `nope`",
    );
    assert_refused(
        patched(
            "/default",
            json!({"targets": [{"upstream": "z", "model": "m"}]}),
        ),
        "default.targets[0].upstream",
        "unknown upstream `z`",
    );
    assert_refused(
        patched("/default", json!({})),
        "default.targets",
        "at least one target",
    );
    assert_refused(
        patched(
            "/default",
            json!({"use_model": "fast", "targets": [{"upstream": "a", "model": "m"}]}),
        ),
        "default.use_model",
        "not both",
    );
}

#[test]
fn match_validation() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"model": []}), "rules[0].match.model", "empty list"),
        (
            json!({"model": ["gpt-*", ""]}),
            "rules[0].match.model[1]",
            "empty model pattern",
        ),
        (json!({"task": []}), "rules[0].match.task", "empty list"),
        (
            json!({"complexity": []}),
            "rules[0].match.complexity",
            "empty list",
        ),
        (json!({"tags": []}), "rules[0].match.tags", "empty list"),
        (
            json!({"tags": ["legal"]}),
            "rules[0].match.tags[0]",
            "unknown tag `legal`",
        ),
        (json!({"path": []}), "rules[0].match.path", "empty list"),
        (
            json!({"path": ["chat", "chat/completions"]}),
            "rules[0].match.path[1]",
            "unknown endpoint",
        ),
        (
            json!({"path": ["/v1/embeddings"]}),
            "rules[0].match.path[0]",
            "unknown endpoint",
        ),
        (
            json!({"headers": [{"name": "bad name", "exact": "x"}]}),
            "rules[0].match.headers[0].name",
            "not a header name",
        ),
        (
            json!({"headers": [{"name": "", "present": true}]}),
            "rules[0].match.headers[0].name",
            "not a header name",
        ),
        (
            json!({"headers": [{"name": ":bad name", "present": true}]}),
            "rules[0].match.headers[0].name",
            "not a header name",
        ),
        (
            json!({"headers": [{"name": ":", "present": true}]}),
            "rules[0].match.headers[0].name",
            "not a header name",
        ),
        (
            json!({"headers": [{"name": "x-a", "exact": "1"}, {"name": "x-b"}]}),
            "rules[0].match.headers[1]",
            "exactly one",
        ),
        (
            json!({"headers": [{"name": "x-a", "exact": "1", "present": true}]}),
            "rules[0].match.headers[0]",
            "exactly one",
        ),
        (
            json!({"headers": [{"name": "x-a", "exact": "1", "regex": "1"}]}),
            "rules[0].match.headers[0]",
            "exactly one",
        ),
        (
            json!({"headers": [{"name": "x-a", "regex": "(unclosed"}]}),
            "rules[0].match.headers[0].regex",
            "invalid regex",
        ),
        (
            json!({"headers": [{"name": "x-a", "regex": "\\w{1000}{1000}"}]}),
            "rules[0].match.headers[0].regex",
            "invalid regex",
        ),
        (
            json!({"min_prompt_tokens": 11, "max_prompt_tokens": 10}),
            "rules[0].match.min_prompt_tokens",
            "max_prompt_tokens",
        ),
    ];
    for (m, field, needle) in cases {
        let e = err(patched("/rules/0/match", m.clone()));
        assert_eq!(e.field, field, "{m}: {e}");
        assert!(e.message.contains(needle), "{m}: {e}");
    }
}

#[test]
fn tags_named_in_rules_must_be_defined() {
    let mut v = patched("/rules/0/match", json!({"tags": ["legal", "medical"]}));
    set_at(
        &mut v,
        "/classifier",
        json!({"tags": [{"name": "legal", "keywords": ["contract"]}]}),
    );
    assert_refused(v.clone(), "rules[0].match.tags[1]", "unknown tag `medical`");
    set_at(
        &mut v,
        "/classifier/tags",
        json!([{"name": "legal", "keywords": ["contract"]},
               {"name": "medical", "keywords": ["diagnosis"]}]),
    );
    let plan = ok(v);
    assert_eq!(
        plan.rules[0].matcher.tags.as_deref(),
        Some(&["legal".to_owned(), "medical".to_owned()][..])
    );
}

#[test]
fn classifier_errors_are_prefixed_with_classifier() {
    let e = err(patched("/classifier", json!({"complexity": {"medium": 0}})));
    assert_eq!(e.field, "classifier.complexity.medium", "{e}");
    let e = err(patched("/classifier", json!({"complexity": {"high": 1}})));
    assert_eq!(e.field, "classifier.complexity.high", "{e}");
    let e = err(patched("/classifier", json!({"tags": [{"name": "t"}]})));
    assert!(e.field.starts_with("classifier.tags[0]"), "{e}");
}

#[test]
fn passthrough_validation() {
    assert_refused(
        patched("/unknown_model", json!("passthrough")),
        "passthrough_upstream",
        "required",
    );
    let mut v = patched("/unknown_model", json!("passthrough"));
    set_at(&mut v, "/passthrough_upstream", json!("zz"));
    assert_refused(v, "passthrough_upstream", "unknown upstream `zz`");
    // Unknown even when rejecting: a typo is still a typo.
    assert_refused(
        patched("/passthrough_upstream", json!("zz")),
        "passthrough_upstream",
        "unknown upstream `zz`",
    );
}

#[test]
fn max_body_bytes_bounds() {
    for bad in [0u64, 1023, 268_435_457, u64::from(u32::MAX)] {
        assert_refused(
            patched("/max_body_bytes", json!(bad)),
            "max_body_bytes",
            "between 1024 and 268435456",
        );
    }
    for good in [1024u64, 65536, 268_435_456] {
        let plan = ok(patched("/max_body_bytes", json!(good)));
        assert_eq!(plan.max_body_bytes as u64, good);
    }
}

#[test]
fn cluster_header_validation() {
    for bad in ["", "x llm", ":authority", "x\u{1}", "é"] {
        assert_refused(
            patched("/cluster_header", json!(bad)),
            "cluster_header",
            "not a valid header name",
        );
    }
    let plan = ok(patched("/cluster_header", json!("X-Cluster_1")));
    assert_eq!(plan.cluster_header, "x-cluster_1");
    // Headers the router itself sets or strips would lose the routing decision.
    for taken in [
        "Authorization",
        "x-api-key",
        "api-key",
        "host",
        "anthropic-version",
    ] {
        assert_refused(
            patched("/cluster_header", json!(taken)),
            "cluster_header",
            "already sets or removes",
        );
    }
}

#[test]
fn first_error_wins_in_document_order_of_sections() {
    // Upstreams are validated before rules, rules before default.
    let mut v = patched("/upstreams/a/cluster", json!(""));
    set_at(&mut v, "/rules/0/use_model", json!("nope"));
    assert_eq!(err(v).field, "upstreams.a.cluster");
    let mut v = patched("/rules/0/use_model", json!("nope"));
    set_at(&mut v, "/default/use_model", json!("nope"));
    assert_eq!(err(v).field, "rules[0].use_model");
}

// ---------------------------------------------------------------------------------------
// Health and budgets
// ---------------------------------------------------------------------------------------

#[test]
fn health_defaults_match_the_readme() {
    use super::raw::WhenAllUnhealthy;
    let plan = ok(base());
    let h = &plan.health;
    assert!(h.enabled, "health tracking is on by default");
    assert_eq!(h.when_all_unhealthy, WhenAllUnhealthy::Soonest);
    assert_eq!(h.policy.allowed_fails, 3);
    assert_eq!(h.policy.cooldown_ms, 30_000);
    assert_eq!(h.policy.failure_rate_threshold, Some(0.5));
    assert_eq!(h.policy.failure_window_ms, 60_000);
    assert_eq!(h.policy.min_requests, 10);
    assert_eq!(h.policy.probe_timeout_ms, 30_000);
    assert_eq!(h.policy.max_rate_limit_cooldown_ms, 3_600_000);
    let fast = &plan.aliases["fast"].targets[0];
    assert_eq!(fast.budget, crate::health::Budget::default());
    assert_eq!(fast.key, "llm_router.h.a/a-small");
    assert_eq!(ok(patched("/health", json!({}))).health, plan.health);
}

#[test]
fn health_settings_are_read() {
    use super::raw::WhenAllUnhealthy;
    let plan = ok(patched(
        "/health",
        json!({"allowed_fails": 0, "cooldown_seconds": 2, "probe_timeout_seconds": 0.5,
               "max_retry_after_seconds": 60, "when_all_unhealthy": "reject",
               "failure_rate": {"threshold": 0.25, "window_seconds": 10, "min_requests": 4}}),
    ));
    let p = &plan.health.policy;
    assert_eq!(p.allowed_fails, 0);
    assert_eq!(p.cooldown_ms, 2_000);
    assert_eq!(p.probe_timeout_ms, 500);
    assert_eq!(p.max_rate_limit_cooldown_ms, 60_000);
    assert_eq!(p.failure_rate_threshold, Some(0.25));
    assert_eq!(p.failure_window_ms, 10_000);
    assert_eq!(p.min_requests, 4);
    assert_eq!(plan.health.when_all_unhealthy, WhenAllUnhealthy::Reject);
    assert!(plan.health.enabled);
    // `null` turns the failure-rate trigger off; `enabled: false` turns tracking off.
    let plan = ok(patched(
        "/health",
        json!({"failure_rate": null, "enabled": false}),
    ));
    assert_eq!(plan.health.policy.failure_rate_threshold, None);
    assert!(!plan.health.enabled);
    // Only the threshold is required.
    let plan = ok(patched(
        "/health",
        json!({"failure_rate": {"threshold": 1}}),
    ));
    assert_eq!(plan.health.policy.failure_rate_threshold, Some(1.0));
    assert_eq!(plan.health.policy.min_requests, 10);
}

#[test]
fn budgets_are_read_per_target() {
    let plan = ok(patched(
        "/models/fast/targets/0/budget",
        json!({"rpm": 10, "tpm": 5000}),
    ));
    let t = &plan.aliases["fast"].targets[0];
    assert_eq!(t.budget.rpm, Some(10));
    assert_eq!(t.budget.tpm, Some(5000));
    let plan = ok(patched("/models/fast/targets/0/budget", json!({"rpm": 1})));
    assert_eq!(plan.aliases["fast"].targets[0].budget.tpm, None);
}

#[test]
fn bad_health_values_name_the_field() {
    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"cooldown_seconds": -1}),
            "health.cooldown_seconds",
            "seconds",
        ),
        (
            json!({"cooldown_seconds": 86401}),
            "health.cooldown_seconds",
            "at most",
        ),
        (
            json!({"allowed_fails": 2000000}),
            "health.allowed_fails",
            "at most",
        ),
        (
            json!({"failure_rate": {"threshold": 0}}),
            "health.failure_rate.threshold",
            "fraction",
        ),
        (
            json!({"failure_rate": {"threshold": 1.5}}),
            "health.failure_rate.threshold",
            "fraction",
        ),
        (
            json!({"failure_rate": {"threshold": 0.5, "window_seconds": 0.5}}),
            "health.failure_rate.window_seconds",
            "at least 1",
        ),
        (
            json!({"failure_rate": {"threshold": 0.5, "window_seconds": 7200}}),
            "health.failure_rate.window_seconds",
            "at most 3600",
        ),
        (
            json!({"failure_rate": {"threshold": 0.5, "min_requests": 0}}),
            "health.failure_rate.min_requests",
            "at least 1",
        ),
        (
            json!({"probe_timeout_seconds": 0}),
            "health.probe_timeout_seconds",
            "greater than 0",
        ),
        (
            json!({"max_retry_after_seconds": 0}),
            "health.max_retry_after_seconds",
            "greater than 0",
        ),
    ];
    for (health, field, needle) in cases {
        assert_refused(patched("/health", health.clone()), field, needle);
    }
}

#[test]
fn bad_health_shapes_name_the_field() {
    let e = err(patched("/health", json!({"cooldown": 2})));
    assert!(e.field.starts_with("health"), "{e}");
    assert!(e.message.contains("unknown field"), "{e}");
    let e = err(patched("/health", json!({"when_all_unhealthy": "wait"})));
    assert_eq!(e.field, "health.when_all_unhealthy", "{e}");
    let e = err(patched(
        "/health",
        json!({"failure_rate": {"window_seconds": 5}}),
    ));
    assert!(e.field.starts_with("health.failure_rate"), "{e}");
    assert!(e.message.contains("threshold"), "{e}");
    let e = err(patched("/health", json!({"allowed_fails": -1})));
    assert_eq!(e.field, "health.allowed_fails", "{e}");
}

#[test]
fn bad_budgets_name_the_field() {
    assert_refused(
        patched("/models/fast/targets/0/budget", json!({"rpm": 0})),
        "models.fast.targets[0].budget.rpm",
        "at least 1",
    );
    assert_refused(
        patched("/models/smart/targets/1/budget", json!({"tpm": 0})),
        "models.smart.targets[1].budget.tpm",
        "at least 1",
    );
    let e = err(patched("/models/fast/targets/0/budget", json!({"rpd": 5})));
    assert!(e.field.starts_with("models.fast.targets[0].budget"), "{e}");
}

#[test]
fn failover_is_off_by_default_and_compiled_when_named() {
    let plan = ok(base());
    assert_eq!(plan.failover, None);
    let mut v = base();
    v["failover"] = json!({"cluster": "llm_failover"});
    let plan = ok(v);
    let f = plan.failover.as_ref().expect("failover on");
    assert_eq!((f.cluster.as_str(), f.max_attempts), ("llm_failover", 3));
    // Every configured target can be found by its key (the failover header names keys).
    assert!(plan.targets.contains_key("llm_router.h.b/b-large"));
    assert_eq!(plan.upstream_header_names, ["anthropic-version"]);
}

#[test]
fn failover_errors_name_the_field() {
    let cases = [
        (json!({"max_attempts": 2}), "failover.cluster", "required"),
        (json!({"cluster": ""}), "failover.cluster", "non-empty"),
        (
            json!({"cluster": "cluster-b"}),
            "failover.cluster",
            "upstream `b`",
        ),
        (
            json!({"cluster": "f", "max_attempts": 1}),
            "failover.max_attempts",
            "between 2 and 10",
        ),
        (
            json!({"cluster": "f", "max_attempts": 11}),
            "failover.max_attempts",
            "between 2 and 10",
        ),
        (
            json!({"cluster": "f", "attempts": 2}),
            "failover.attempts",
            "unknown field",
        ),
    ];
    for (failover, field, needle) in cases {
        let mut v = base();
        v["failover"] = failover;
        assert_refused(v, field, needle);
    }
}

// ---------------------------------------------------------------------------------------
// Usage, the models endpoint, the access log
// ---------------------------------------------------------------------------------------

#[test]
fn usage_models_endpoint_and_access_log_default_as_documented() {
    let plan = ok(base());
    assert!(!plan.usage.include_stream_usage && !plan.usage.cost_header);
    assert!(plan.access_log);
    let models = plan
        .models
        .as_ref()
        .expect("the models endpoint is on by default");
    assert_eq!(models.ids(), ["auto", "fast", "smart"]);

    let mut v = base();
    set_at(
        &mut v,
        "/usage",
        json!({"include_stream_usage": true, "cost_header": true}),
    );
    set_at(&mut v, "/models_endpoint", json!(false));
    set_at(&mut v, "/access_log", json!(false));
    let plan = ok(v);
    assert!(plan.usage.include_stream_usage && plan.usage.cost_header);
    assert!(plan.models.is_none());
    assert!(!plan.access_log);
}

#[test]
fn bad_usage_settings_are_refused_by_name() {
    let mut v = base();
    set_at(&mut v, "/usage", json!({"include_usage": true}));
    assert_refused(
        v,
        "usage.include_usage",
        "expected `include_stream_usage` or `cost_header`",
    );
    let mut v = base();
    set_at(&mut v, "/usage", json!({"cost_header": "yes"}));
    assert_refused(v, "usage.cost_header", "invalid type");
    let mut v = base();
    set_at(&mut v, "/models_endpoint", json!(1));
    assert_refused(v, "models_endpoint", "invalid type");
}

#[test]
fn cached_input_prices_cached_prompt_tokens() {
    let mut v = base();
    set_at(
        &mut v,
        "/models/fast/targets/0/price",
        json!({"input": 2.0, "output": 8.0, "cached_input": 0.5}),
    );
    set_at(
        &mut v,
        "/models/smart/targets/0/price",
        json!({"input": 3.0, "output": 6.0}),
    );
    let plan = ok(v);
    let fast = plan.aliases["fast"].targets[0].price.expect("priced");
    // 600 uncached and 400 cached prompt tokens, 100 completion tokens, in millionths.
    assert_eq!(
        fast.micro_cost(1000, 400, 100),
        600.0 * 2.0 + 400.0 * 0.5 + 800.0
    );
    // More cached than prompt tokens (a confused provider) never goes negative.
    assert_eq!(fast.micro_cost(10, 50, 0), 10.0 * 0.5);
    let smart = plan.aliases["smart"].targets[0].price.expect("priced");
    assert_eq!(smart.cached_input, 3.0, "defaults to input");
    let key = &plan.aliases["fast"].targets[0].key;
    assert_eq!(
        plan.targets[key].price,
        Some(fast),
        "found by key for the cost"
    );

    for bad in [json!(-1.0), json!("cheap")] {
        let mut v = base();
        set_at(
            &mut v,
            "/models/fast/targets/0/price",
            json!({"input": 1.0, "output": 1.0, "cached_input": bad}),
        );
        let e = err(v);
        assert!(e.field.starts_with("models.fast.targets[0].price"), "{e}");
    }
}

#[test]
fn the_classifier_method_is_checked_by_name() {
    for (method, ok) in [("learned", true), ("heuristic", true)] {
        let mut v = base();
        set_at(&mut v, "/classifier", json!({ "method": method }));
        assert_eq!(compile_value(&v).is_ok(), ok, "{method}");
    }
    let mut v = base();
    set_at(&mut v, "/classifier", json!({"method": "bert"}));
    assert_refused(v, "classifier.method", "unknown variant");
}
