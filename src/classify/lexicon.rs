//! The word lists of the task and complexity heuristics, all in one place, and
//! the small index that looks words up during the per-request scan.
//!
//! Entries are lowercase ASCII. A space separates the words of a phrase
//! ("step by step"); the scan matches a phrase when its words are adjacent
//! word tokens, whatever punctuation separates them, so `"tl dr"` also matches
//! `TL;DR` and `"trade off"` also matches `trade-off`. Words are matched whole:
//! a token is a maximal run of letters, digits and `_` (non-ASCII letters
//! included), so `"why"` never matches inside `"anywhy"`.
//!
//! Two kinds of task evidence:
//! * *strong* lists hold explicit requests ("summarize", "refactor",
//!   "prove that"): every occurrence counts, uncapped;
//! * *topic* lists hold words that merely suggest the domain ("python",
//!   "equation"): their total per message is capped at [`TOPIC_CAP`] so a long
//!   pasted document about programming does not drown an explicit
//!   "summarize this".
//!
//! Weights are points; see `heuristics.rs` for how points become a task.

use std::sync::OnceLock;

/// Cap, in points, of the topic words of one task within one role group
/// (the last user message, or the system prompt).
pub(crate) const TOPIC_CAP: u32 = 5;

/// Explicit coding requests.
pub(crate) const CODING_STRONG: &[(&str, u8)] = &[
    ("refactor", 4),
    ("refactoring", 4),
    ("debug", 4),
    ("stack trace", 4),
    ("stacktrace", 4),
    ("traceback", 4),
    ("segfault", 4),
    ("leetcode", 4),
    ("write code", 4),
    ("code review", 4),
    ("unit test", 3),
    ("unit tests", 3),
    ("compile error", 4),
    ("compiler error", 4),
    ("syntax error", 4),
    ("pull request", 3),
];

/// Words that suggest programming.
pub(crate) const CODING_TOPIC: &[(&str, u8)] = &[
    ("code", 2),
    ("debugging", 2),
    ("coding", 2),
    ("function", 2),
    ("functions", 2),
    ("compile", 2),
    ("compiler", 2),
    ("compiles", 2),
    ("bug", 2),
    ("bugs", 2),
    ("python", 2),
    ("rust", 2),
    ("javascript", 2),
    ("typescript", 2),
    ("java", 2),
    ("golang", 2),
    ("kotlin", 2),
    ("cpp", 2),
    ("csharp", 2),
    ("php", 2),
    ("sql", 2),
    ("regex", 2),
    ("regexp", 2),
    ("html", 2),
    ("css", 2),
    ("bash", 2),
    ("git", 2),
    ("npm", 2),
    ("programming", 2),
    ("snippet", 2),
    ("codebase", 2),
    ("django", 2),
    ("numpy", 2),
    ("pandas", 2),
    ("pytest", 2),
    ("unittest", 2),
    ("nullptr", 2),
    ("def", 2),
    ("fn", 2),
    ("elif", 2),
    ("impl", 2),
    ("println", 2),
    ("printf", 2),
    ("namespace", 2),
    ("typedef", 2),
    ("api", 1),
    ("script", 1),
    ("program", 1),
    ("algorithm", 1),
    ("implement", 1),
    ("implementation", 1),
    ("method", 1),
    ("variable", 1),
    ("class", 1),
    ("repo", 1),
    ("repository", 1),
    ("docker", 1),
    ("kubernetes", 1),
    ("exception", 1),
    ("syntax", 1),
    ("runtime", 1),
    ("react", 1),
    ("lambda", 1),
    ("const", 1),
    ("async", 1),
    ("struct", 1),
    ("enum", 1),
    ("boolean", 1),
    ("undefined", 1),
    ("parse", 1),
];

/// Explicit mathematics requests.
pub(crate) const MATH_STRONG: &[(&str, u8)] = &[
    ("prove that", 4),
    ("solve for", 4),
    ("integral", 3),
    ("integrals", 3),
    ("derivative", 3),
    ("derivatives", 3),
    ("theorem", 3),
    ("equation", 3),
    ("equations", 3),
];

