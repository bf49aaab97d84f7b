//! Fixed-size binary encoding of [`TargetHealth`] for proxy-wasm shared data.
//!
//! Little-endian, [`ENCODED_LEN`] bytes, version first:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version ([`VERSION`]) |
//! | 1 | 1 | circuit: 0 closed, 1 open, 2 half-open |
//! | 2 | 1 | flags: bit 0 latency average set, bit 1 TTFB average set |
//! | 3 | 1 | reserved, 0 |
//! | 4 | 8 × 8 | requests, successes, failures 5xx / 429 / connect / timeout, cancelled, cooldowns |
//! | 68 | 2 × 4 | consecutive failures, in flight |
//! | 76 | 2 × 8 | latency, TTFB averages (fixed point, × 1000) |
//! | 92 | 2 × 8 | cooldown until, probe started (epoch ms) |
//! | 108 | 2 × 80 | failure-rate window, budget window: head u64, then 6 × (requests, failures, tokens) u32 |
//!
//! Anything else (another length, another version, an unknown circuit or flag bit) does not
//! decode, and the caller starts from a fresh state.

use super::ewma::Ewma;
use super::state::{Circuit, TargetHealth};
use super::window::{Bucket, Window, BUCKETS};

pub const VERSION: u8 = 1;
/// Bytes of one encoded [`Window`] ([`put_window`]).
pub(crate) const WINDOW_LEN: usize = 8 + BUCKETS * 12;
/// Bytes per target in shared data.
pub const ENCODED_LEN: usize = 4 + 8 * 8 + 2 * 4 + 2 * 8 + 2 * 8 + 2 * WINDOW_LEN;

const FLAG_LATENCY: u8 = 1;
const FLAG_TTFB: u8 = 2;

pub fn encode(h: &TargetHealth) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODED_LEN);
    let (lat, lat_set) = h.latency.parts();
    let (ttfb, ttfb_set) = h.ttfb.parts();
    let circuit = match h.circuit {
        Circuit::Closed => 0u8,
        Circuit::Open => 1,
        Circuit::HalfOpen => 2,
    };
    let flags = (if lat_set { FLAG_LATENCY } else { 0 }) | (if ttfb_set { FLAG_TTFB } else { 0 });
    out.extend_from_slice(&[VERSION, circuit, flags, 0]);
    for v in [
        h.requests,
        h.successes,
        h.failures_5xx,
        h.failures_429,
        h.failures_connect,
        h.failures_timeout,
        h.cancelled,
        h.cooldowns,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&h.consecutive_failures.to_le_bytes());
    out.extend_from_slice(&h.in_flight.to_le_bytes());
    for v in [lat, ttfb, h.cooldown_until_ms, h.probe_started_ms] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    put_window(&mut out, &h.recent);
    put_window(&mut out, &h.budget);
    out
}

/// Appends a window: head u64, then each bucket's requests, failures, tokens as u32.
pub(crate) fn put_window(out: &mut Vec<u8>, w: &Window) {
    out.extend_from_slice(&w.head.to_le_bytes());
    for b in &w.buckets {
        out.extend_from_slice(&b.requests.to_le_bytes());
        out.extend_from_slice(&b.failures.to_le_bytes());
        out.extend_from_slice(&b.tokens.to_le_bytes());
    }
}

pub fn decode(bytes: &[u8]) -> Option<TargetHealth> {
    if bytes.len() != ENCODED_LEN {
        return None;
    }
    let mut r = Reader::new(bytes);
    let [version, circuit, flags, reserved] = r.take::<4>()?;
    if version != VERSION || reserved != 0 || flags & !(FLAG_LATENCY | FLAG_TTFB) != 0 {
        return None;
    }
    let circuit = match circuit {
        0 => Circuit::Closed,
        1 => Circuit::Open,
        2 => Circuit::HalfOpen,
        _ => return None,
    };
    let mut h = TargetHealth {
        circuit,
        requests: r.u64()?,
        successes: r.u64()?,
        failures_5xx: r.u64()?,
        failures_429: r.u64()?,
        failures_connect: r.u64()?,
        failures_timeout: r.u64()?,
        cancelled: r.u64()?,
        cooldowns: r.u64()?,
        consecutive_failures: r.u32()?,
        in_flight: r.u32()?,
        ..TargetHealth::default()
    };
    h.latency = Ewma::from_parts(r.u64()?, flags & FLAG_LATENCY != 0);
    h.ttfb = Ewma::from_parts(r.u64()?, flags & FLAG_TTFB != 0);
    h.cooldown_until_ms = r.u64()?;
    h.probe_started_ms = r.u64()?;
    h.recent = r.window()?;
    h.budget = r.window()?;
    Some(h)
}

/// Reads little-endian fields in order; `None` past the end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let a = <[u8; N]>::try_from(self.bytes.get(self.pos..end)?).ok()?;
        self.pos = end;
        Some(a)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    pub(crate) fn window(&mut self) -> Option<Window> {
        let mut w = Window {
            head: self.u64()?,
            ..Window::default()
        };
        for b in w.buckets.iter_mut() {
            *b = Bucket {
                requests: self.u32()?,
                failures: self.u32()?,
                tokens: self.u32()?,
            };
        }
        Some(w)
    }
}
