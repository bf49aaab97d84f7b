//! Byte-level primitives of the scan: the class of each byte, runs of ASCII word bytes eight
//! at a time, and the cut of a long text to its head and tail. Kept apart from the scanner so
//! that the loop in `scan.rs` reads as signals, not bit tricks.

use crate::classify::lexicon::load8;

#[inline]
pub(super) const fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Byte classes of the scan loop: everything else is [`PUNCT`].
pub(super) const PUNCT: u8 = 0;
/// ASCII letter or `_`.
pub(super) const ALPHA: u8 = 1;
/// ASCII digit.
pub(super) const DIGIT: u8 = 2;
/// A byte of a non-ASCII char.
pub(super) const HIGH: u8 = 3;
/// `' '`, `'\t'`, `'\r'`.
pub(super) const SPACE: u8 = 4;
pub(super) const NEWLINE: u8 = 5;

pub(super) static CLASS: [u8; 256] = {
    let mut t = [PUNCT; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b >= 0x80 {
            HIGH
        } else if b.is_ascii_alphabetic() || b == b'_' {
            ALPHA
        } else if b.is_ascii_digit() {
            DIGIT
        } else if b == b' ' || b == b'\t' || b == b'\r' {
            SPACE
        } else if b == b'\n' {
            NEWLINE
        } else {
            PUNCT
        };
        c += 1;
    }
    t
};

#[inline(always)]
pub(super) fn class(c: u8) -> u8 {
    // A u8 always indexes a 256-entry table.
    CLASS[usize::from(c)]
}

/// `0x01` in every byte.
pub(super) const ONES: u64 = u64::from_le_bytes([1; 8]);
/// `0x80` in every byte.
pub(super) const HIGHS: u64 = ONES * 0x80;

/// The high bit of each byte of `v` (8 text bytes) that is an ASCII letter,
/// digit or `_`; the others clear. Byte-wise range tests on the low seven
/// bits (which cannot carry between bytes), then non-ASCII bytes dropped.
#[inline(always)]
pub(super) fn word_bytes(v: u64) -> u64 {
    let x = v & !HIGHS;
    // x >= lo sets the high bit of x + (0x80 - lo); x > hi that of x + (0x7f - hi).
    let lower = x | (ONES * 0x20);
    let alpha = (lower + ONES * (0x80 - 0x61)) & !(lower + ONES * (0x7f - 0x7a));
    let digit = (x + ONES * (0x80 - 0x30)) & !(x + ONES * (0x7f - 0x39));
    let underscore = !((x ^ (ONES * 0x5f)) + ONES * 0x7f);
    (alpha | digit | underscore) & !v & HIGHS
}

/// Length of the run of ASCII word bytes at `b[i..]`, eight bytes at a time
/// (no branch per byte: word lengths are unpredictable). The zero padding of
/// [`load8`] ends every run.
#[inline(always)]
pub(super) fn word_run(b: &[u8], i: usize) -> usize {
    let mut n = 0;
    loop {
        let stop = !word_bytes(load8(b, i + n)) & HIGHS;
        if stop != 0 {
            return n + (stop.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
}

#[inline]
pub(super) fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Largest char boundary of `s` at or below `i`.
pub(super) fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All of `text`, or its first `head` and last `tail` bytes (cut at char boundaries).
pub(crate) fn head_and_tail(text: &str, head: usize, tail: usize) -> [&str; 2] {
    if text.len() <= head + tail {
        return [text, ""];
    }
    let head = floor_boundary(text, head);
    let tail = floor_boundary(text, text.len() - tail);
    [
        text.get(..head).unwrap_or(""),
        text.get(tail..).unwrap_or(""),
    ]
}
