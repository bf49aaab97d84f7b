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
//!
//! The tables themselves are in `lexicon/words.rs`; this file holds the index built from
//! them ([`Lexicon`]) and its lookups.

use std::sync::OnceLock;

mod words;

use words::{
    CODE_LINE_STARTERS, CODING_STRONG, CODING_TOPIC, EXTRACTION_STRONG, EXTRACTION_TOPIC,
    MATH_STRONG, MATH_TOPIC, MULTI_STEP, REASONING_STRONG, REASONING_TOPIC, RIGOR,
    SUMMARIZATION_STRONG, SUMMARIZATION_TOPIC,
};
pub(crate) use words::{DATA_FENCE_LANGS, LATEX_COMMANDS};

/// Cap, in points, of the topic words of one task within one role group
/// (the last user message, or the system prompt).
pub(crate) const TOPIC_CAP: u32 = 5;

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
