//! The keyword search of the tags: a case-insensitive multi-pattern Horspool (Wu–Manber)
//! search for the plain ASCII keywords of all tags at once ([`Keywords`]), and the tag sets
//! it reports into. Only the search itself: which keywords go in, and what its answers
//! mean for a tag, is decided in `tags.rs`.

use super::{FOLDS_TO_ASCII, MAX_TAGS};

/// A set of tag indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TagSet([u64; MAX_TAGS / 64]);

impl TagSet {
    pub(super) fn insert(&mut self, tag: usize) {
        if let Some(w) = self.0.get_mut(tag / 64) {
            *w |= 1 << (tag % 64);
        }
    }

    pub(super) fn remove(&mut self, tag: usize) {
        if let Some(w) = self.0.get_mut(tag / 64) {
            *w &= !(1 << (tag % 64));
        }
    }

    pub(super) fn contains(&self, tag: usize) -> bool {
        self.0
            .get(tag / 64)
            .is_some_and(|w| w & (1 << (tag % 64)) != 0)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub(super) fn minus(mut self, other: &TagSet) -> TagSet {
        for (w, o) in self.0.iter_mut().zip(other.0) {
            *w &= !o;
        }
        self
    }
}

/// Byte → a 7-bit code, the same for both cases of an ASCII letter. Other
/// ASCII bytes keep their value (in `0x00..=0x7f` minus `A..=Z`); non-ASCII
/// bytes share the free `A..=Z` codes. Keyword search tables are indexed by
/// these codes, so sharing one only costs skip distance, never a match.
static FOLD: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b >= 0x80 {
            b'A' + b % 26
        } else {
            b.to_ascii_lowercase()
        };
        c += 1;
    }
    t
};

#[inline(always)]
fn fold(c: u8) -> usize {
    // A u8 always indexes a 256-entry table.
    usize::from(FOLD[usize::from(c)])
}

/// Entries of a shift table: one per pair of 7-bit codes.
const SHIFTS: usize = 1 << 14;
/// Entries of a skip table: one per pair of bytes.
const PAIRS: usize = 1 << 16;
/// Texts with at least this many window ends per lane are searched in
/// [`LANES`] interleaved parts: the skip loop waits on two dependent loads per
/// step, so independent lanes fill the pipeline.
const MIN_LANE: usize = 256;
const LANES: usize = 4;
/// Longest window the search uses (shifts must fit a byte).
const MAX_WINDOW: usize = 64;

#[derive(Debug, Clone)]
pub(super) struct Keyword {
    /// Lowercase ASCII.
    pub(super) text: Box<[u8]>,
    pub(super) tag: u16,
    /// The keyword starts / ends with an ASCII word byte, so the match needs
    /// a word boundary there.
    pub(super) bound_start: bool,
    pub(super) bound_end: bool,
}

/// Case-insensitive search for many ASCII keywords at once, with the
/// semantics of [`keyword_pattern`](super::keyword_pattern): Wu–Manber over
/// the first `window` bytes of each keyword, in blocks of two bytes (one for
/// short windows).
///
/// Match candidates are the window ends where the shift is 0; each is checked
/// byte by byte (ASCII case-insensitively, with the word boundaries). The
/// tables also account for [`FOLDS_TO_ASCII`] chars standing for keyword
/// letters (they make a match longer in bytes, so an ASCII-based skip stays
/// safe, and their bytes get their own entries); where such a char is near a
/// failed candidate the search reports the tag as undecided.
#[derive(Debug, Clone)]
pub(super) struct Keywords {
    pub(super) window: usize,
    /// Blocks of two bytes (else one).
    wide: bool,
    /// How far the window may move when it ends with the raw bytes `x, y`,
    /// at index `x | y << 8` (for one-byte blocks only `y` matters): the
    /// block tables expanded to bytes, so the skip loop needs no folding.
    skip: Box<[u8; PAIRS]>,
    /// (block, keyword index) for the blocks that can end a window match,
    /// sorted.
    candidates: Vec<(u16, u16)>,
    keywords: Vec<Keyword>,
    /// The tags of `keywords`.
    pub(super) tags: TagSet,
}