/// Words that suggest mathematics.
pub(crate) const MATH_TOPIC: &[(&str, u8)] = &[
    ("solve", 2),
    ("calculate", 2),
    ("math", 2),
    ("maths", 2),
    ("mathematics", 2),
    ("mathematical", 2),
    ("algebra", 2),
    ("calculus", 2),
    ("geometry", 2),
    ("trigonometry", 2),
    ("probability", 2),
    ("polynomial", 2),
    ("matrix", 2),
    ("matrices", 2),
    ("eigenvalue", 2),
    ("eigenvalues", 2),
    ("logarithm", 2),
    ("factorial", 2),
    ("arithmetic", 2),
    ("proof", 2),
    ("prove", 2),
    ("lemma", 2),
    ("inequality", 2),
    ("quadratic", 2),
    ("differential", 2),
    ("differentiate", 2),
    ("hypotenuse", 2),
    ("combinatorics", 2),
    ("gcd", 2),
    ("lcm", 2),
    ("sqrt", 2),
    ("expected value", 2),
    ("compute", 1),
    ("statistics", 1),
    ("prime", 1),
    ("primes", 1),
    ("integer", 1),
    ("integers", 1),
    ("fraction", 1),
    ("fractions", 1),
    ("percent", 1),
    ("percentage", 1),
    ("variance", 1),
    ("median", 1),
    ("exponent", 1),
    ("integrate", 1),
    ("triangle", 1),
    ("radius", 1),
    ("permutations", 1),
    ("modulo", 1),
    ("formula", 1),
    ("simplify", 1),
    ("vector", 1),
    ("how many", 1),
];

/// Explicit requests for careful reasoning.
pub(crate) const REASONING_STRONG: &[(&str, u8)] = &[
    ("step by step", 4),
    ("explain your reasoning", 4),
    ("chain of thought", 4),
    ("think through", 3),
    ("think carefully", 3),
    ("pros and cons", 3),
    ("trade off", 3),
    ("trade offs", 3),
    ("tradeoff", 3),
    ("tradeoffs", 3),
    ("analyze", 3),
    ("analyse", 3),
    ("root cause", 3),
    ("puzzle", 3),
    ("riddle", 3),
];

/// Words that suggest analysis or deliberation.
pub(crate) const REASONING_TOPIC: &[(&str, u8)] = &[
    ("why", 1),
    ("reason", 1),
    ("reasoning", 2),
    ("analysis", 2),
    ("compare", 2),
    ("comparison", 2),
    ("implications", 2),
    ("justify", 2),
    ("logic", 2),
    ("logical", 2),
    ("deduce", 2),
    ("walk me through", 2),
    ("plan", 1),
    ("planning", 1),
    ("strategy", 1),
    ("evaluate", 1),
    ("assess", 1),
    ("consequences", 1),
    ("decide", 1),
    ("decision", 1),
    ("critique", 1),
    ("argue", 1),
    ("argument", 1),
    ("hypothesis", 1),
    ("infer", 1),
    ("explain", 1),
    ("what if", 1),
    ("versus", 1),
    ("vs", 1),
    ("thoroughly", 1),
];

/// Explicit extraction / structured-output requests.
pub(crate) const EXTRACTION_STRONG: &[(&str, u8)] = &[
    ("extract", 6),
    ("extracts", 6),
    ("extracting", 6),
    ("extraction", 5),
    ("return json", 5),
    ("pull out", 4),
    ("list all", 4),
    ("named entities", 4),
    ("as json", 4),
    ("in json", 4),
    ("output json", 4),
    ("json object", 3),
    ("json schema", 3),
    ("structured data", 3),
    ("identify all", 3),
    ("parse", 3),
    ("parsing", 2),
];

/// Words that suggest extraction.
pub(crate) const EXTRACTION_TOPIC: &[(&str, u8)] = &[
    ("json", 1),
    ("csv", 1),
    ("yaml", 1),
    ("fields", 1),
    ("entities", 2),
    ("entity", 1),
    ("ner", 2),
    ("key value", 2),
    ("structured output", 2),
    ("find all", 1),
    ("list every", 2),
    ("schema", 1),
];

/// Explicit summarization requests.
pub(crate) const SUMMARIZATION_STRONG: &[(&str, u8)] = &[
    ("summarize", 6),
    ("summarise", 6),
    ("summarizing", 6),
    ("summarization", 5),
    ("summary", 5),
    ("tl dr", 6),
    ("tldr", 6),
    ("condense", 5),
    ("synopsis", 5),
    ("sum up", 5),
    ("key points", 4),
    ("main points", 4),
    ("key takeaways", 4),
    ("takeaways", 4),
    ("recap", 4),
];

/// Words that suggest summarization.
pub(crate) const SUMMARIZATION_TOPIC: &[(&str, u8)] = &[
    ("gist", 2),
    ("shorten", 2),
    ("overview", 1),
    ("briefly", 1),
    ("bullet points", 1),
    ("highlights", 1),
];

