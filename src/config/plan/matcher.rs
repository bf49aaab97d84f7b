//! A rule's `match`: model globs, tasks, tags, endpoints, header tests, client conditions.

use super::names::{glob_list, is_token_byte, non_empty};
use super::{HeaderMatcher, HeaderTest, Matcher, ModelMatch};
use crate::config::error::ConfigError;
use crate::config::raw::{RawHeaderMatch, RawMatch};
use crate::endpoint::Endpoint;
use crate::glob::Glob;

/// Compiled regexes are capped so that a hostile or careless config cannot exhaust VM memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn compile_match(
    m: &RawMatch,
    field: &str,
    tag_names: &[&str],
    has_clients: bool,
) -> Result<Matcher, ConfigError> {
    let models = match &m.model {
        Some(list) => {
            non_empty(list, &format!("{field}.model"))?;
            let mut mm = ModelMatch::default();
            for (i, pattern) in list.iter().enumerate() {
                if pattern.is_empty() {
                    return Err(ConfigError::new(
                        format!("{field}.model[{i}]"),
                        "empty model pattern",
                    ));
                }
                if pattern == "auto" {
                    mm.auto = true;
                } else {
                    mm.globs.push(Glob::new(pattern));
                }
            }
            Some(mm)
        }
        None => None,
    };
    if let Some(list) = &m.task {
        non_empty(list, &format!("{field}.task"))?;
    }
    if let Some(list) = &m.complexity {
        non_empty(list, &format!("{field}.complexity"))?;
    }
    if let Some(tags) = &m.tags {
        non_empty(tags, &format!("{field}.tags"))?;
        for (i, tag) in tags.iter().enumerate() {
            if !tag_names.contains(&tag.as_str()) {
                return Err(ConfigError::new(
                    format!("{field}.tags[{i}]"),
                    format!("unknown tag `{tag}` (define it in classifier.tags)"),
                ));
            }
        }
    }
    let endpoints = match &m.path {
        Some(paths) => {
            non_empty(paths, &format!("{field}.path"))?;
            let mut out = Vec::with_capacity(paths.len());
            for (i, p) in paths.iter().enumerate() {
                let e = ENDPOINT_NAMES
                    .iter()
                    .find(|(n, _)| n == p)
                    .map(|(_, e)| *e)
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("{field}.path[{i}]"),
                            format!(
                                "unknown endpoint `{p}`; expected one of chat, completions, responses, embeddings, messages"
                            ),
                        )
                    })?;
                out.push(e);
            }
            Some(out)
        }
        None => None,
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().flatten().enumerate() {
        headers.push(compile_header_match(h, &format!("{field}.headers[{i}]"))?);
    }
    for (name, given) in [
        ("clients", m.clients.is_some()),
        ("profile", m.profile.is_some()),
    ] {
        if given && !has_clients {
            return Err(ConfigError::new(
                format!("{field}.{name}"),
                "matches clients, but no `clients` section is configured",
            ));
        }
    }
    if let Some(list) = &m.profile {
        non_empty(list, &format!("{field}.profile"))?;
    }
    let clients = match &m.clients {
        Some(list) => Some(glob_list(list, &format!("{field}.clients"), "client name")?),
        None => None,
    };
    if let (Some(min), Some(max)) = (m.min_prompt_tokens, m.max_prompt_tokens) {
        if min > max {
            return Err(ConfigError::new(
                format!("{field}.min_prompt_tokens"),
                "must not be greater than max_prompt_tokens",
            ));
        }
    }
    Ok(Matcher {
        models,
        tasks: m.task.clone(),
        complexities: m.complexity.clone(),
        tags: m.tags.clone(),
        endpoints,
        headers,
        stream: m.stream,
        tools: m.tools,
        images: m.images,
        min_prompt_tokens: m.min_prompt_tokens,
        max_prompt_tokens: m.max_prompt_tokens,
        clients,
        profiles: m.profile.clone(),
    })
}

const ENDPOINT_NAMES: [(&str, Endpoint); 5] = [
    ("chat", Endpoint::ChatCompletions),
    ("completions", Endpoint::Completions),
    ("responses", Endpoint::Responses),
    ("embeddings", Endpoint::Embeddings),
    ("messages", Endpoint::AnthropicMessages),
];

fn compile_header_match(h: &RawHeaderMatch, field: &str) -> Result<HeaderMatcher, ConfigError> {
    let name = h.name.to_ascii_lowercase();
    // A token, or a pseudo-header (`:authority`, `:path`, ...): `:` followed by a token.
    let bare = name.strip_prefix(':').unwrap_or(&name);
    if bare.is_empty() || !bare.bytes().all(is_token_byte) {
        return Err(ConfigError::new(
            format!("{field}.name"),
            "not a header name",
        ));
    }
    let test = match (&h.exact, &h.regex, h.present) {
        (Some(v), None, None) => HeaderTest::Exact(v.clone()),
        (None, Some(r), None) => HeaderTest::Regex(
            regex::RegexBuilder::new(r)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    ConfigError::new(format!("{field}.regex"), format!("invalid regex: {e}"))
                })?,
        ),
        (None, None, Some(p)) => HeaderTest::Present(p),
        _ => {
            return Err(ConfigError::new(
                field,
                "give exactly one of exact, regex or present",
            ))
        }
    };
    Ok(HeaderMatcher { name, test })
}
