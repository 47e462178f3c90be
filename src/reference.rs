//! The reference JSON written by `scripts/tf_reference.py`: the notebook run
//! under TensorFlow, with its data, initial and final weights and every loss.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use tch::Tensor;

use crate::optim;

/// TF1 Adam's constants as the reference recorded them (float32 values as float64).
#[derive(Debug, Deserialize)]
pub struct AdamConstants {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
}

#[derive(Debug, Deserialize)]
pub struct ReferenceMetrics {
    pub final_loss: f64,
    pub exact_accuracy: f64,
    pub bit_accuracy: f64,
    pub corr: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub tf_version: String,
    pub seed: u64,
    pub max_digits: usize,
    pub n_samples: usize,
    pub hidden_dim: usize,
    pub n_training_iters: usize,
    pub adam: AdamConstants,
    pub x1: Vec<u64>,
    pub x2: Vec<u64>,
    pub y: Vec<u64>,
    pub init: BTreeMap<String, Value>,
    pub losses: Vec<f64>,
    #[serde(rename = "final")]
    pub final_weights: BTreeMap<String, Value>,
    pub sum_predicted: Vec<u64>,
    pub metrics: ReferenceMetrics,
}

/// The notebook's sums are 8 bits wide: numpy's `unpackbits` of a uint8.
pub const REFERENCE_BITS: usize = 8;

const NAMES: [&str; 6] = ["w_f", "w_h", "u_h", "b_f", "b_h", "y_t"];

impl Reference {
    /// Reads and checks a reference file, naming the field at fault.
    pub fn load(path: &Path) -> Result<Self> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read reference '{shown}'; write one with scripts/tf_reference.py"))?;
        let reference: Reference = serde_json::from_str(&text).with_context(|| {
            format!("'{shown}' is not a valid reference file (see scripts/tf_reference.py for the fields)")
        })?;
        reference.validate().with_context(|| format!("reference '{shown}' is inconsistent"))?;
        Ok(reference)
    }

    fn validate(&self) -> Result<()> {
        let n = self.n_samples;
        if n == 0 || self.hidden_dim == 0 || self.n_training_iters == 0 {
            bail!("n_samples, hidden_dim and n_training_iters must all be positive");
        }
        for (field, len) in [("x1", self.x1.len()), ("x2", self.x2.len()), ("y", self.y.len()), ("sum_predicted", self.sum_predicted.len())] {
            if len != n {
                bail!("field '{field}' has {len} entries, but n_samples is {n}");
            }
        }
        if self.losses.len() != self.n_training_iters {
            bail!("field 'losses' has {} entries, but n_training_iters is {}", self.losses.len(), self.n_training_iters);
        }
        if self.max_digits == 0 || self.max_digits >= REFERENCE_BITS {
            bail!("max_digits {} must be between 1 and {}", self.max_digits, REFERENCE_BITS - 1);
        }
        for (i, ((&a, &b), &y)) in self.x1.iter().zip(&self.x2).zip(&self.y).enumerate() {
            if a + b != y {
                bail!("sample {i}: x1 + x2 = {a} + {b} but y = {y}");
            }
        }
        let expected = [
            ("learning_rate", self.adam.learning_rate, (self.adam.learning_rate as f32) as f64),
            ("beta1", self.adam.beta1, optim::BETA1 as f64),
            ("beta2", self.adam.beta2, optim::BETA2 as f64),
            ("epsilon", self.adam.epsilon, optim::EPSILON as f64),
        ];
        for (field, got, want) in expected {
            if got != want {
                bail!("adam.{field} is {got}, but binadd's TF1 Adam uses the float32 value {want}");
            }
        }
        self.weights(&self.init, "init")?;
        self.weights(&self.final_weights, "final")?;
        Ok(())
    }

    /// Expected notebook shape of each variable.
    fn shape_of(&self, name: &str) -> Vec<i64> {
        let (h, n) = (self.hidden_dim as i64, self.n_samples as i64);
        match name {
            "w_f" => vec![h, 1],
            "w_h" => vec![2, h],
            "u_h" => vec![1, h],
            "b_f" => vec![1, 1],
            "b_h" => vec![1, h],
            _ => vec![n, 1],
        }
    }

    /// Converts the `init` or `final` weights to float64 tensors of the notebook's shapes.
    pub fn weights(&self, field: &BTreeMap<String, Value>, label: &str) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for name in NAMES {
            let value = field.get(name).with_context(|| format!("field '{label}' has no '{name}'"))?;
            let mut flat = Vec::new();
            let shape = flatten(value, &mut flat).with_context(|| format!("field '{label}.{name}'"))?;
            let expected = self.shape_of(name);
            if shape != expected {
                bail!("field '{label}.{name}' has shape {shape:?}, expected {expected:?}");
            }
            out.insert(name.to_string(), Tensor::from_slice(&flat).view(expected.as_slice()));
        }
        if let Some(extra) = field.keys().find(|k| !NAMES.contains(&k.as_str())) {
            bail!("field '{label}' has an unknown variable '{extra}'");
        }
        Ok(out)
    }
}

/// Flattens nested JSON lists of numbers; returns their shape.
fn flatten(value: &Value, out: &mut Vec<f64>) -> Result<Vec<i64>> {
    match value {
        Value::Number(n) => {
            out.push(n.as_f64().context("not a float64 number")?);
            Ok(Vec::new())
        }
        Value::Array(items) => {
            let mut inner: Option<Vec<i64>> = None;
            for item in items {
                let shape = flatten(item, out)?;
                match &inner {
                    Some(s) if *s != shape => bail!("ragged nested list"),
                    _ => inner = Some(shape),
                }
            }
            let mut shape = vec![items.len() as i64];
            shape.extend(inner.unwrap_or_default());
            Ok(shape)
        }
        other => bail!("expected numbers or lists, found {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_reads_shapes() {
        let mut out = Vec::new();
        let shape = flatten(&serde_json::json!([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), &mut out).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(flatten(&serde_json::json!([[1.0], [2.0, 3.0]]), &mut Vec::new()).is_err());
        assert!(flatten(&serde_json::json!(["a"]), &mut Vec::new()).is_err());
    }
}