/// Sequencing words: each occurrence is one multi-step marker (complexity).
pub(crate) const MULTI_STEP: &[&str] = &[
    "first",
    "firstly",
    "then",
    "next",
    "finally",
    "afterwards",
    "secondly",
    "thirdly",
    "lastly",
    "subsequently",
    "after that",
    "step",
    "steps",
];

/// Proof / rigor words: each occurrence is one rigor marker (complexity).
pub(crate) const RIGOR: &[&str] = &[
    "prove",
    "proof",
    "proofs",
    "rigorous",
    "rigorously",
    "formal",
    "formally",
    "formalize",
    "derive",
    "derivation",
    "lemma",
    "corollary",
    "invariant",
    "invariants",
    "correctness",
    "edge cases",
];

/// Languages of a ```` ```lang ```` fence that mark data, not code.
pub(crate) const DATA_FENCE_LANGS: &[&str] = &[
    "json",
    "jsonl",
    "yaml",
    "yml",
    "csv",
    "tsv",
    "xml",
    "text",
    "txt",
    "plaintext",
    "markdown",
    "md",
    "toml",
    "log",
];

/// LaTeX commands (after the backslash) that mark mathematics.
pub(crate) const LATEX_COMMANDS: &[&str] = &[
    "frac", "dfrac", "int", "iint", "oint", "sum", "prod", "sqrt", "lim", "infty", "partial",
    "nabla", "cdot", "times", "leq", "geq", "neq", "approx", "binom", "mathbb", "mathrm", "alpha",
    "beta", "gamma", "delta", "theta", "lambda", "sigma", "pi", "begin",
];

/// Words that start a code line (`def f(x):`, `fn main() {`): a line starting with
/// one of them counts as a code line if it contains `{`, `;` or `=`, or contains
/// `(` and ends with `:` (so prose like "For example:" does not count).
pub(crate) const CODE_LINE_STARTERS: &[&str] = &[
    "def",
    "fn",
    "func",
    "function",
    "class",
    "import",
    "const",
    "let",
    "var",
    "pub",
    "public",
    "private",
    "protected",
    "struct",
    "impl",
    "package",
    "elif",
    "async",
    "static",
    "void",
    "int",
    "for",
    "while",
    "if",
];

/// Signal columns a word or phrase can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    /// Strong evidence for the task at this index of `heuristics::SCORED`.
    Strong(u8),
    /// Topic evidence for the task at this index of `heuristics::SCORED`.
    Topic(u8),
    MultiStep,
    Rigor,
    CodeLineStarter,
}

/// Longest word the index holds (longer tokens are never looked up).
pub(crate) const MAX_WORD: usize = 24;
/// Slots of the open-addressing word table: a power of two, kept at most an
/// eighth full so that most lookups of a word not in it end at their first,
/// empty slot.
const SLOT_BITS: u32 = 12;
const SLOTS: usize = 1 << SLOT_BITS;

/// A word as the index compares it: its bytes, each ORed with `0x20` (which
/// lowercases ASCII letters and leaves digits alone; `_` becomes `0x7f`),
/// packed little-endian into three words and zero-padded. Word bytes are never
/// zero, so the padding also encodes the length.
pub(crate) type WordKey = [u64; 3];

/// The 8 bytes at `b[at..]`, little-endian, zero-padded past the end of `b`.
#[inline(always)]
pub(crate) fn load8(b: &[u8], at: usize) -> u64 {
    let rest = b.get(at..).unwrap_or(&[]);
    match rest.first_chunk::<8>() {
        Some(chunk) => u64::from_le_bytes(*chunk),
        None => rest
            .iter()
            .rev()
            .fold(0u64, |acc, &c| (acc << 8) | u64::from(c)),
    }
}

/// `v` with its low `n` bytes (`1 <= n`, at most 8 count) each ORed with
/// `0x20` and the others cleared.
#[inline(always)]
fn fold_low(v: u64, n: usize) -> u64 {
    let mask = u64::MAX >> (64 - 8 * n.clamp(1, 8));
    (v | 0x2020_2020_2020_2020) & mask
}

/// The key of the word `b[start..start + len]`, or `None` if it is empty,
/// longer than [`MAX_WORD`] or not inside `b`. The bytes are expected to be
/// ASCII letters, digits or `_` (anything else gets some key that no lexicon
/// word has).
#[inline(always)]
pub(crate) fn word_key(b: &[u8], start: usize, len: usize) -> Option<WordKey> {
    if len == 0 || len > MAX_WORD || start.checked_add(len)? > b.len() {
        return None;
    }
    let k0 = fold_low(load8(b, start), len);
    if len <= 8 {
        return Some([k0, 0, 0]);
    }
    let k1 = fold_low(load8(b, start + 8), len - 8);
    if len <= 16 {
        return Some([k0, k1, 0]);
    }
    Some([k0, k1, fold_low(load8(b, start + 16), len - 16)])
}

