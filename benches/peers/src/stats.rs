//! Medians, paired ratios and percentiles. Imports nothing of the harness.

/// Median of a set of samples (NaN if empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median of a slice of samples (NaN if empty).
pub fn median_of(v: &[f64]) -> f64 {
    median(v.to_vec())
}

/// Median over pairs of `a[i] / b[i]`: a paired ratio. Cells of one pair
/// (one round) run seconds apart, rounds minutes apart: on a shared machine
/// the load moves every cell of a round together (2x between rounds here),
/// so the ratio within a pair is far steadier than the ratio of two
/// medians. Pairs where either side is missing (NaN) are left out.
pub fn paired(a: &[f64], b: &[f64]) -> f64 {
    median(
        a.iter()
            .zip(b)
            .map(|(x, y)| x / y)
            .filter(|r| r.is_finite())
            .collect(),
    )
}

/// Percentiles of a set of nanosecond samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

pub fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles {
            p50: f64::NAN,
            p99: f64::NAN,
            n: 0,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        n: v.len(),
    }
}
