//! Metrics of predicted sums against the true ones.
//!
//! Exact-sum accuracy, per-bit accuracy (overall and by position, LSB first),
//! the Pearson correlation of actual and predicted sums (the notebook's
//! `results.corr()`), and a tail table like `results.tail(20)`.

use serde::{Deserialize, Serialize};

use crate::data::{self, Dataset};

/// Metrics of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub final_loss: f64,
    pub exact_accuracy: f64,
    pub bit_accuracy: f64,
    /// Accuracy of each output bit, index 0 = least significant.
    pub bit_accuracy_by_position: Vec<f64>,
    /// Pearson correlation of actual and predicted sums; `None` when either
    /// side is constant.
    pub corr: Option<f64>,
}

impl Metrics {
    pub fn compute(loss: f64, data: &Dataset, predicted: &[u64]) -> Self {
        assert_eq!(predicted.len(), data.len(), "one prediction per sample");
        let n = data.len().max(1) as f64;
        let exact = data.y.iter().zip(predicted).filter(|(a, p)| a == p).count() as f64 / n;
        let by_position: Vec<f64> = (0..data.bits)
            .map(|pos| {
                let right = data
                    .y
                    .iter()
                    .zip(predicted)
                    .filter(|(&a, &p)| (a >> pos) & 1 == (p >> pos) & 1)
                    .count();
                right as f64 / n
            })
            .collect();
        let bit_accuracy = by_position.iter().sum::<f64>() / by_position.len().max(1) as f64;
        let actual: Vec<f64> = data.y.iter().map(|&v| v as f64).collect();
        let predicted_f: Vec<f64> = predicted.iter().map(|&v| v as f64).collect();
        Self {
            final_loss: loss,
            exact_accuracy: exact,
            bit_accuracy,
            bit_accuracy_by_position: by_position,
            corr: pearson(&actual, &predicted_f),
        }
    }

    /// Formats the metrics as a short block of fixed-width lines for the terminal.
    pub fn report(&self, label: &str) -> String {
        let corr = match self.corr {
            Some(c) => format!("{c:.4}"),
            None => "undefined (constant predictions)".to_string(),
        };
        let positions: Vec<String> = self
            .bit_accuracy_by_position
            .iter()
            .map(|a| format!("{:.1}", a * 100.0))
            .collect();
        format!(
            "{label}\n  loss            {:.6}\n  exact sums      {:6.2} %\n  bits            {:6.2} %\n  \
             bits by position (LSB first, %): {}\n  correlation     {corr}\n",
            self.final_loss,
            self.exact_accuracy * 100.0,
            self.bit_accuracy * 100.0,
            positions.join(" "),
        )
    }
}

/// Pearson correlation; `None` when a side has no variance or fewer than two points.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let n = a.len() as f64;
    let mean_a = a.iter().sum::<f64>() / n;
    let mean_b = b.iter().sum::<f64>() / n;
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    if var_a == 0.0 || var_b == 0.0 {
        return None;
    }
    Some(cov / (var_a.sqrt() * var_b.sqrt()))
}

/// Formats the last `count` samples as a table: operands, actual and predicted sums.
pub fn tail_table(data: &Dataset, predicted: &[u64], count: usize) -> String {
    let width = data.bits;
    let mut out = format!("{:>7} {:>22} {:>22} {:>8}\n", "sample", "x1 + x2", "actual", "predicted");
    let start = data.len().saturating_sub(count);
    for i in start..data.len() {
        let ok = if data.y[i] == predicted[i] { "" } else { "  x" };
        out.push_str(&format!(
            "{:>7} {:>22} {:>22} {:>8}{ok}\n",
            i,
            format!("{} + {}", data.x1[i], data.x2[i]),
            data.y[i],
            predicted[i],
        ));
    }
    if width <= 16 {
        out.push_str(&format!("(bit strings of the last sample: actual {}, predicted {})\n",
            data::bit_string(data.y[data.len() - 1], width),
            data::bit_string(predicted[data.len() - 1], width)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_known_series() {
        let c = pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap();
        assert!((c - 1.0).abs() < 1e-15, "{c}");
        let c = pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert!((c + 1.0).abs() < 1e-15);
        assert_eq!(pearson(&[1.0, 2.0], &[5.0, 5.0]), None);
        // numpy.corrcoef([1,2,3,4],[1,3,2,5])[0,1] = 0.8315218406202999
        let c = pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 5.0]).unwrap();
        assert!((c - 0.8315218406202999).abs() < 1e-12, "{c}");
    }

    #[test]
    fn accuracies_count_bits_and_sums() {
        let data = Dataset::from_operands(vec![1, 2, 3, 4], vec![0, 0, 0, 0], 4).unwrap();
        // Second prediction wrong in bit 0, fourth wrong in bits 0 and 3.
        let predicted = [1, 3, 3, 0b1101];
        let m = Metrics::compute(0.5, &data, &predicted);
        assert_eq!(m.exact_accuracy, 0.5);
        assert_eq!(m.bit_accuracy_by_position, vec![0.5, 1.0, 1.0, 0.75]);
        assert_eq!(m.bit_accuracy, 13.0 / 16.0);
    }
}
