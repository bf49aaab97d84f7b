//! Operator tags: validation, compilation, matching.
//!
//! A tag matches when its keyword alternation or one of its regexes matches a
//! text in its scope. The reference semantics are those of the regex set
//! compiled from [`keyword_pattern`] and the operator regexes; the matching
//! gets there faster:
//!
//! * Keywords that are plain ASCII (nearly all) are searched for by
//!   [`Keywords`], a case-insensitive multi-pattern Horspool (Wu–Manber)
//!   search that skips most of the text, shared by all tags and run once per
//!   text. It gives up on a text (and the text goes through the tag's regex
//!   set) only where a char that `(?i)` folds onto an ASCII letter (`ſ`, the
//!   Kelvin sign) sits at a place that could be part of a match.
//! * The other keywords (non-ASCII ones) and the regexes stay regexes, run
//!   only for tags the keyword search did not already match.
//!
//! This file holds the tags' compilation from the configuration and their matching;
//! the keyword search itself is in `tags/keywords.rs`.

mod keywords;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::text::{Extracted, Role};
use super::{TagRule, TagScope};
use crate::config::error::ConfigError;
use keywords::{Found, Keyword, Keywords, TagSet};

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

/// Non-ASCII chars that `(?i)` (Unicode simple case folding) matches to an
/// ASCII letter: the long s and the Kelvin sign. A test checks the list
/// against the regex crate.
pub(crate) const FOLDS_TO_ASCII: [(u8, &str); 2] = [(b's', "\u{17f}"), (b'k', "\u{212a}")];

#[derive(Debug, Clone)]
pub(crate) struct CompiledTag {
    pub name: String,
    scope: TagScope,
    /// The keyword alternation (if any keywords) then each operator regex:
    /// the reference, used where the keyword search gives up.
    set: RegexSet,
    /// The alternation of the keywords [`Keywords`] does not search for (if
    /// any) then each operator regex; `None` if that is nothing.
    rest: Option<RegexSet>,
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

/// Whether [`Keywords`] searches for this (trimmed, non-empty) keyword.
fn is_plain(kw: &str) -> bool {
    kw.is_ascii()
}

impl CompiledTag {
    /// Also returns the tag's plain keywords, trimmed.
    fn compile<'r>(
        rule: &'r TagRule,
        at: &str,
    ) -> Result<(CompiledTag, Vec<&'r str>), ConfigError> {
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
        let build_set = |patterns: &[String]| {
            RegexSetBuilder::new(patterns)
                .size_limit(TAG_REGEX_SIZE_LIMIT)
                .dfa_size_limit(TAG_REGEX_DFA_SIZE_LIMIT)
                .build()
                .map_err(|e| ConfigError::new(at, regex_error(&e)))
        };
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
        let set = build_set(&patterns)?;
        let (plain, other): (Vec<&str>, Vec<&str>) =
            keywords.into_iter().partition(|k| is_plain(k));
        let rest = if plain.is_empty() {
            Some(set.clone())
        } else if other.is_empty() && rule.regex.is_empty() {
            None
        } else {
            let mut rest = Vec::with_capacity(rule.regex.len() + 1);
            if !other.is_empty() {
                rest.push(keyword_pattern(other));
            }
            rest.extend(rule.regex.iter().cloned());
            Some(build_set(&rest)?)
        };
        let tag = CompiledTag {
            name: rule.name.clone(),
            scope: rule.scope,
            set,
            rest,
        };
        Ok((tag, plain))
    }
}

/// The compiled tags of a configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tags {
    tags: Vec<CompiledTag>,
    /// The keyword search for the texts of the last user message (keywords
    /// of every scope), of the other user messages (scopes `user` and `all`),
    /// and of system and assistant messages (scope `all`).
    last_user: Option<Keywords>,
    user: Option<Keywords>,
    others: Option<Keywords>,
}

