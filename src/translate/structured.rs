//! Structured output, where both APIs can express it: OpenAI's `response_format`
//! `json_schema` and Anthropic's `output_config.format` (`json_schema`). The answer needs no
//! mapping: both give the JSON as the message's text.

use serde_json::{json, Value};

use super::Untranslatable;

type Result<T> = std::result::Result<T, Untranslatable>;

/// OpenAI's `response_format` `json_schema` as Anthropic's structured output
/// (`output_config.format`); its `name`, `description` and `strict` have no equivalent and
/// are dropped (Anthropic's output always follows the schema). `json_object` asks for JSON
/// without a schema, which Anthropic cannot: refused.
pub(super) fn openai_to_anthropic(v: &Value) -> Result<Value> {
    let schema = match v.get("type").and_then(Value::as_str) {
        Some("json_schema") => v.pointer("/json_schema/schema").filter(|s| s.is_object()),
        Some("json_object") => {
            return Err(Untranslatable::new(
                "response_format",
                "`json_object` has no equivalent in the Anthropic Messages API of the target (it takes a `json_schema`)",
            ))
        }
        _ => return Err(Untranslatable::new("response_format.type", "unknown value")),
    };
    let schema = schema.ok_or_else(|| {
        Untranslatable::new("response_format.json_schema.schema", "must be an object")
    })?;
    Ok(json!({"format": {"type": "json_schema", "schema": schema}}))
}

/// Anthropic's structured output (`output_config.format`, or the beta's top-level
/// `output_format`) as OpenAI's strict `response_format` `json_schema`; `None` when it asks
/// for none. Other `output_config` members (`effort`) have no equivalent: refused.
pub(super) fn anthropic_to_openai(key: &str, v: &Value) -> Result<Option<Value>> {
    let format = if key == "output_format" {
        Some(v)
    } else {
        let config = v
            .as_object()
            .ok_or_else(|| Untranslatable::new(key, "must be an object"))?;
        if let Some((k, _)) = config.iter().find(|(k, v)| *k != "format" && !v.is_null()) {
            return Err(Untranslatable::new(
                format!("{key}.{k}"),
                "has no equivalent in the OpenAI Chat Completions API of the target",
            ));
        }
        config.get("format").filter(|f| !f.is_null())
    };
    let Some(format) = format else {
        return Ok(None);
    };
    let field = if key == "output_format" {
        key.to_owned()
    } else {
        format!("{key}.format")
    };
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err(Untranslatable::new(
            format!("{field}.type"),
            "unknown value",
        ));
    }
    let schema = format
        .get("schema")
        .filter(|s| s.is_object())
        .ok_or_else(|| Untranslatable::new(format!("{field}.schema"), "must be an object"))?;
    Ok(Some(json!({
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": true}
    })))
}
