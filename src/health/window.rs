//! A sliding window of [`BUCKETS`] time buckets: constant memory whatever the traffic.
//!
//! Bucket `i` covers `[i · bucket_ms, (i + 1) · bucket_ms)` of wall-clock time; the window keeps
//! the newest bucket index (`head`) and the `BUCKETS` buckets ending there in a ring. Recording
//! at a later time rotates the ring, clearing the buckets that fell out; a gap longer than the
//! whole window clears everything. The window therefore spans between `(BUCKETS - 1)` and
//! `BUCKETS` bucket widths (50 to 60 s for 6 × 10 s).
//!
//! Clocks of different workers are not perfectly in step, so time going backwards never panics:
//! a small step back counts into the newest bucket; a step back of a whole window or more (a
//! clock reset, or a changed bucket width) starts the window afresh.

/// Buckets per window.
pub const BUCKETS: usize = 6;
const BUCKETS_U64: u64 = BUCKETS as u64;

/// Counts of one bucket. `u32` saturates far above anything one target sees in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub requests: u32,
    pub failures: u32,
    pub tokens: u32,
}

/// Sums over the live buckets of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub requests: u64,
    pub failures: u64,
    pub tokens: u64,
}

/// What [`Window::recovery_ms`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Requests,
    Failures,
    Tokens,
}

impl Field {
    fn of(self, b: &Bucket) -> u64 {
        u64::from(match self {
            Field::Requests => b.requests,
            Field::Failures => b.failures,
            Field::Tokens => b.tokens,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Index (`time / bucket_ms`) of the newest bucket.
    pub head: u64,
    /// Ring of buckets; bucket index `i` lives in slot `i % BUCKETS`.
    pub buckets: [Bucket; BUCKETS],
}

fn index(now_ms: u64, bucket_ms: u64) -> u64 {
    now_ms / bucket_ms.max(1)
}

fn slot(index: u64) -> usize {
    // Always < BUCKETS, so the cast is exact.
    (index % BUCKETS_U64) as usize
}

impl Window {
    /// Adds counts at `now_ms`, rotating first.
    pub fn record(
        &mut self,
        now_ms: u64,
        bucket_ms: u64,
        requests: u32,
        failures: u32,
        tokens: u64,
    ) {
        self.rotate(now_ms, bucket_ms);
        if let Some(b) = self.buckets.get_mut(slot(self.head)) {
            b.requests = b.requests.saturating_add(requests);
            b.failures = b.failures.saturating_add(failures);
            let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(tokens);
        }
    }

    /// Moves the window to `now_ms`, clearing buckets that fell out of it.
    pub fn rotate(&mut self, now_ms: u64, bucket_ms: u64) {
        let idx = index(now_ms, bucket_ms);
        if idx <= self.head {
            if self.head - idx >= BUCKETS_U64 {
                *self = Window {
                    head: idx,
                    ..Window::default()
                };
            }
            return;
        }
        let gap = idx - self.head;
        if gap >= BUCKETS_U64 {
            self.buckets = [Bucket::default(); BUCKETS];
        } else {
            for i in 1..=gap {
                if let Some(b) = self.buckets.get_mut(slot(self.head.saturating_add(i))) {
                    *b = Bucket::default();
                }
            }
        }
        self.head = idx;
    }

    /// Clears all counts (keeps the position).
    pub fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }

    /// The live buckets at `now_ms`, oldest first, with their bucket index. Read-only: the
    /// stored window may be behind `now_ms`.
    fn live(&self, now_ms: u64, bucket_ms: u64) -> impl Iterator<Item = (u64, &Bucket)> {
        let idx = index(now_ms, bucket_ms);
        // A small step back in time reads as "now is the newest bucket"; a big one as empty.
        let stale = idx < self.head && self.head - idx >= BUCKETS_U64;
        let now_idx = idx.max(self.head);
        (0..BUCKETS_U64).rev().filter_map(move |k| {
            if stale {
                return None;
            }
            let i = self.head.checked_sub(k)?;
            // Bucket i is live while now_idx - i < BUCKETS.
            if now_idx - i >= BUCKETS_U64 {
                return None;
            }
            self.buckets.get(slot(i)).map(|b| (i, b))
        })
    }

    /// Sums of the live buckets at `now_ms`.
    pub fn totals(&self, now_ms: u64, bucket_ms: u64) -> Totals {
        self.live(now_ms, bucket_ms)
            .fold(Totals::default(), |t, (_, b)| Totals {
                requests: t.requests + u64::from(b.requests),
                failures: t.failures + u64::from(b.failures),
                tokens: t.tokens + u64::from(b.tokens),
            })
    }

    /// When `field` summed over the window drops below `limit` if nothing more is recorded:
    /// `None` when it already is below (or `limit` is 0, meaning no limit), otherwise the
    /// moment (epoch ms) the oldest buckets that keep it at or above `limit` slide out.
    pub fn recovery_ms(
        &self,
        now_ms: u64,
        bucket_ms: u64,
        field: Field,
        limit: u64,
    ) -> Option<u64> {
        if limit == 0 {
            return None;
        }
        let mut total: u64 = self.live(now_ms, bucket_ms).map(|(_, b)| field.of(b)).sum();
        if total < limit {
            return None;
        }
        let bucket_ms = bucket_ms.max(1);
        for (i, b) in self.live(now_ms, bucket_ms) {
            total = total.saturating_sub(field.of(b));
            if total < limit {
                // Bucket i leaves the window when bucket i + BUCKETS begins.
                return Some(i.saturating_add(BUCKETS_U64).saturating_mul(bucket_ms));
            }
        }
        None
    }
}
