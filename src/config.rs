//! Training settings in one typed place, validated once and saved as
//! `config.json` next to the weights.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data;
use crate::model::Cell;
use crate::optim::AdamKind;
use crate::weights::Format;

/// The engine that computes gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// libtorch autograd over the unrolled steps.
    Autograd,
    /// Hand-derived forward pass and backpropagation through time in Rust
    /// (CPU; jordan and elman cells only).
    Fused,
}

/// Every setting of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub seed: u64,
    pub samples: usize,
    pub max_digits: usize,
    pub bits: usize,
    pub hidden: usize,
    pub lr: f64,
    pub iters: usize,
    pub log_every: usize,
    pub threads: usize,
    pub device: String,
    pub cell: Cell,
    pub adam: AdamKind,
    pub engine: Engine,
    pub format: Format,
    /// Freshly drawn pairs evaluated after training; 0 skips it.
    pub heldout: usize,
}

/// Largest hidden size accepted; far beyond what this task needs, it only
/// stops a typo from allocating gigabytes.
pub const MAX_HIDDEN: usize = 4096;

impl TrainConfig {
    /// Checks every setting, naming the flag and the fix on error.
    pub fn validate(&self) -> Result<()> {
        if self.samples == 0 {
            bail!("--samples 0 is invalid: train on at least 1 sample (the notebook uses 10000)");
        }
        if self.hidden == 0 || self.hidden > MAX_HIDDEN {
            bail!("--hidden {} is invalid: it must be between 1 and {MAX_HIDDEN} (the notebook uses 3)", self.hidden);
        }
        if self.iters == 0 {
            bail!("--iters 0 is invalid: train for at least 1 iteration (the notebook uses 2000)");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!(
                "--lr {} is invalid: the learning rate must be a positive finite number (the notebook uses 0.04)",
                format_number(self.lr)
            );
        }
        if self.adam == AdamKind::Tf && self.lr > f32::MAX as f64 {
            bail!(
                "--lr {} is out of range: TF1's Adam holds the learning rate as float32, whose maximum is {:e}; \
                 lower it or use --adam torch",
                format_number(self.lr),
                f32::MAX
            );
        }
        if self.log_every == 0 {
            bail!("--log-every 0 is invalid: it must be at least 1");
        }
        if self.threads == 0 {
            bail!("--threads 0 is invalid: use at least 1 thread");
        }
        data::check_widths(self.max_digits, self.bits)?;
        parse_device(&self.device)?;
        if self.engine == Engine::Fused && !self.cell.unrolled_by_hand() {
            bail!(
                "--engine fused supports the jordan and elman cells only, not --cell {}; use --engine autograd",
                self.cell.name()
            );
        }
        Ok(())
    }

    pub fn device(&self) -> Result<Device> {
        parse_device(&self.device)
    }

    /// Tells whether the run trains on the CPU.
    pub fn on_cpu(&self) -> bool {
        matches!(self.device(), Ok(Device::Cpu))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut value = serde_json::to_value(self)?;
        value["versions"] = serde_json::json!({
            "binadd": env!("CARGO_PKG_VERSION"),
            "tch": env!("BINADD_TCH_VERSION"),
            "libtorch": env!("BINADD_LIBTORCH_VERSION"),
        });
        let text = serde_json::to_string_pretty(&value)? + "\n";
        crate::fsutil::write_bytes_atomic(path, text.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read '{}'", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("'{}' is not a valid binadd config", path.display()))?;
        config.validate().with_context(|| format!("'{}' contains invalid settings", path.display()))?;
        Ok(config)
    }
}

/// Returns the number of cores the process may use (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Returns the command-line spelling of a value-enum setting, e.g. `tf` for `AdamKind::Tf`.
pub fn flag_value(v: impl clap::ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// Formats a number for messages: plain when moderate, in exponent form when huge or tiny.
pub fn format_number(x: f64) -> String {
    let magnitude = x.abs();
    if x != 0.0 && x.is_finite() && !(1e-4..1e6).contains(&magnitude) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` picks CUDA when libtorch
/// finds a device; an explicit `cuda` without one is an error, never a silent
/// fall-back to the CPU.
pub fn parse_device(text: &str) -> Result<Device> {
    let cuda_count = || tch::Cuda::device_count() as usize;
    match text {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => {
            if cuda_count() == 0 {
                bail!("--device {text}: no CUDA device is available to libtorch; use --device cpu (or auto)");
            }
            Ok(Device::Cuda(0))
        }
        _ => {
            let Some(index) = text.strip_prefix("cuda:") else {
                bail!("--device '{text}' is not recognised: use auto, cpu, cuda or cuda:N");
            };
            let index: usize = index
                .parse()
                .with_context(|| format!("--device '{text}': '{index}' is not a device number"))?;
            let count = cuda_count();
            if index >= count {
                bail!("--device {text}: libtorch finds {count} CUDA device(s); use --device cpu or a lower index");
            }
            Ok(Device::Cuda(index))
        }
    }
}
