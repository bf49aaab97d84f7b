//! Stat updates of one VM (one Envoy worker), held in the VM and handed to Envoy on the root
//! context's tick ([`Pending::flush`]): a request's dozen counter and gauge updates cost no
//! host call, and a tick makes one `increment_metric` per stat that changed, whatever the
//! number of requests. Histogram samples cannot be summed: each stays one `record_metric`,
//! made on the tick instead of on the request's path. A VM that goes away loses at most the
//! updates of its last tick; memory is bounded ([`MAX_SAMPLES`]).

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::host::Host;

/// Most histogram samples held between two ticks; the next one flushes everything at once.
pub const MAX_SAMPLES: usize = 4096;

/// How often the root context flushes (Envoy's own stats flush every 5 s by default).
pub const FLUSH_PERIOD_MS: u32 = 1000;

#[derive(Debug, Default)]
pub struct Pending {
    inner: RefCell<Updates>,
}

#[derive(Debug, Default)]
struct Updates {
    /// Sum of the deltas per counter or gauge id (ordered: flushes are deterministic).
    deltas: BTreeMap<u32, i64>,
    samples: Vec<(u32, u64)>,
}

impl Pending {
    /// Adds `delta` to a counter (delta > 0) or gauge.
    pub fn add(&self, id: u32, delta: i64) {
        if delta == 0 {
            return;
        }
        if let Ok(mut u) = self.inner.try_borrow_mut() {
            let sum = u.deltas.entry(id).or_insert(0);
            *sum = sum.saturating_add(delta);
        }
    }

    /// Holds a histogram sample; a full buffer is flushed at once.
    pub fn record(&self, host: &mut dyn Host, id: u32, value: u64) {
        let full = match self.inner.try_borrow_mut() {
            Ok(mut u) => {
                u.samples.push((id, value));
                u.samples.len() >= MAX_SAMPLES
            }
            Err(_) => false,
        };
        if full {
            self.flush(host);
        }
    }

    /// Hands every held update to the host; returns the host calls made. Host errors are
    /// logged at debug level (stats never fail anything).
    pub fn flush(&self, host: &mut dyn Host) -> usize {
        let Ok(mut u) = self.inner.try_borrow_mut() else {
            return 0;
        };
        let deltas = std::mem::take(&mut u.deltas);
        let samples = std::mem::take(&mut u.samples);
        drop(u);
        let mut calls = 0;
        for (id, delta) in deltas.into_iter().filter(|(_, d)| *d != 0) {
            calls += 1;
            if let Err(e) = host.increment_metric(id, delta) {
                log::debug!("llm-router: increment_metric {id}: {e}");
            }
        }
        for (id, value) in samples {
            calls += 1;
            if let Err(e) = host.record_metric(id, value) {
                log::debug!("llm-router: record_metric {id}: {e}");
            }
        }
        calls
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.inner
            .try_borrow()
            .map_or(true, |u| u.deltas.is_empty() && u.samples.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;
    use crate::host::MetricKind;

    #[test]
    fn sums_deltas_per_stat_and_flushes_one_call_per_changed_stat() {
        let mut host = MockHost::default();
        let c = host.define_metric(MetricKind::Counter, "c").unwrap();
        let g = host.define_metric(MetricKind::Gauge, "g").unwrap();
        let h = host.define_metric(MetricKind::Histogram, "h").unwrap();
        let p = Pending::default();
        for _ in 0..100 {
            p.add(c, 2);
            p.add(g, 1);
            p.add(g, -1);
            p.record(&mut host, h, 7);
        }
        assert_eq!(
            host.metric("c"),
            Some(0),
            "nothing reaches the host before the flush"
        );
        // One increment for the counter; the gauge's +1 -1 cancel out; every sample.
        assert_eq!(p.flush(&mut host), 1 + 100);
        assert_eq!(host.metric("c"), Some(200));
        assert_eq!(host.metric("g"), Some(0));
        assert_eq!(host.samples("h").len(), 100);
        assert!(p.is_empty());
        assert_eq!(p.flush(&mut host), 0);
    }

    #[test]
    fn a_full_sample_buffer_flushes_at_once() {
        let mut host = MockHost::default();
        let h = host.define_metric(MetricKind::Histogram, "h").unwrap();
        let p = Pending::default();
        for i in 0..MAX_SAMPLES as u64 {
            p.record(&mut host, h, i);
        }
        assert_eq!(host.samples("h").len(), MAX_SAMPLES);
        assert!(p.is_empty());
    }
}
