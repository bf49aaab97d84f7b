//! Native tests of the models endpoint: which ids are listed and in what order, both list
//! formats, single ids (with `/`, percent-encoded), 404 bodies, and which paths are answered.

use serde_json::{json, Value};

use super::*;
use crate::config::compile;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Aliases (one with a `/`), and rules naming exact models, globs, `auto`, a duplicate of an
/// alias and a name with a space; one rule names no model at all.
fn config() -> Value {
    json!({
        "upstreams": {"a": {}},
        "models": {
            "smart": {"targets": [{"upstream": "a", "model": "a-large"}]},
            "fast": {"targets": [{"upstream": "a", "model": "a-small"}]},
            "openai/gpt-4o": {"targets": [{"upstream": "a", "model": "gpt-4o"}]}
        },
        "rules": [
            {"name": "r0", "match": {"model": ["gpt-4o-mini*", "my model", "auto", "fast"]},
             "use_model": "smart"},
            {"name": "r1", "match": {"model": ["claude-?-opus", "gpt-4o"]}, "use_model": "fast"},
            {"name": "r2", "match": {"task": ["coding"]}, "use_model": "smart"}
        ],
        "default": {"use_model": "fast"}
    })
}

const IDS: [&str; 6] = [
    "auto",
    "fast",
    "gpt-4o",
    "my model",
    "openai/gpt-4o",
    "smart",
];

fn catalog_of(v: &Value) -> ModelsCatalog {
    let bytes = serde_json::to_vec(v).unwrap();
    match compile(&bytes, &|_| None) {
        Ok(plan) => ModelsCatalog::from_plan(&plan),
        Err(e) => panic!("test plan does not compile: {e}"),
    }
}

fn catalog() -> ModelsCatalog {
    catalog_of(&config())
}

/// The answer for `path`, which must be one, with its status checked and body parsed.
#[track_caller]
fn get(c: &ModelsCatalog, path: &str, anthropic: bool, status: u32) -> Value {
    let a = c
        .answer(path, anthropic)
        .unwrap_or_else(|| panic!("{path} not answered"));
    assert_eq!(a.status, status, "status of {path}");
    serde_json::from_slice(&a.body).unwrap()
}

fn openai(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "llm-router"})
}

fn anthropic(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": id,
           "created_at": "1970-01-01T00:00:00Z"})
}

// ---------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------

#[test]
fn ids_are_aliases_exact_rule_models_and_auto() {
    assert_eq!(catalog().ids(), IDS);
}

#[test]
fn minimal_config_lists_only_auto() {
    let c = catalog_of(&json!({
        "upstreams": {"a": {}},
        "default": {"targets": [{"upstream": "a", "model": "m"}]}
    }));
    assert_eq!(c.ids(), ["auto"]);
    let v = get(&c, "/v1/models", true, 200);
    assert_eq!(v["first_id"], "auto");
    assert_eq!(v["last_id"], "auto");
}

#[test]
fn openai_list() {
    let v = get(&catalog(), "/v1/models", false, 200);
    let data: Vec<Value> = IDS.iter().map(|id| openai(id)).collect();
    assert_eq!(v, json!({"object": "list", "data": data}));
}

#[test]
fn anthropic_list() {
    let v = get(&catalog(), "/v1/models", true, 200);
    let data: Vec<Value> = IDS.iter().map(|id| anthropic(id)).collect();
    assert_eq!(
        v,
        json!({"data": data, "has_more": false, "first_id": "auto", "last_id": "smart"})
    );
}

#[test]
fn output_is_deterministic() {
    // Each compile seeds its HashMaps afresh: any leaked iteration order would show.
    let first = catalog();
    for _ in 0..8 {
        let again = catalog();
        for anthropic in [false, true] {
            assert_eq!(
                first.answer("/v1/models", anthropic),
                again.answer("/v1/models", anthropic)
            );
        }
    }
}