#[inline(always)]
fn slot_of(key: &WordKey) -> usize {
    let [k0, k1, k2] = *key;
    let x = (k0 ^ k1.rotate_left(21) ^ k2.rotate_left(42)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let h = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    // The shift leaves SLOT_BITS bits, so the cast cannot truncate.
    (h >> (64 - SLOT_BITS)) as usize
}

/// Entries of the length / first / last byte filter (a power of two).
const FILTER: usize = 1024;

/// Entry of the filter for a word of `len` bytes starting with `first`
/// (beyond the table for `len > MAX_WORD`).
#[inline(always)]
fn filter_slot(len: usize, first: u8) -> usize {
    len.saturating_mul(32) | usize::from(first & 31)
}

#[derive(Debug, Default)]
pub(crate) struct WordInfo {
    /// What the word alone contributes.
    pub signals: Vec<(Col, u8)>,
    /// Phrases whose last word this is.
    pub phrase_ends: Vec<u16>,
}

#[derive(Debug)]
pub(crate) struct Phrase {
    /// The ids of the words before the last one, packed like the scan's word
    /// history (the word just before the last in the low 16 bits), and the
    /// mask of the bits they occupy; `None` if there are more than
    /// [`PHRASE_HISTORY`] (such a phrase never matches).
    pub before: Option<(u64, u64)>,
    pub signals: Vec<(Col, u8)>,
}

/// Words a phrase may have before its last one.
pub(crate) const PHRASE_HISTORY: usize = 3;

/// Word → id index (an open-addressing hash table of word ids keyed by
/// [`WordKey`], so a lookup is a hash and a compare of three integers, no
/// string compare), plus the phrases. Word id 0 means "not in the index".
#[derive(Debug)]
pub(crate) struct Lexicon {
    /// Word ids by hash slot (linear probing); 0 marks an empty slot.
    slots: Box<[u16; SLOTS]>,
    /// A quick filter in front of the table: bit `last & 31` of entry
    /// `len * 32 + (first & 31)` is set if some word of that length has such
    /// first and last bytes (`& 31` ignores the case of letters).
    filter: Box<[u32; FILTER]>,
    /// Indexed by word id; entry 0 is a placeholder no word key equals.
    keys: Vec<WordKey>,
    /// Indexed by word id; entry 0 is a placeholder.
    pub words: Vec<WordInfo>,
    pub phrases: Vec<Phrase>,
}

impl Lexicon {
    /// The process-wide index, built on first use (`ClassifierPlan::compile`
    /// touches it so no request pays for it).
    pub(crate) fn get() -> &'static Lexicon {
        static LEXICON: OnceLock<Lexicon> = OnceLock::new();
        LEXICON.get_or_init(Lexicon::build)
    }

    fn build() -> Lexicon {
        let mut lex = Lexicon {
            slots: Box::new([0; SLOTS]),
            filter: Box::new([0; FILTER]),
            keys: vec![[0; 3]],
            words: vec![WordInfo::default()],
            phrases: Vec::new(),
        };
        let weighted: [(&[(&'static str, u8)], Col); 10] = [
            (CODING_STRONG, Col::Strong(0)),
            (CODING_TOPIC, Col::Topic(0)),
            (MATH_STRONG, Col::Strong(1)),
            (MATH_TOPIC, Col::Topic(1)),
            (REASONING_STRONG, Col::Strong(2)),
            (REASONING_TOPIC, Col::Topic(2)),
            (EXTRACTION_STRONG, Col::Strong(3)),
            (EXTRACTION_TOPIC, Col::Topic(3)),
            (SUMMARIZATION_STRONG, Col::Strong(4)),
            (SUMMARIZATION_TOPIC, Col::Topic(4)),
        ];
        for (list, col) in weighted {
            for &(entry, weight) in list {
                lex.add(entry, col, weight);
            }
        }
        let counted: [(&[&'static str], Col); 3] = [
            (MULTI_STEP, Col::MultiStep),
            (RIGOR, Col::Rigor),
            (CODE_LINE_STARTERS, Col::CodeLineStarter),
        ];
        for (list, col) in counted {
            for &entry in list {
                lex.add(entry, col, 1);
            }
        }
        lex
    }

    fn add(&mut self, entry: &'static str, col: Col, weight: u8) {
        let ids: Vec<u16> = entry
            .split(' ')
            .filter(|w| !w.is_empty())
            .filter_map(|w| self.intern(w))
            .collect();
        match ids.as_slice() {
            [] => {}
            [id] => {
                if let Some(info) = self.words.get_mut(usize::from(*id)) {
                    info.signals.push((col, weight));
                }
            }
            [before @ .., last] => {
                let last = usize::from(*last);
                let packed = (before.len() <= PHRASE_HISTORY).then(|| {
                    before
                        .iter()
                        .rev()
                        .enumerate()
                        .fold((0, 0), |(want, mask), (k, &id)| {
                            (want | u64::from(id) << (16 * k), mask | 0xffff << (16 * k))
                        })
                });
                if let Ok(pid) = u16::try_from(self.phrases.len()) {
                    self.phrases.push(Phrase {
                        before: packed,
                        signals: vec![(col, weight)],
                    });
                    if let Some(info) = self.words.get_mut(last) {
                        info.phrase_ends.push(pid);
                    }
                }
            }
        }
    }

    /// Id of `word` (lowercase ASCII), adding it if new. `None` if unindexable
    /// (empty, too long, or the table is an eighth full).
    fn intern(&mut self, word: &'static str) -> Option<u16> {
        let bytes = word.as_bytes();
        let key = word_key(bytes, 0, bytes.len())?;
        if let Some(id) = self.lookup_key(&key) {
            return Some(id);
        }
        if self.words.len() > SLOTS / 8 {
            return None;
        }
        let id = u16::try_from(self.words.len()).ok()?;
        let mut at = slot_of(&key);
        loop {
            let slot = self.slots.get_mut(at & (SLOTS - 1))?;
            if *slot == 0 {
                *slot = id;
                break;
            }
            at += 1;
        }
        if let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) {
            if let Some(bits) = self.filter.get_mut(filter_slot(bytes.len(), first)) {
                *bits |= 1 << (last & 31);
            }
        }
        self.keys.push(key);
        self.words.push(WordInfo::default());
        Some(id)
    }

    /// Id of the word `b[start..start + len]` (ASCII letters, digits, `_`, any
    /// case), or `None`.
    #[inline(always)]
    pub(crate) fn lookup_at(&self, b: &[u8], start: usize, len: usize) -> Option<u16> {
        if len == 0 || len > MAX_WORD {
            return None;
        }
        let first = *b.get(start)?;
        let last = *b.get(start + len - 1)?;
        let bits = *self.filter.get(filter_slot(len, first) & (FILTER - 1))?;
        if bits & (1 << (last & 31)) == 0 {
            return None;
        }
        self.lookup_key(&word_key(b, start, len)?)
    }

    /// Id of the word with this key, or `None`.
    #[inline(always)]
    pub(crate) fn lookup_key(&self, key: &WordKey) -> Option<u16> {
        let first = slot_of(key);
        // The table always has empty slots, which end every probe; the bound
        // is only there to make that obvious.
        for at in first..first + SLOTS {
            let id = *self.slots.get(at & (SLOTS - 1))?;
            if id == 0 {
                return None;
            }
            // Field by field: an array compare may become a `memcmp` call.
            if let Some(k) = self.keys.get(usize::from(id)) {
                if k[0] == key[0] && k[1] == key[1] && k[2] == key[2] {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Id of a lowercase ASCII word, or `None`.
    #[cfg(test)]
    pub(crate) fn lookup(&self, word: &[u8]) -> Option<u16> {
        self.lookup_key(&word_key(word, 0, word.len())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_lowercase_ascii_and_indexable() {
        let all = CODING_STRONG
            .iter()
            .chain(CODING_TOPIC)
            .chain(MATH_STRONG)
            .chain(MATH_TOPIC)
            .chain(REASONING_STRONG)
            .chain(REASONING_TOPIC)
            .chain(EXTRACTION_STRONG)
            .chain(EXTRACTION_TOPIC)
            .chain(SUMMARIZATION_STRONG)
            .chain(SUMMARIZATION_TOPIC)
            .map(|(w, _)| *w)
            .chain(MULTI_STEP.iter().copied())
            .chain(RIGOR.iter().copied())
            .chain(CODE_LINE_STARTERS.iter().copied());
        let lex = Lexicon::get();
        for entry in all {
            for w in entry.split(' ') {
                assert!(
                    w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{entry:?} must be lowercase ASCII words"
                );
                assert!(lex.lookup(w.as_bytes()).is_some(), "{w} not indexed");
            }
        }
        assert_eq!(lex.lookup(b"anywhy"), None);
        assert!(lex.lookup(b"why").is_some());
        assert_eq!(lex.lookup(b""), None);
    }
}
