//! `binadd compare`: trains from a TensorFlow reference's data and initial
//! weights with the same settings, and reports the loss differences.
//!
//! Both sides compute in float64; differences start at rounding level and,
//! on the full notebook problem, grow chaotically after a few hundred
//! iterations, so the report names the first iteration past
//! `IDENTICAL_BELOW` as well as the largest difference.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};
use serde_json::json;

use crate::cli::CompareArgs;
use crate::config::{Engine, TrainConfig};
use crate::data::Dataset;
use crate::metrics::Metrics;
use crate::model::Cell;
use crate::optim::AdamKind;
use crate::plot;
use crate::progress::Progress;
use crate::reference::{Reference, REFERENCE_BITS};
use crate::train::{self, Trainer};
use crate::weights::Format;

/// A loss difference below this counts as "identical" up to rounding order.
pub const IDENTICAL_BELOW: f64 = 1e-12;

/// Losses of both sides and where they part.
pub struct Comparison {
    pub tf: Vec<f64>,
    pub ours: Vec<f64>,
    pub first_above: Option<usize>,
    pub max_diff: f64,
    pub max_diff_at: usize,
    pub ours_metrics: Metrics,
    pub same_predictions: f64,
    pub final_weight_diff: f64,
}

/// Trains `iters` iterations (at most the reference's) from the reference's start.
pub fn compare(reference: &Reference, adam: AdamKind, engine: Engine, threads: usize, iters: usize) -> Result<Comparison> {
    let iters = iters.min(reference.n_training_iters);
    let cfg = TrainConfig {
        seed: reference.seed,
        samples: reference.n_samples,
        max_digits: reference.max_digits,
        bits: REFERENCE_BITS,
        hidden: reference.hidden_dim,
        lr: reference.adam.learning_rate,
        iters,
        log_every: usize::MAX,
        threads,
        device: "cpu".into(),
        cell: Cell::Jordan,
        adam,
        engine,
        format: Format::Pt,
        heldout: 0,
    };
    let data = Dataset::from_operands(reference.x1.clone(), reference.x2.clone(), REFERENCE_BITS)?;
    let init = reference.weights(&reference.init, "init")?;
    let mut trainer = Trainer::new(&cfg, data, Some(&init))?;
    let quiet = Progress::new(iters as u64, 0, true);
    if let Err(halt) = train::run_loop(&mut trainer, &quiet, &AtomicBool::new(false), false) {
        let reason = match halt {
            train::Halt::Diverged { iteration, loss, .. } => format!("the loss is {loss} at iteration {iteration}"),
            train::Halt::Interrupted => "interrupted".to_string(),
        };
        bail!("binadd's training stopped early: {reason}");
    }

    let tf = reference.losses[..iters].to_vec();
    let ours = trainer.losses.clone();
    let diffs: Vec<f64> = tf.iter().zip(&ours).map(|(a, b)| (a - b).abs()).collect();
    let first_above = diffs.iter().position(|&d| d > IDENTICAL_BELOW || d.is_nan()).map(|i| i + 1);
    let (max_index, max_diff) = diffs
        .iter()
        .copied()
        .enumerate()
        .fold((0, 0.0f64), |best, (i, d)| if d > best.1 || d.is_nan() { (i, d) } else { best });

    let (loss, predicted) = trainer.evaluate_training();
    let ours_metrics = Metrics::compute(loss, &trainer.data, &predicted);
    let same = predicted.iter().zip(&reference.sum_predicted).filter(|(a, b)| a == b).count();
    let final_weight_diff = if iters == reference.n_training_iters {
        let tf_final = reference.weights(&reference.final_weights, "final")?;
        trainer
            .model
            .named_values()
            .iter()
            .map(|(name, value)| (value - &tf_final[name]).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    } else {
        f64::NAN
    };
    Ok(Comparison {
        tf,
        ours,
        first_above,
        max_diff,
        max_diff_at: max_index + 1,
        ours_metrics,
        same_predictions: same as f64 / reference.n_samples as f64,
        final_weight_diff,
    })
}

pub fn compare_command(args: CompareArgs) -> Result<()> {
    if args.log_every == 0 {
        bail!("--log-every 0 is invalid: it must be at least 1");
    }
    if let Some(tol) = args.tolerance {
        if !(tol >= 0.0) {
            bail!("--tolerance {tol} is invalid: it must be a non-negative number");
        }
    }
    if args.iters == Some(0) {
        bail!("--iters 0 is invalid: compare at least 1 iteration");
    }
    let reference = Reference::load(&args.reference)?;
    let threads = args.threads.unwrap_or(match args.engine {
        Engine::Autograd => 1,
        Engine::Fused => crate::config::cores(),
    });
    if threads == 0 {
        bail!("--threads 0 is invalid: use at least 1 thread");
    }
    crate::run::set_threads(if args.engine == Engine::Fused || threads > 1 { 1 } else { threads });
    let iters = args.iters.unwrap_or(reference.n_training_iters);
    let out_dir = args.out.as_deref().map(|d| crate::run::prepare_out_dir(Some(d), args.force, "compare")).transpose()?;

    println!(
        "reference '{}': TensorFlow {}, seed {}, {} samples, hidden {}, {} iterations",
        args.reference.display(),
        reference.tf_version,
        reference.seed,
        reference.n_samples,
        reference.hidden_dim,
        reference.n_training_iters
    );
    println!(
        "binadd: adam {}, {} engine, {threads} thread(s), checking {} iterations",
        crate::config::flag_value(args.adam),
        crate::config::flag_value(args.engine),
        iters.min(reference.n_training_iters)
    );
    let result = compare(&reference, args.adam, args.engine, threads, iters)?;

    println!("\n{:>6}  {:>22}  {:>22}  {:>10}", "iter", "TensorFlow", "binadd", "|diff|");
    let n = result.ours.len();
    for i in 1..=n {
        if i == 1 || i % args.log_every == 0 || i == n {
            let (a, b) = (result.tf[i - 1], result.ours[i - 1]);
            println!("{i:>6}  {a:>22.17}  {b:>22.17}  {:>10.3e}", (a - b).abs());
        }
    }

    let tf_metrics = &reference.metrics;
    let ours = &result.ours_metrics;
    let corr = |c: Option<f64>| c.map(|c| format!("{c:.4}")).unwrap_or_else(|| "undefined".into());
    println!("\n{:<22} {:>12} {:>12}", "final (training set)", "TensorFlow", "binadd");
    if n == reference.n_training_iters {
        println!("{:<22} {:>12.6} {:>12.6}", "loss", tf_metrics.final_loss, ours.final_loss);
        println!("{:<22} {:>11.2}% {:>11.2}%", "exact sums", tf_metrics.exact_accuracy * 100.0, ours.exact_accuracy * 100.0);
        println!("{:<22} {:>11.2}% {:>11.2}%", "bits", tf_metrics.bit_accuracy * 100.0, ours.bit_accuracy * 100.0);
        println!("{:<22} {:>12} {:>12}", "correlation", corr(tf_metrics.corr), corr(ours.corr));
        println!("identical predicted sums: {:.2} %", result.same_predictions * 100.0);
        println!("max |final weight difference|: {:.3e}", result.final_weight_diff);
    } else {
        println!("(final metrics are compared only when all {} reference iterations run)", reference.n_training_iters);
    }
    match result.first_above {
        Some(i) => println!("first iteration with |diff| > {IDENTICAL_BELOW:e}: {i}"),
        None => println!("every checked iteration within {IDENTICAL_BELOW:e}"),
    }
    println!("max |diff|: {:.3e} at iteration {}", result.max_diff, result.max_diff_at);

    if let Some(dir) = &out_dir {
        write_report(dir, &args, &reference, &result, args.plot_format)?;
        println!("report written to '{}'", dir.display());
    }
    if let Some(tol) = args.tolerance {
        if !(result.max_diff <= tol) {
            bail!(
                "loss difference {:.3e} at iteration {} exceeds --tolerance {tol:e} (TensorFlow {}, binadd {})",
                result.max_diff,
                result.max_diff_at,
                result.tf[result.max_diff_at - 1],
                result.ours[result.max_diff_at - 1]
            );
        }
    }
    Ok(())
}

fn write_report(dir: &Path, args: &CompareArgs, reference: &Reference, result: &Comparison, format: plot::ImageFormat) -> Result<()> {
    let report = json!({
        "reference": args.reference.display().to_string(),
        "tf_version": reference.tf_version,
        "adam": args.adam,
        "engine": args.engine,
        "iterations": result.ours.len(),
        "identical_below": IDENTICAL_BELOW,
        "first_iteration_above": result.first_above,
        "max_diff": result.max_diff,
        "max_diff_iteration": result.max_diff_at,
        "tf_losses": result.tf,
        "binadd_losses": result.ours,
        "tf_metrics": {
            "final_loss": reference.metrics.final_loss,
            "exact_accuracy": reference.metrics.exact_accuracy,
            "bit_accuracy": reference.metrics.bit_accuracy,
            "corr": reference.metrics.corr,
        },
        "binadd_metrics": result.ours_metrics,
        "identical_predictions": result.same_predictions,
        "final_weight_max_diff": if result.final_weight_diff.is_nan() { serde_json::Value::Null } else { json!(result.final_weight_diff) },
    });
    let text = serde_json::to_string_pretty(&report)? + "\n";
    crate::fsutil::write_bytes_atomic(&dir.join("compare.json"), text.as_bytes())?;
    let path = dir.join(format!("parity.{}", format.extension()));
    plot::draw_parity(&path, &result.tf, &result.ours, "Loss: TensorFlow and binadd", format)
}
