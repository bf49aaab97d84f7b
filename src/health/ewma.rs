//! Exponentially weighted moving average in integer fixed point.
//!
//! The average is kept in thousandths of the sample unit (for milliseconds: microseconds), so it
//! encodes into a plain `u64` and behaves the same on every worker and every target. The first
//! sample initialises the average; each later one moves it by `alpha` of the difference.

/// Fixed-point scale of [`Ewma`]: the stored value is the average × `SCALE`.
pub const SCALE: u64 = 1000;

/// Smoothing factor, in thousandths (1 ..= 1000): the weight of the newest sample.
/// 1000 keeps only the last sample; small values average over many samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alpha(u16);

impl Alpha {
    /// Default weight of the newest sample: 0.2 (roughly the last ten samples matter).
    pub const DEFAULT: Alpha = Alpha(200);

    /// `permille` clamped into 1 ..= 1000.
    pub const fn from_permille(permille: u16) -> Alpha {
        if permille == 0 {
            Alpha(1)
        } else if permille > 1000 {
            Alpha(1000)
        } else {
            Alpha(permille)
        }
    }

    /// From a fraction in (0, 1], clamped; `NaN` gives the default.
    pub fn from_f64(alpha: f64) -> Alpha {
        if alpha.is_nan() {
            return Alpha::DEFAULT;
        }
        let permille = (alpha * 1000.0).round().clamp(1.0, 1000.0);
        // In range 1..=1000 after the clamp, so the cast is exact.
        Alpha::from_permille(permille as u16)
    }

    pub fn permille(self) -> u16 {
        self.0
    }
}

impl Default for Alpha {
    fn default() -> Alpha {
        Alpha::DEFAULT
    }
}

/// An EWMA of non-negative integer samples (milliseconds here). `Default` is "no sample yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ewma {
    scaled: u64,
    initialised: bool,
}

impl Ewma {
    /// Rebuilds an average from its stored parts (see [`Ewma::parts`]).
    pub fn from_parts(scaled: u64, initialised: bool) -> Ewma {
        Ewma {
            scaled: if initialised { scaled } else { 0 },
            initialised,
        }
    }

    /// The fixed-point value (× [`SCALE`]) and whether any sample was seen.
    pub fn parts(&self) -> (u64, bool) {
        (self.scaled, self.initialised)
    }

    /// Adds one sample: the first one initialises, later ones move the average by `alpha`.
    pub fn update(&mut self, sample: u64, alpha: Alpha) {
        let sample = u128::from(sample).saturating_mul(u128::from(SCALE));
        let next = if self.initialised {
            let a = u128::from(alpha.permille());
            let old = u128::from(self.scaled);
            // Rounded to nearest; no overflow: both products are below 2^64 · 2^10 · 10^3.
            (a * sample + (1000 - a) * old + 500) / 1000
        } else {
            sample
        };
        self.scaled = u64::try_from(next).unwrap_or(u64::MAX);
        self.initialised = true;
    }

    /// The average rounded to the sample unit, `None` before the first sample.
    pub fn get(&self) -> Option<u64> {
        self.initialised
            .then(|| self.scaled / SCALE + u64::from(self.scaled % SCALE >= SCALE / 2))
    }

    /// The average with its fraction, `None` before the first sample.
    pub fn get_f64(&self) -> Option<f64> {
        self.initialised.then(|| self.scaled as f64 / SCALE as f64)
    }
}
