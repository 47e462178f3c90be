//! `binadd eval` and `binadd predict`: saved weights on new operands.
//!
//! New samples have no trained initial feedback, so a jordan cell starts them
//! from 0. The trained width comes from the `config.json` beside the weights
//! when there is one, else the notebook's (6-bit operands, 8-bit sums).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use crate::cli::{EvalArgs, PredictArgs};
use crate::config::{self, TrainConfig};
use crate::data::{self, Dataset};
use crate::metrics::Metrics;
use crate::model::{self, Feedback, Model};
use crate::train;
use crate::weights;

/// The notebook's widths, used when no config.json sits beside the weights.
const DEFAULT_MAX_DIGITS: usize = 6;
const DEFAULT_BITS: usize = 8;

/// A model rebuilt from a weights file, with the run's config if found.
pub struct Loaded {
    pub model: Model,
    pub config: Option<TrainConfig>,
}

/// Loads weights of any cell, checking names, shapes and dtypes.
pub fn load_model(path: &Path, device: tch::Device) -> Result<Loaded> {
    let values: BTreeMap<String, Tensor> = weights::load(path)?;
    let source = format!("'{}'", path.display());
    weights::require_f64(&values, &source)?;
    let (cell, hidden, samples) = model::infer_architecture(&values, &source)?;
    let mut model = Model::new(cell, hidden, samples.max(1), device, 0)?;
    model.load_values(&values, &source)?;

    let config_path = path.parent().map(|d| d.join("config.json"));
    let config = match config_path {
        Some(p) if p.is_file() => Some(TrainConfig::load(&p)?),
        _ => None,
    };
    Ok(Loaded { model, config })
}

pub fn eval_command(args: EvalArgs) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples 0 is invalid: evaluate at least 1 pair");
    }
    if args.threads == 0 {
        bail!("--threads 0 is invalid: use at least 1 thread");
    }
    crate::run::set_threads(args.threads);
    let device = config::parse_device(&args.device)?;
    let loaded = load_model(&args.weights, device)?;
    let trained = loaded.config.as_ref();

    // Widths: explicit flags, else the trained ones.
    let bits = args.bits.or(trained.map(|c| c.bits)).unwrap_or(DEFAULT_BITS);
    let max_digits = match (args.max_digits, args.bits) {
        (Some(d), _) => d,
        (None, Some(b)) => b.saturating_sub(1),
        (None, None) => trained.map(|c| c.max_digits).unwrap_or(DEFAULT_MAX_DIGITS),
    };
    data::check_widths(max_digits, bits)?;
    let seed = args.seed.unwrap_or_else(|| rand::random::<u32>() as u64);

    let data = Dataset::draw_seeded(args.samples, max_digits, bits, seed)?;
    let model = &loaded.model;
    println!(
        "evaluating '{}' ({} cell, hidden {}) on {} fresh pairs, operands below 2^{max_digits}, {bits}-bit sums, seed {seed}",
        args.weights.display(),
        model.cell.name(),
        model.hidden,
        args.samples
    );
    if model.cell == model::Cell::Jordan {
        println!("new samples have no trained initial feedback y_t, so each starts from 0");
    }
    if trained.is_none() {
        println!(
            "no config.json beside the weights: assuming the notebook's widths unless --bits/--max-digits are given"
        );
    }
    let (metrics, _) = train::evaluate_fresh(model, &data);
    print!("{}", metrics.report("fresh pairs:"));

    let run_metrics = args.weights.parent().map(|d| d.join("metrics.json")).filter(|p| p.is_file());
    if let Some(path) = run_metrics {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read '{}'", path.display()))?;
        match serde_json::from_str::<Metrics>(&text) {
            Ok(m) => print!("{}", m.report(&format!("training set, from '{}':", path.display()))),
            Err(e) => println!("('{}' is unreadable, so no training metrics are shown: {e})", path.display()),
        }
    }
    Ok(())
}

/// Parses an operand, rejecting negative and non-numeric text.
fn parse_operand(text: &str, which: &str) -> Result<u64> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        bail!("operand {which} '{text}' is negative; binadd adds non-negative integers");
    }
    trimmed
        .parse::<u64>()
        .with_context(|| format!("operand {which} '{text}' is not a non-negative integer"))
}

pub fn predict_command(args: PredictArgs) -> Result<()> {
    let a = parse_operand(&args.a, "A")?;
    let b = parse_operand(&args.b, "B")?;
    crate::run::set_threads(1);
    let loaded = load_model(&args.weights, tch::Device::Cpu)?;
    let trained_bits = loaded.config.as_ref().map(|c| c.bits).unwrap_or(DEFAULT_BITS);
    let bits = args.bits.unwrap_or(trained_bits);
    data::check_bits(bits)?;
    let limit_bits = bits - 1;
    for (value, which) in [(a, "A"), (b, "B")] {
        if limit_bits < 64 && value >= 1u64 << limit_bits {
            bail!(
                "operand {which} = {value} is too wide: with {bits}-bit sums each operand must be below {} \
                 (2^{limit_bits}); pass a larger --bits (up to {}) to try longer numbers",
                1u64 << limit_bits,
                data::MAX_BITS
            );
        }
    }

    let data = Dataset::from_operands(vec![a], vec![b], bits)?;
    let (xs, _) = data.tensors(tch::Device::Cpu);
    let probs = train::probabilities(&loaded.model, &xs, Feedback::Zero); // [T,1]
    let predicted = data::decode_predictions(&probs)[0];
    let truth = data.y[0];
    let verdict = if predicted == truth { "" } else { "  (wrong)" };
    println!("{a} + {b} -> {predicted} (true {truth}){verdict}");
    println!(
        "  bits, most significant first: {} + {} -> {} (true {})",
        data::bit_string(a, bits),
        data::bit_string(b, bits),
        data::bit_string(predicted, bits),
        data::bit_string(truth, bits)
    );
    Ok(())
}