#[test]
fn list_body_starts_with_object() {
    let a = catalog().answer("/v1/models", false).unwrap();
    assert!(a
        .body
        .starts_with(br#"{"object":"list","data":[{"id":"auto","#));
}

#[test]
fn trailing_slash_and_query_string() {
    let c = catalog();
    let list = c.answer("/v1/models", false);
    for path in [
        "/v1/models/",
        "/v1/models?limit=5",
        "/v1/models/?after_id=x&x=%2F",
    ] {
        assert_eq!(c.answer(path, false), list, "{path}");
    }
    assert_eq!(
        c.answer("/v1/models/?limit=1", true),
        c.answer("/v1/models", true)
    );
}

// ---------------------------------------------------------------------------------------
// Single models
// ---------------------------------------------------------------------------------------

#[test]
fn single_models() {
    let c = catalog();
    for (path, id) in [
        ("/v1/models/fast", "fast"),
        ("/v1/models/auto", "auto"),
        ("/v1/models/gpt-4o", "gpt-4o"),
        ("/v1/models/openai/gpt-4o", "openai/gpt-4o"),
        ("/v1/models/openai%2Fgpt-4o", "openai/gpt-4o"),
        ("/v1/models/openai%2fgpt-4o", "openai/gpt-4o"),
        ("/v1/models/my%20model", "my model"),
        ("/v1/models/%73mart?x=1", "smart"),
    ] {
        assert_eq!(get(&c, path, false, 200), openai(id), "{path}");
        assert_eq!(get(&c, path, true, 200), anthropic(id), "{path}");
    }
}

#[test]
fn globs_are_not_models() {
    let c = catalog();
    for path in [
        "/v1/models/gpt-4o-mini*",
        "/v1/models/gpt-4o-mini",
        "/v1/models/claude-3-opus",
    ] {
        get(&c, path, false, 404);
    }
}

#[test]
fn unknown_id_openai() {
    let v = get(&catalog(), "/v1/models/nope", false, 404);
    assert_eq!(
        v,
        json!({"error": {
            "message": "The model 'nope' does not exist or is not routed by this gateway.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found"
        }})
    );
}

#[test]
fn unknown_id_anthropic() {
    let v = get(&catalog(), "/v1/models/no%20pe", true, 404);
    assert_eq!(
        v,
        json!({"type": "error", "error": {
            "type": "not_found_error",
            "message": "The model 'no pe' does not exist or is not routed by this gateway."
        }})
    );
}

#[test]
fn unsafe_ids_are_not_echoed() {
    let c = catalog();
    let long = format!("/v1/models/{}", "x".repeat(257));
    let just_long_enough = format!("/v1/models/{}", "y".repeat(256));
    for path in [
        "/v1/models/evil%0Aline",
        "/v1/models/bell%07",
        "/v1/models/del%7F",
        "/v1/models/c1%C2%85",
        "/v1/models/bad-utf8%FF",
        long.as_str(),
    ] {
        let v = get(&c, path, false, 404);
        assert_eq!(
            v["error"]["message"],
            "The requested model does not exist or is not routed by this gateway.",
            "{path}"
        );
        assert_eq!(v["error"]["code"], "model_not_found");
        let v = get(&c, path, true, 404);
        assert_eq!(v["error"]["type"], "not_found_error");
        assert!(!v["error"]["message"].as_str().unwrap().contains('\''));
    }
    let v = get(&c, &just_long_enough, false, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("yyyy"));
}

// ---------------------------------------------------------------------------------------
// Paths not answered
// ---------------------------------------------------------------------------------------

#[test]
fn other_paths_are_not_answered() {
    let c = catalog();
    for path in [
        "/v1/modelsx",
        "/v1/models-x/fast",
        "/v1/chat/completions",
        "/models",
        "/v1/model",
        "/v1",
        "",
        "/",
        "/x/v1/models",
    ] {
        assert_eq!(c.answer(path, false), None, "{path}");
        assert_eq!(c.answer(path, true), None, "{path}");
    }
}

// ---------------------------------------------------------------------------------------
// Percent decoding
// ---------------------------------------------------------------------------------------

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%2Fb%2fc"), b"a/b/c");
    assert_eq!(percent_decode("%41%7a"), b"Az");
    // Malformed escapes stay as written.
    assert_eq!(percent_decode("100%"), b"100%");
    assert_eq!(percent_decode("%4"), b"%4");
    assert_eq!(percent_decode("%zz%4g"), b"%zz%4g");
    assert_eq!(percent_decode("%%41"), b"%A");
    assert_eq!(percent_decode("%E2%82%AC"), "€".as_bytes());
    assert_eq!(percent_decode(""), b"");
}

#[test]
fn malformed_escape_is_echoed_as_written() {
    let v = get(&catalog(), "/v1/models/100%", false, 404);
    assert_eq!(
        v["error"]["message"],
        "The model '100%' does not exist or is not routed by this gateway."
    );
}

#[test]
fn a_client_limited_to_some_models_sees_only_those() {
    let c = catalog();
    let clients = crate::clients::ClientsPlan::compile(
        &serde_json::from_value(json!({"identity_header": "x-client", "keys": [
            {"name": "limited", "models": ["fast", "openai/*"]},
            {"name": "any"}
        ]}))
        .unwrap(),
        "clients",
    )
    .unwrap();
    let limited = clients.get(0);
    // A client without `models` sees everything.
    assert_eq!(
        c.answer_for("/v1/models", false, clients.get(1)),
        c.answer("/v1/models", false)
    );
    let list = |anthropic: bool| {
        let a = c
            .answer_for("/v1/models?limit=3", anthropic, limited)
            .expect("answered");
        assert_eq!(a.status, 200);
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        let ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        (ids, v)
    };
    let (ids, _) = list(false);
    assert_eq!(ids, ["auto", "fast", "openai/gpt-4o"]);
    let (ids, v) = list(true);
    assert_eq!(ids, ["auto", "fast", "openai/gpt-4o"]);
    assert_eq!(v["last_id"], "openai/gpt-4o");
    // One id: allowed ones as before, others are unknown to this client.
    let one = |path: &str| c.answer_for(path, false, limited).expect("answered");
    assert_eq!(
        one("/v1/models/fast").body,
        c.answer("/v1/models/fast", false).unwrap().body
    );
    assert_eq!(one("/v1/models/openai%2Fgpt-4o").status, 200);
    assert_eq!(one("/v1/models/auto").status, 200);
    let hidden = one("/v1/models/smart");
    assert_eq!(hidden.status, 404);
    let v: Value = serde_json::from_slice(&hidden.body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(String::from_utf8_lossy(&hidden.body).contains("smart"));
    assert_eq!(one("/v1/models/nope").status, 404);
    // Not a models path: no answer.
    assert!(c
        .answer_for("/v1/chat/completions", false, limited)
        .is_none());
}