impl Tags {
    /// Names of the tags, in configuration order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| t.name.as_str())
    }

    /// Names of the tags matching the prompt, in configuration order.
    pub(crate) fn matching(&self, ex: &Extracted<'_>) -> Vec<String> {
        if self.tags.is_empty() {
            return Vec::new();
        }
        let mut matched = TagSet::default();
        // (tag, segment) pairs the keyword search could not decide.
        let mut undecided: Vec<(usize, usize)> = Vec::new();
        for (seg, s) in ex.segments.iter().enumerate() {
            let keywords = match s.role {
                Role::User if Some(s.msg) == ex.last_user => &self.last_user,
                Role::User => &self.user,
                Role::System | Role::Assistant => &self.others,
                Role::Tool => continue,
            };
            let Some(keywords) = keywords else { continue };
            let open = keywords.tags.minus(&matched);
            if open.is_empty() || s.text.len() < keywords.window {
                continue;
            }
            keywords.search(s.text, open, &mut |tag, outcome| match outcome {
                Found::Sure => matched.insert(tag),
                Found::Undecided => undecided.push((tag, seg)),
            });
        }
        for &(tag, seg) in &undecided {
            if matched.contains(tag) {
                continue;
            }
            let (Some(t), Some(s)) = (self.tags.get(tag), ex.segments.get(seg)) else {
                continue;
            };
            if t.set.is_match(s.text) {
                matched.insert(tag);
            }
        }
        let mut names = Vec::new();
        for (i, t) in self.tags.iter().enumerate() {
            let hit = matched.contains(i)
                || t.rest.as_ref().is_some_and(|rest| {
                    const USER: &[Role] = &[Role::User];
                    const ALL: &[Role] = &[Role::System, Role::User, Role::Assistant];
                    match t.scope {
                        TagScope::LastUser => ex.last_user_texts().any(|t| rest.is_match(t)),
                        TagScope::User => ex.texts_of(USER).any(|t| rest.is_match(t)),
                        TagScope::All => ex.texts_of(ALL).any(|t| rest.is_match(t)),
                    }
                });
            if hit {
                names.push(t.name.clone());
            }
        }
        names
    }
}

