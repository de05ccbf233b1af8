//! Benchmark reporting: latency percentiles, a human table, and the final JSON line.

use serde_json::{Map, Value};

/// Latency samples in microseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    samples: Vec<u32>,
}

impl Latencies {
    /// Records one sample.
    pub fn record(&mut self, micros: u128) {
        self.samples.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    /// Merges another set of samples.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.sort_unstable();
        let idx = ((self.samples.len() - 1) as f64 * q).round() as usize;
        f64::from(self.samples[idx]) / 1000.0
    }
}

/// Rounds to `d` decimals for readable JSON.
pub fn round(x: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (x * f).round() / f
}

/// Prints `rows` as an aligned two-column table, then `json` on the last line.
pub fn print(title: &str, rows: &[(&str, String)], json: &Map<String, Value>) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{title}");
    println!("{}", "-".repeat(title.len().max(40)));
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
    println!("{}", Value::Object(json.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut l = Latencies::default();
        for us in 1..=100 {
            l.record(us * 1000);
        }
        assert_eq!(l.quantile_ms(0.5), 51.0);
        assert_eq!(l.quantile_ms(0.99), 99.0);
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }
}