/// The encodings of a lowercase ASCII keyword byte, as 7-bit codes: the byte
/// (its case does not matter for the codes), and the bytes of any non-ASCII
/// char that folds onto it.
fn encodings(c: u8) -> Vec<Vec<usize>> {
    let mut out = vec![vec![fold(c)]];
    for (ascii, other) in FOLDS_TO_ASCII {
        if ascii == c {
            out.push(other.bytes().map(fold).collect());
        }
    }
    out
}

/// Whether `b` holds a [`FOLDS_TO_ASCII`] char.
fn has_ascii_folding(b: &[u8]) -> bool {
    !b.is_ascii()
        && FOLDS_TO_ASCII.iter().any(|(_, other)| {
            let other = other.as_bytes();
            b.windows(other.len()).any(|w| w == other)
        })
}

#[inline(always)]
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// What a keyword search found in one text.
pub(super) enum Found {
    /// The keyword search is sure of these tags' matches.
    Sure,
    /// The keyword search could not decide these tags (see [`Keywords`]).
    Undecided,
}

impl Keywords {
    /// `None` if there are no keywords.
    pub(super) fn new(keywords: Vec<Keyword>) -> Option<Keywords> {
        let window = keywords.iter().map(|k| k.text.len()).min()?.min(MAX_WINDOW);
        if window == 0 {
            return None;
        }
        let wide = window >= 4;
        let block = if wide { 2 } else { 1 };
        let default = u8::try_from(window + 1 - block).unwrap_or(u8::MAX);
        let mut shift = Box::new([default; SHIFTS]);
        let mut candidates = Vec::new();
        let mut tags = TagSet::default();
        for (k, kw) in keywords.iter().enumerate() {
            tags.insert(usize::from(kw.tag));
            let Ok(k) = u16::try_from(k) else { break };
            let prefix = kw.text.get(..window).unwrap_or(&[]);
            let mut prev_ends: Vec<usize> = Vec::new();
            for (p, &c) in prefix.iter().enumerate() {
                let encs = encodings(c);
                for enc in &encs {
                    for (o, &cur) in enc.iter().enumerate() {
                        // Distance to the window end, counting every later
                        // char as one byte: at most the real distance.
                        let d = (enc.len() - 1 - o) + (window - 1 - p);
                        let prevs: Vec<usize> = if !wide {
                            vec![0]
                        } else if o > 0 {
                            enc.get(o - 1).copied().into_iter().collect()
                        } else {
                            prev_ends.clone()
                        };
                        for prev in prevs {
                            let idx = if wide { prev << 7 | cur } else { cur };
                            if let Some(s) = shift.get_mut(idx) {
                                *s = (*s).min(u8::try_from(d).unwrap_or(u8::MAX));
                            }
                            if d == 0 {
                                if let Ok(idx) = u16::try_from(idx) {
                                    candidates.push((idx, k));
                                }
                            }
                        }
                    }
                }
                prev_ends = encs.iter().filter_map(|e| e.last().copied()).collect();
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut skip = Box::new([0u8; PAIRS]);
        for (i, s) in skip.iter_mut().enumerate() {
            let [x, y] = [(i & 0xff) as u8, (i >> 8) as u8];
            let idx = if wide {
                fold(x) << 7 | fold(y)
            } else {
                fold(y)
            };
            *s = shift.get(idx).copied().unwrap_or(1);
        }
        Some(Keywords {
            window,
            wide,
            skip,
            candidates,
            keywords,
            tags,
        })
    }

    /// Searches `text` for the keywords of the tags in `open`: calls `found`
    /// for each tag found or undecided (and stops looking for that tag).
    pub(super) fn search(
        &self,
        text: &str,
        mut open: TagSet,
        found: &mut impl FnMut(usize, Found),
    ) {
        let b = text.as_bytes();
        // Window ends go from `first` to the last byte; each lane takes a
        // consecutive range of them (a skip never passes a possible match
        // end, whatever the start).
        let first = self.window - 1;
        let ends = b.len().saturating_sub(first);
        let lanes = if ends >= LANES * MIN_LANE { LANES } else { 1 };
        let span = ends.div_ceil(lanes);
        let mut pos = [0; LANES];
        let mut end = [0; LANES];
        for (k, (p, e)) in pos.iter_mut().zip(&mut end).take(lanes).enumerate() {
            *p = first + k * span;
            *e = b.len().min(*p + span);
        }
        if lanes == LANES {
            while pos.iter().zip(&end).all(|(p, e)| p < e) {
                for p in &mut pos {
                    if self.step(b, p, &mut open, found) {
                        return;
                    }
                }
            }
        }
        for (p, &e) in pos.iter_mut().zip(&end) {
            while *p < e {
                if self.step(b, p, &mut open, found) {
                    return;
                }
            }
        }
    }

    /// Moves the window end `j` on by its skip, checking the candidates where
    /// that is 0; returns whether `open` became empty.
    #[inline(always)]
    fn step(
        &self,
        b: &[u8],
        j: &mut usize,
        open: &mut TagSet,
        found: &mut impl FnMut(usize, Found),
    ) -> bool {
        let x = j
            .checked_sub(1)
            .and_then(|i| b.get(i))
            .copied()
            .unwrap_or(0);
        let y = b.get(*j).copied().unwrap_or(0);
        let s = self
            .skip
            .get(usize::from(x) | usize::from(y) << 8)
            .copied()
            .unwrap_or(1);
        if s > 0 {
            *j += usize::from(s);
            return false;
        }
        let idx = if self.wide {
            fold(x) << 7 | fold(y)
        } else {
            fold(y)
        };
        let done = self.check(b, *j, idx, open, found);
        *j += 1;
        done
    }

    /// Checks the keywords whose window may end at `b[j]` (block `idx`);
    /// returns whether `open` became empty.
    #[inline(never)]
    fn check(
        &self,
        b: &[u8],
        j: usize,
        idx: usize,
        open: &mut TagSet,
        found: &mut impl FnMut(usize, Found),
    ) -> bool {
        let Ok(idx) = u16::try_from(idx) else {
            return false;
        };
        let first = self.candidates.partition_point(|&(blk, _)| blk < idx);
        let cands = self.candidates.get(first..).unwrap_or(&[]);
        for &(_, k) in cands.iter().take_while(|&&(blk, _)| blk == idx) {
            let Some(kw) = self.keywords.get(usize::from(k)) else {
                continue;
            };
            let tag = usize::from(kw.tag);
            if !open.contains(tag) {
                continue;
            }
            // Where an all-ASCII match would start.
            let start = j + 1 - self.window;
            let end = start + kw.text.len();
            let hit = b
                .get(start..end)
                .is_some_and(|t| t.eq_ignore_ascii_case(&kw.text))
                && !(kw.bound_start
                    && start > 0
                    && b.get(start - 1).is_some_and(|&c| is_word_byte(c)))
                && !(kw.bound_end && b.get(end).is_some_and(|&c| is_word_byte(c)));
            let outcome = if hit {
                Found::Sure
            } else {
                // A match with folding chars is longer in bytes: at most
                // three per char, ending its window at `j`.
                let from = start.saturating_sub(2 * self.window);
                let to = b.len().min(start.saturating_add(3 * kw.text.len()));
                if !has_ascii_folding(b.get(from..to).unwrap_or(&[])) {
                    continue;
                }
                Found::Undecided
            };
            open.remove(tag);
            found(tag, outcome);
            if open.is_empty() {
                return true;
            }
        }
        false
    }
}
