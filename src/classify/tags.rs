//! Operator tags: validation, compilation into one regex set per tag, matching.

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::text::{Extracted, Role};
use super::{TagRule, TagScope};
use crate::config::error::ConfigError;

/// Limit on the compiled program of each tag (and of each of its regexes),
/// in bytes (`RegexBuilder::size_limit`). The regex crate's default is 10 MiB;
/// one MiB holds hundreds of case-insensitive keywords while keeping a hostile
/// or careless pattern (`\w{1000}{1000}`) from eating the Wasm VM's memory.
pub const TAG_REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Limit on the lazy-DFA cache of each tag, in bytes
/// (`RegexBuilder::dfa_size_limit`). Past it the cache is reset, which only
/// costs time.
pub const TAG_REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;
/// Most tags a configuration may declare.
pub const MAX_TAGS: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct CompiledTag {
    pub name: String,
    scope: TagScope,
    /// The keyword alternation (if any keywords) then each operator regex.
    set: RegexSet,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_ascii_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One case-insensitive alternation of the keywords. A keyword edge that is
/// an ASCII letter, digit or `_` gets an ASCII word boundary, so `rust` does
/// not match `trust` yet `c++` and `.net` (non-word edges) still match in
/// `c++ code` / `asp.net`; edges that are non-ASCII letters get none, so CJK
/// keywords match inside unspaced text. ASCII boundaries also keep the fast
/// DFA engines usable on non-ASCII input.
pub(crate) fn keyword_pattern<'k>(keywords: impl IntoIterator<Item = &'k str>) -> String {
    let mut p = String::from("(?i:");
    for (i, kw) in keywords.into_iter().enumerate() {
        if i > 0 {
            p.push('|');
        }
        if is_ascii_word(kw.chars().next()) {
            p.push_str(r"(?-u:\b)");
        }
        p.push_str(&regex::escape(kw));
        if is_ascii_word(kw.chars().next_back()) {
            p.push_str(r"(?-u:\b)");
        }
    }
    p.push(')');
    p
}

fn regex_error(e: &regex::Error) -> String {
    format!("invalid regex: {e}")
}

impl CompiledTag {
    fn compile(rule: &TagRule, at: &str) -> Result<CompiledTag, ConfigError> {
        if !valid_name(&rule.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!(
                    "tag name {:?} must be non-empty and use only letters, digits, '_', '.', '-'",
                    rule.name
                ),
            ));
        }
        if rule.keywords.is_empty() && rule.regex.is_empty() {
            return Err(ConfigError::new(
                at,
                "a tag needs at least one keyword or regex",
            ));
        }
        let mut keywords = Vec::with_capacity(rule.keywords.len());
        for (j, kw) in rule.keywords.iter().enumerate() {
            let kw = kw.trim();
            if kw.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.keywords[{j}]"),
                    "keyword must not be empty",
                ));
            }
            keywords.push(kw);
        }
        let mut patterns = Vec::with_capacity(rule.regex.len() + 1);
        if !keywords.is_empty() {
            let p = keyword_pattern(keywords.iter().copied());
            RegexBuilder::new(&p)
                .size_limit(TAG_REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::new(format!("{at}.keywords"), regex_error(&e)))?;
            patterns.push(p);
        }
        for (j, re) in rule.regex.iter().enumerate() {
            RegexBuilder::new(re)
                .size_limit(TAG_REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::new(format!("{at}.regex[{j}]"), regex_error(&e)))?;
            patterns.push(re.clone());
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(TAG_REGEX_SIZE_LIMIT)
            .dfa_size_limit(TAG_REGEX_DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| ConfigError::new(at, regex_error(&e)))?;
        Ok(CompiledTag {
            name: rule.name.clone(),
            scope: rule.scope,
            set,
        })
    }

    /// Whether any text in the tag's scope matches.
    pub(crate) fn matches(&self, ex: &Extracted<'_>) -> bool {
        const USER: &[Role] = &[Role::User];
        const ALL: &[Role] = &[Role::System, Role::User, Role::Assistant];
        match self.scope {
            TagScope::LastUser => ex.last_user_texts().any(|t| self.set.is_match(t)),
            TagScope::User => ex.texts_of(USER).any(|t| self.set.is_match(t)),
            TagScope::All => ex.texts_of(ALL).any(|t| self.set.is_match(t)),
        }
    }
}

/// Validates and compiles `rules` (the config section at `field`.tags).
pub(crate) fn compile(rules: &[TagRule], field: &str) -> Result<Vec<CompiledTag>, ConfigError> {
    if rules.len() > MAX_TAGS {
        return Err(ConfigError::new(
            format!("{field}.tags"),
            format!("at most {MAX_TAGS} tags are allowed, got {}", rules.len()),
        ));
    }
    let mut out: Vec<CompiledTag> = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{field}.tags[{i}]");
        let tag = CompiledTag::compile(rule, &at)?;
        if out.iter().any(|t| t.name == tag.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("duplicate tag name {:?}", tag.name),
            ));
        }
        out.push(tag);
    }
    Ok(out)
}