/// Validates and compiles `rules` (the config section at `field`.tags).
pub(crate) fn compile(rules: &[TagRule], field: &str) -> Result<Tags, ConfigError> {
    if rules.len() > MAX_TAGS {
        return Err(ConfigError::new(
            format!("{field}.tags"),
            format!("at most {MAX_TAGS} tags are allowed, got {}", rules.len()),
        ));
    }
    let mut out: Vec<CompiledTag> = Vec::with_capacity(rules.len());
    // Keywords by the scope groups of `Tags`.
    let mut groups: [Vec<Keyword>; 3] = Default::default();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{field}.tags[{i}]");
        let (tag, plain) = CompiledTag::compile(rule, &at)?;
        if out.iter().any(|t| t.name == tag.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("duplicate tag name {:?}", tag.name),
            ));
        }
        let in_groups = match tag.scope {
            TagScope::LastUser => [true, false, false],
            TagScope::User => [true, true, false],
            TagScope::All => [true, true, true],
        };
        let Ok(tag_index) = u16::try_from(i) else {
            continue;
        };
        for kw in plain {
            let keyword = Keyword {
                text: kw.to_ascii_lowercase().into_bytes().into_boxed_slice(),
                tag: tag_index,
                bound_start: is_ascii_word(kw.chars().next()),
                bound_end: is_ascii_word(kw.chars().next_back()),
            };
            for (group, &on) in groups.iter_mut().zip(&in_groups) {
                if on {
                    group.push(keyword.clone());
                }
            }
        }
        out.push(tag);
    }
    let [last_user, user, others] = groups.map(Keywords::new);
    Ok(Tags {
        tags: out,
        last_user,
        user,
        others,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::classify::text::extract;
    use crate::endpoint::Endpoint;

    /// Every non-ASCII char that `(?i)` matches to an ASCII char.
    #[test]
    fn folds_to_ascii_is_complete() {
        let haystack: String = ('\u{80}'..=char::MAX).collect();
        let any_ascii = regex::Regex::new(r"(?i)[\x00-\x7f]").unwrap();
        let mut found: Vec<(u8, String)> = Vec::new();
        for m in any_ascii.find_iter(&haystack) {
            for a in 0u8..0x80 {
                let re = regex::Regex::new(&format!(
                    "(?i)^{}$",
                    regex::escape(&char::from(a).to_string())
                ))
                .unwrap();
                let entry = (a.to_ascii_lowercase(), m.as_str().to_string());
                if re.is_match(m.as_str()) && !found.contains(&entry) {
                    found.push(entry);
                }
            }
        }
        let expected: Vec<(u8, String)> = FOLDS_TO_ASCII
            .iter()
            .map(|&(a, s)| (a, s.to_string()))
            .collect();
        assert_eq!(found, expected);
    }

    /// The tags as the regex sets alone decide them: the reference semantics.
    struct Reference(Vec<(TagRule, RegexSet)>);

    impl Reference {
        fn new(rules: &[TagRule]) -> Reference {
            Reference(
                rules
                    .iter()
                    .map(|rule| {
                        let mut patterns = Vec::new();
                        if !rule.keywords.is_empty() {
                            patterns.push(keyword_pattern(rule.keywords.iter().map(|k| k.trim())));
                        }
                        patterns.extend(rule.regex.iter().cloned());
                        (rule.clone(), RegexSet::new(&patterns).unwrap())
                    })
                    .collect(),
            )
        }

        fn matching(&self, ex: &Extracted<'_>) -> Vec<String> {
            let mut out = Vec::new();
            for (rule, set) in &self.0 {
                let hit = match rule.scope {
                    TagScope::LastUser => ex.last_user_texts().any(|t| set.is_match(t)),
                    TagScope::User => ex.texts_of(&[Role::User]).any(|t| set.is_match(t)),
                    TagScope::All => ex
                        .texts_of(&[Role::System, Role::User, Role::Assistant])
                        .any(|t| set.is_match(t)),
                };
                if hit {
                    out.push(rule.name.clone());
                }
            }
            out
        }
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    const KEYWORDS: &[&str] = &[
        "rust",
        "c++",
        ".net",
        "asp.net",
        "credit card",
        "k8s",
        "sk",
        "ks",
        "task",
        "s",
        "k",
        "a",
        "ai",
        "go",
        "Kelvin",
        "kask",
        "退款",
        "Erstattung",
        "ünïcode",
        "e-mail",
        "x",
        "state-of-the-art",
        "_id",
        "a_b",
        "1st",
        "c#",
        "!!",
        "s s",
        "ss",
        "sss",
        "kk",
        "ſtuff",
        "sk8",
        "über",
        "contract",
        "lawsuit",
        "liability",
        "KS",
        "skis",
        "desks",
        "a.k.a.",
        "=>",
        " spaced ",
        "ab",
        "ba",
        "abab",
        "mississippi",
        "kayak",
        "bookkeeper",
    ];

    /// A text made of keywords in mixed case (some letters replaced by
    /// chars that fold onto them) and separators.
    fn text(r: &mut Rng) -> String {
        const GLUE: &[&str] = &[
            " ", " ", "", ".", ",", "-", "_", "x", "1", "é", "日", "\n", "  ", "+", "#", "ſ", "K",
            "’", "s", "k", "(", "!",
        ];
        let mut s = String::new();
        for _ in 0..r.below(12) {
            s.push_str(r.pick(GLUE));
            let kw = r.pick(KEYWORDS);
            for c in kw.chars() {
                match (c, r.below(6)) {
                    ('s' | 'S', 0) => s.push('ſ'),
                    ('k' | 'K', 0) => s.push('\u{212a}'),
                    (_, 1) => s.extend(c.to_uppercase()),
                    (_, 2) => s.extend(c.to_lowercase()),
                    _ => s.push(c),
                }
            }
            if r.below(8) == 0 {
                // Cut a keyword short.
                s.pop();
            }
            s.push_str(r.pick(GLUE));
        }
        s
    }

    #[test]
    fn keyword_search_agrees_with_the_regexes() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let scopes = [TagScope::LastUser, TagScope::User, TagScope::All];
        let mut hits = 0;
        for _ in 0..300 {
            let rules: Vec<TagRule> = (0..1 + r.below(4))
                .map(|i| TagRule {
                    name: format!("t{i}"),
                    keywords: (0..1 + r.below(4))
                        .map(|_| r.pick(KEYWORDS).to_string())
                        .collect(),
                    regex: if r.below(5) == 0 {
                        vec!["^Ab".to_string()]
                    } else {
                        vec![]
                    },
                    scope: scopes[r.below(3)],
                })
                .collect();
            let tags = compile(&rules, "classifier").unwrap();
            let reference = Reference::new(&rules);
            for _ in 0..20 {
                let body = json!({"messages": [
                    {"role": "system", "content": text(&mut r)},
                    {"role": "user", "content": text(&mut r)},
                    {"role": "assistant", "content": text(&mut r)},
                    {"role": "tool", "content": text(&mut r)},
                    {"role": "user", "content": [{"type": "text", "text": text(&mut r)},
                                                 {"type": "text", "text": text(&mut r)}]},
                ]});
                let ex = extract(&body, Endpoint::ChatCompletions);
                let want = reference.matching(&ex);
                hits += want.len();
                assert_eq!(tags.matching(&ex), want, "{rules:?}\n{body}");
            }
        }
        assert!(hits > 1000, "{hits}");
    }

    #[test]
    fn keyword_edges() {
        let rules: Vec<TagRule> = [
            ("rust", "rust"),
            ("cpp", "C++"),
            ("net", ".NET"),
            ("sk", "sk"),
        ]
        .iter()
        .map(|&(name, kw)| TagRule {
            name: name.to_string(),
            keywords: vec![kw.to_string()],
            regex: vec![],
            scope: TagScope::LastUser,
        })
        .collect();
        let tags = compile(&rules, "classifier").unwrap();
        let reference = Reference::new(&rules);
        let tagged = |text: &str| {
            let body = json!({"messages": [{"role": "user", "content": text}]});
            let ex = extract(&body, Endpoint::ChatCompletions);
            assert_eq!(tags.matching(&ex), reference.matching(&ex), "{text:?}");
            tags.matching(&ex)
        };
        assert_eq!(tagged("rust"), ["rust"]);
        assert_eq!(tagged("RUST is"), ["rust"]);
        assert_eq!(tagged("in rust"), ["rust"]);
        assert_eq!(tagged("rusty trust"), [] as [&str; 0]);
        assert_eq!(tagged("rust_"), [] as [&str; 0]);
        assert_eq!(tagged("érust"), ["rust"]);
        assert_eq!(tagged("c++"), ["cpp"]);
        assert_eq!(tagged("c++x"), ["cpp"]);
        assert_eq!(tagged("xc++"), [] as [&str; 0]);
        assert_eq!(tagged("asp.net"), ["net"]);
        assert_eq!(tagged(".netx"), [] as [&str; 0]);
        // `(?i)` folds the long s and the Kelvin sign onto s and k.
        assert_eq!(tagged("ſk"), [] as [&str; 0]);
        // The ASCII boundary sits between `x` and the (non-ASCII) `ſ`.
        assert_eq!(tagged("xſk"), ["sk"]);
        assert_eq!(tagged("ſ\u{212a}"), [] as [&str; 0]);
        assert_eq!(tagged("s\u{212a}"), [] as [&str; 0]);
        assert_eq!(tagged("s\u{212a}x"), ["sk"]);
        assert_eq!(tagged("RUſT"), ["rust"]);
    }
}
