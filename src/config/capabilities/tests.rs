//! Native tests of `capabilities`: each field compiles and is validated naming the field,
//! unknown fields are refused, the model-level map and a target's own fields merge field by
//! field, and listings of one target share (and must agree on) what they declare.

use serde_json::{json, Value};

use super::{Capabilities, Capability};
use crate::config::error::ConfigError;
use crate::config::plan::{compile, Plan, Target};

fn compile_value(v: &Value) -> Result<Plan, ConfigError> {
    compile(v.to_string().as_bytes(), &|_| Some("k".to_owned()))
}

fn ok(v: Value) -> Plan {
    match compile_value(&v) {
        Ok(plan) => plan,
        Err(e) => panic!("expected {v} to compile, got {e}"),
    }
}

#[track_caller]
fn refused(v: Value, field: &str, needle: &str) {
    match compile_value(&v) {
        Ok(_) => panic!("expected {v} to be refused"),
        Err(e) => {
            assert_eq!(e.field, field, "wrong field for error: {e}");
            assert!(e.message.contains(needle), "{e} does not say {needle:?}");
        }
    }
}

/// Alias `m` with targets `a/small` (given `caps`) and `b/big`, and `extra` members.
fn config(caps: Value, extra: Value) -> Value {
    let mut v = json!({
        "upstreams": {"a": {}, "b": {}},
        "models": {"m": {"targets": [
            {"upstream": "a", "model": "small", "capabilities": caps},
            {"upstream": "b", "model": "big"}
        ]}}
    });
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    v
}

fn target<'p>(plan: &'p Plan, alias: &str, i: usize) -> &'p Target {
    &plan.aliases[alias].targets[i]
}

const T0: &str = "models.m.targets[0].capabilities";

#[test]
fn every_field_compiles() {
    let p = ok(config(
        json!({"context_window": 8192, "max_output_tokens": 4096, "vision": true,
               "tools": false, "json_output": true, "structured_outputs": false,
               "streaming": true}),
        json!({}),
    ));
    assert_eq!(
        target(&p, "m", 0).caps,
        Capabilities {
            context_window: Some(8192),
            max_output_tokens: Some(4096),
            vision: Some(true),
            tools: Some(false),
            json_output: Some(true),
            structured_outputs: Some(false),
            streaming: Some(true),
        }
    );
    // Undeclared: unknown. The other target declares nothing.
    assert_eq!(target(&p, "m", 1).caps, Capabilities::default());
    // The attempt filter's view of the target has them too.
    let key = &target(&p, "m", 0).key;
    assert_eq!(p.targets[key].caps, target(&p, "m", 0).caps);
    // `null` is undeclared, like a missing field.
    let p = ok(config(
        json!({"vision": null, "context_window": null}),
        json!({}),
    ));
    assert_eq!(target(&p, "m", 0).caps, Capabilities::default());
}

#[test]
fn each_field_is_validated_naming_it() {
    for name in ["context_window", "max_output_tokens"] {
        refused(
            config(json!({ name: 0 }), json!({})),
            &format!("{T0}.{name}"),
            "at least 1",
        );
        for bad in [json!(-1), json!(1.5), json!("8k"), json!(true)] {
            refused(
                config(json!({ name: bad }), json!({})),
                &format!("{T0}.{name}"),
                "",
            );
        }
    }
    for name in [
        "vision",
        "tools",
        "json_output",
        "structured_outputs",
        "streaming",
    ] {
        for bad in [json!(1), json!("yes"), json!([])] {
            refused(
                config(json!({ name: bad }), json!({})),
                &format!("{T0}.{name}"),
                "expected a boolean",
            );
        }
    }
    refused(
        config(
            json!({"context_window": 1000, "max_output_tokens": 2000}),
            json!({}),
        ),
        &format!("{T0}.max_output_tokens"),
        "greater than the context_window 1000",
    );
    refused(config(json!("all"), json!({})), T0, "");
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    refused(
        config(json!({"visoin": true}), json!({})),
        &format!("{T0}.visoin"),
        "unknown field `visoin`",
    );
    refused(
        config(
            json!({}),
            json!({"capabilities": {"small": {"context": 8}}}),
        ),
        "capabilities.small.context",
        "unknown field `context`",
    );
    // Rules and the default declare targets too.
    let v = json!({
        "upstreams": {"a": {}},
        "rules": [{"name": "r", "targets": [{"upstream": "a", "model": "x",
                                              "capabilities": {"tool": true}}]}],
    });
    refused(
        v,
        "rules[0].targets[0].capabilities.tool",
        "unknown field `tool`",
    );
    let v = json!({
        "upstreams": {"a": {}},
        "default": {"targets": [{"upstream": "a", "model": "x",
                                 "capabilities": {"streaming": "no"}}]},
    });
    refused(
        v,
        "default.targets[0].capabilities.streaming",
        "expected a boolean",
    );
}

#[test]
fn model_level_entries_apply_to_every_target_with_that_model() {
    let v = json!({
        "upstreams": {"a": {}, "b": {}},
        "capabilities": {
            "shared": {"context_window": 128000, "vision": true, "tools": true},
            "big": {"streaming": false}
        },
        "models": {
            "one": {"targets": [{"upstream": "a", "model": "shared"},
                                {"upstream": "b", "model": "big"}]},
            // The same model at another upstream: a target's own fields override the model's.
            "two": {"targets": [{"upstream": "b", "model": "shared",
                                 "capabilities": {"context_window": 32000, "vision": false}}]}
        },
        "rules": [{"name": "r", "match": {"images": true},
                   "targets": [{"upstream": "a", "model": "shared"}]}]
    });
    let p = ok(v);
    let a = target(&p, "one", 0).caps;
    assert_eq!(
        (a.context_window, a.vision, a.tools, a.streaming),
        (Some(128000), Some(true), Some(true), None)
    );
    assert_eq!(target(&p, "one", 1).caps.streaming, Some(false));
    let b = target(&p, "two", 0).caps;
    assert_eq!(
        (b.context_window, b.vision, b.tools),
        (Some(32000), Some(false), Some(true))
    );
    assert_eq!(p.rules[0].action.targets[0].caps, a);
}

#[test]
fn model_level_entries_are_validated_and_must_match_a_target() {
    refused(
        config(
            json!({}),
            json!({"capabilities": {"small": {"max_output_tokens": 0}}}),
        ),
        "capabilities.small.max_output_tokens",
        "at least 1",
    );
    refused(
        config(
            json!({}),
            json!({"capabilities": {"smal": {"vision": true}}}),
        ),
        "capabilities.smal",
        "no target has the model id `smal`",
    );
    refused(
        config(
            json!({}),
            json!({"capabilities": {"small": {"vision": true}, "small ": {"vision": true}}}),
        ),
        "capabilities.small ",
        "no target has the model id",
    );
    refused(
        config(json!({}), json!({"capabilities": []})),
        "capabilities",
        "",
    );
    // The merged result must fit too: the model's window, the target's output cap.
    refused(
        config(
            json!({"max_output_tokens": 9000}),
            json!({"capabilities": {"small": {"context_window": 8192}}}),
        ),
        &format!("{T0}.max_output_tokens"),
        "9000 is greater than the context_window 8192",
    );
    refused(
        config(
            json!({"context_window": 1000}),
            json!({"capabilities": {"small": {"max_output_tokens": 4096}}}),
        ),
        "capabilities.small.max_output_tokens",
        "4096 is greater than the context_window 1000",
    );
}

#[test]
fn listings_of_one_target_share_their_fields_and_must_agree() {
    let v = json!({
        "upstreams": {"a": {}},
        "models": {
            "x": {"targets": [{"upstream": "a", "model": "m", "capabilities": {"vision": true}}]},
            "y": {"targets": [{"upstream": "a", "model": "m",
                               "capabilities": {"context_window": 4096}}]}
        },
        "default": {"targets": [{"upstream": "a", "model": "m"}]}
    });
    let p = ok(v.clone());
    let want = Capabilities {
        context_window: Some(4096),
        vision: Some(true),
        ..Capabilities::default()
    };
    assert_eq!(target(&p, "x", 0).caps, want);
    assert_eq!(target(&p, "y", 0).caps, want);
    assert_eq!(p.default.as_ref().map(|d| d.targets[0].caps), Some(want));

    let mut v = v;
    v["models"]["y"]["targets"][0]["capabilities"]["vision"] = json!(false);
    refused(
        v,
        "models.y.targets[0].capabilities.vision",
        "differs from the vision of the same target at models.x.targets[0]",
    );
}

#[test]
fn capability_names_and_slots() {
    for (i, c) in Capability::ALL.into_iter().enumerate() {
        assert_eq!(c.slot(), i);
    }
    let names: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "context_window",
            "max_output_tokens",
            "vision",
            "tools",
            "json_output",
            "structured_outputs",
            "streaming"
        ]
    );
    // Every name is a field of `capabilities`.
    for name in names {
        let v = if name.contains("_window") || name.contains("tokens") {
            json!(1)
        } else {
            json!(true)
        };
        ok(config(json!({ name: v }), json!({})));
    }
}
