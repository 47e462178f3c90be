//! `binadd train`: sets up the run directory, trains with progress and Ctrl-C
//! handling, and writes config, metrics, losses, weights and charts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde_json::json;

use crate::cli::TrainArgs;
use crate::config::{self, TrainConfig};
use crate::data::Dataset;
use crate::metrics::{self, Metrics};
use crate::plot::{self, ImageFormat};
use crate::progress::Progress;
use crate::train::{self, Halt, Trainer};
use crate::weights;

/// Set by the Ctrl-C handler; the loop stops at the next iteration boundary.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The error `main` turns into exit status 130.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Installs the Ctrl-C handler: the first press requests that the loop stop and
/// checkpoint, a second one exits at once.
pub fn install_interrupt_handler() -> Result<()> {
    let first = std::sync::OnceLock::<Instant>::new();
    ctrlc::set_handler(move || {
        if !INTERRUPTED.swap(true, Ordering::SeqCst) {
            let _ = first.set(Instant::now());
            return;
        }
        // Tools such as `timeout` signal the process and its group, so one
        // request can arrive twice; only a later press means "now".
        if first.get().is_some_and(|t| t.elapsed() > SECOND_PRESS_AFTER) {
            eprintln!("\ninterrupted twice: exiting without a checkpoint");
            std::process::exit(130);
        }
    })
    .context("cannot install the Ctrl-C handler")
}

/// A second Ctrl-C within this time of the first counts as the same one.
const SECOND_PRESS_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Applies the thread setting to libtorch before any tensor work.
pub fn set_threads(threads: usize) {
    tch::set_num_threads(threads as i32);
    tch::set_num_interop_threads(1);
}

/// Sets libtorch's intra-op threads for a run: `--threads` only for the gru
/// and lstm cells. The jordan and elman cells on the CPU use their threads
/// for batch shards (or the fused engine), and a batch too small to shard
/// still runs on one libtorch thread. OpenMP's idle threads spin, and that
/// made two such runs side by side 30 to 80 times slower.
pub fn set_run_threads(cfg: &TrainConfig) {
    set_threads(if cfg.cell.unrolled_by_hand() && cfg.on_cpu() { 1 } else { cfg.threads });
}

pub fn train_command(args: TrainArgs, matches: &ArgMatches) -> Result<()> {
    let (cfg, dir, resume) = match &args.resume {
        Some(dir) => (resume_config(dir, &args, matches)?, dir.clone(), true),
        None => {
            let cfg = args.options.to_config()?;
            let dir = prepare_out_dir(args.out.as_deref(), args.force, &format!("{}-seed{}", cfg.cell.name(), cfg.seed))?;
            (cfg, dir, false)
        }
    };
    set_run_threads(&cfg);
    install_interrupt_handler()?;

    let data = Dataset::draw_seeded(cfg.samples, cfg.max_digits, cfg.bits, cfg.seed)?;
    let mut trainer = Trainer::new(&cfg, data, None)?;
    let (start_iteration, earlier_seconds) = if resume { train::restore_checkpoint(&mut trainer, &dir)? } else { (0, 0.0) };
    if start_iteration >= cfg.iters {
        bail!(
            "--iters {} does not go past the checkpoint in '{}', which is at iteration {start_iteration}; \
             pass a larger --iters",
            cfg.iters,
            dir.display()
        );
    }
    cfg.save(&dir.join("config.json"))?;

    println!(
        "training {} cell, hidden {}, {} samples, {}-bit sums, {} iterations, lr {}, adam {}, {} engine, \
         {} on {} ({}), seed {}",
        cfg.cell.name(),
        cfg.hidden,
        cfg.samples,
        cfg.bits,
        cfg.iters,
        config::format_number(cfg.lr),
        config::flag_value(cfg.adam),
        config::flag_value(cfg.engine),
        "float64",
        train::device_name(cfg.device()?),
        parallelism(&cfg, trainer.shards()),
        cfg.seed
    );
    if resume {
        println!("resuming from iteration {start_iteration} in '{}'", dir.display());
    }
    if !args.quiet {
        println!("{:>6}  {}", "iter", "loss");
    }

    // Train, keeping the weights of the last iteration whose loss was finite.
    let progress = Progress::new(cfg.iters as u64, start_iteration as u64, args.quiet);
    let started = Instant::now();
    let outcome = train::run_loop(&mut trainer, &progress, &INTERRUPTED, true);
    let train_seconds = earlier_seconds + train::seconds_since(started);
    progress.finish();

    match outcome {
        Ok(()) => finish_run(&trainer, &dir, train_seconds, args.log_scale),
        Err(Halt::Interrupted) => {
            let done = trainer.losses.len();
            write_losses(&dir.join("losses.csv"), &trainer.losses)?;
            weights::save(&dir.join(weights_name(&cfg)), &trainer.snapshot(), cfg.format)?;
            match train::write_checkpoint(&trainer, &dir, train_seconds) {
                Ok(()) => Err(Interrupted(format!(
                    "interrupted after iteration {done}; checkpoint written to '{}'. \
                     Continue with: binadd train --resume {}",
                    dir.display(),
                    dir.display()
                ))
                .into()),
                Err(e) => Err(Interrupted(format!(
                    "interrupted after iteration {done}; weights saved in '{}', but no checkpoint: {e:#}",
                    dir.display()
                ))
                .into()),
            }
        }
        Err(Halt::Diverged { iteration, loss, last_finite }) => {
            write_losses(&dir.join("losses.csv"), &trainer.losses)?;
            let kept = match last_finite {
                Some(values) if values.iter().all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1) => {
                    let path = dir.join(weights_name(&cfg));
                    weights::save(&path, &values, cfg.format)?;
                    format!(
                        "the weights that gave the last finite loss (iteration {}) are in '{}'",
                        iteration - 1,
                        path.display()
                    )
                }
                _ => "no finite weights were left to save".to_string(),
            };
            bail!(
                "training diverged at iteration {iteration}: the loss is {loss}; {kept}. \
                 Lower the learning rate (--lr {}) and train again",
                config::format_number(cfg.lr)
            )
        }
    }
}

/// Describes how the run uses its threads, for the header line.
fn parallelism(cfg: &TrainConfig, shards: usize) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if cfg.engine == crate::config::Engine::Fused {
        format!("{} thread{}", cfg.threads, plural(cfg.threads))
    } else if !cfg.on_cpu() {
        "one device stream".to_string()
    } else if cfg.cell.unrolled_by_hand() {
        format!("{shards} batch shard{} on 1 libtorch thread each", plural(shards))
    } else {
        format!("{} libtorch thread{}", cfg.threads, plural(cfg.threads))
    }
}

/// Settings for `--resume`: the saved ones, with only --iters, --threads,
/// --device and --log-every taken from the command line.
fn resume_config(dir: &Path, args: &TrainArgs, matches: &ArgMatches) -> Result<TrainConfig> {
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        bail!("--resume {}: no config.json there; pass the run directory of an interrupted run", dir.display());
    }
    let mut cfg = TrainConfig::load(&config_path)?;
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    for id in ["seed", "samples", "max_digits", "bits", "hidden", "lr", "cell", "adam", "engine", "format", "heldout"] {
        if given(id) {
            bail!(
                "--resume continues with the settings saved in '{}'; drop --{}",
                config_path.display(),
                id.replace('_', "-")
            );
        }
    }
    let options = &args.options;
    if given("iters") {
        cfg.iters = options.iters;
    }
    if given("log_every") {
        cfg.log_every = options.log_every;
    }
    if let Some(threads) = options.threads {
        cfg.threads = threads;
    }
    if given("device") {
        cfg.device = options.device.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Creates the run directory. An existing non-empty one needs `force`.
pub fn prepare_out_dir(out: Option<&Path>, force: bool, label: &str) -> Result<PathBuf> {
    let dir = match out {
        Some(dir) => dir.to_path_buf(),
        None => fresh_run_dir(label),
    };
    if dir.is_file() {
        bail!("--out '{}' is a file; pass a directory", dir.display());
    }
    if dir.is_dir() {
        let non_empty = fs::read_dir(&dir)
            .with_context(|| format!("cannot read --out directory '{}'", dir.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "--out '{}' already exists and is not empty; pass --force to write into it, or choose another directory",
                dir.display()
            );
        }
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create run directory '{}'", dir.display()))?;
    Ok(dir)
}

/// `runs/<UTC date-time>-<label>`, with a counter if taken.
fn fresh_run_dir(label: &str) -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("runs/{}-{label}", utc_stamp(secs));
    let mut dir = PathBuf::from(&base);
    let mut counter = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{base}-{counter}"));
        counter += 1;
    }
    dir
}

/// `YYYYmmdd-HHMMSS` in UTC (days to civil date after H. Hinnant's algorithm).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

pub fn weights_name(cfg: &TrainConfig) -> String {
    format!("weights.{}", cfg.format.extension())
}

/// `iteration,loss` for every iteration; floats in shortest round-trip form.
pub fn write_losses(path: &Path, losses: &[f64]) -> Result<()> {
    let mut text = String::from("iteration,loss\n");
    for (i, loss) in losses.iter().enumerate() {
        text.push_str(&format!("{},{loss}\n", i + 1));
    }
    crate::fsutil::write_bytes_atomic(path, text.as_bytes())
}

/// Final evaluation, outputs and summary of a completed run.
fn finish_run(trainer: &Trainer, dir: &Path, train_seconds: f64, log_scale: bool) -> Result<()> {
    let cfg = &trainer.cfg;
    let (loss, predicted) = trainer.evaluate_training();
    let training = Metrics::compute(loss, &trainer.data, &predicted);
    let heldout = (cfg.heldout > 0)
        .then(|| -> Result<Metrics> {
            let data = Dataset::draw_seeded(cfg.heldout, cfg.max_digits, cfg.bits, train::heldout_seed(cfg.seed))?;
            Ok(train::evaluate_fresh(&trainer.model, &data).0)
        })
        .transpose()?;

    println!();
    println!("trained {} iterations in {train_seconds:.2} s", trainer.losses.len());
    let feedback_note = if cfg.cell == crate::model::Cell::Jordan { ", trained initial feedback y_t" } else { "" };
    print!("{}", training.report(&format!("training set ({} samples{feedback_note}):", trainer.data.len())));
    if let Some(h) = &heldout {
        print!("{}", h.report(&format!("held-out set ({} fresh pairs, initial feedback 0):", cfg.heldout)));
    }
    println!("\nlast 20 training samples:");
    print!("{}", metrics::tail_table(&trainer.data, &predicted, 20));

    // Outputs, each written atomically.
    let weights_path = dir.join(weights_name(cfg));
    weights::save(&weights_path, &trainer.snapshot(), cfg.format)?;
    write_losses(&dir.join("losses.csv"), &trainer.losses)?;
    let mut metrics_json = serde_json::to_value(&training)?;
    metrics_json["train_seconds"] = json!(train_seconds);
    metrics_json["iterations"] = json!(trainer.losses.len());
    metrics_json["heldout"] = match &heldout {
        Some(h) => json!({"samples": cfg.heldout, "metrics": h}),
        None => serde_json::Value::Null,
    };
    let text = serde_json::to_string_pretty(&metrics_json)? + "\n";
    crate::fsutil::write_bytes_atomic(&dir.join("metrics.json"), text.as_bytes())?;
    draw_run_charts(dir, &trainer.losses, &trainer.data, &predicted, cfg.seed, log_scale, ImageFormat::Png)?;
    // A finished run needs no checkpoint; a stale one would resume old state.
    for stale in [train::CHECKPOINT_STATE, train::CHECKPOINT_TENSORS] {
        let _ = fs::remove_file(dir.join(stale));
    }

    println!("\nrun directory: {}", dir.display());
    Ok(())
}

/// `loss.<ext>` and `sums.<ext>` of a run.
pub fn draw_run_charts(
    dir: &Path,
    losses: &[f64],
    data: &Dataset,
    predicted: &[u64],
    seed: u64,
    log_scale: bool,
    format: ImageFormat,
) -> Result<()> {
    let ext = format.extension();
    plot::draw_loss(&dir.join(format!("loss.{ext}")), losses, log_scale, "Training loss", format)?;
    let picks = sample_indices(data.len(), 20, seed);
    let actual: Vec<u64> = picks.iter().map(|&i| data.y[i]).collect();
    let guessed: Vec<u64> = picks.iter().map(|&i| predicted[i]).collect();
    plot::draw_sums(&dir.join(format!("sums.{ext}")), &actual, &guessed, &picks, "Actual and predicted sums (20 random training samples)", format)
}

/// `count` distinct sample indices drawn with the run's seed, in ascending order.
pub fn sample_indices(len: usize, count: usize, seed: u64) -> Vec<usize> {
    use rand::{seq::index::sample, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut picks = sample(&mut rng, len, count.min(len)).into_vec();
    picks.sort_unstable();
    picks
}

/// `binadd plot RUN_DIR`: redraws loss and sums charts from a run's files.
pub fn plot_command(args: crate::cli::PlotArgs) -> Result<()> {
    let dir = &args.run_dir;
    if !dir.is_dir() {
        bail!("'{}' is not a run directory; pass the folder that binadd train printed", dir.display());
    }
    let cfg = TrainConfig::load(&dir.join("config.json"))?;
    let losses = read_losses(&dir.join("losses.csv"))?;
    set_threads(1);
    let weights = dir.join(weights_name(&cfg));
    let loaded = crate::eval::load_model(&weights, tch::Device::Cpu)?;
    let data = Dataset::draw_seeded(cfg.samples, cfg.max_digits, cfg.bits, cfg.seed)?;
    let (xs, ys) = data.tensors(tch::Device::Cpu);
    let feedback = if loaded.model.samples == data.len() { crate::model::Feedback::Trained } else { crate::model::Feedback::Zero };
    let (_, predicted) = train::evaluate(&loaded.model, &data, &xs, &ys, feedback);
    draw_run_charts(dir, &losses, &data, &predicted, cfg.seed, args.log_scale, args.format)?;
    let ext = args.format.extension();
    println!("wrote '{}' and '{}'", dir.join(format!("loss.{ext}")).display(), dir.join(format!("sums.{ext}")).display());
    Ok(())
}

/// Reads `losses.csv` (`iteration,loss`), checking that iterations run 1, 2, ...
pub fn read_losses(path: &Path) -> Result<Vec<f64>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    let mut losses = Vec::new();
    for (line_no, line) in text.lines().enumerate().skip(1) {
        let parsed = line.split_once(',').and_then(|(i, l)| Some((i.parse::<usize>().ok()?, l.parse::<f64>().ok()?)));
        match parsed {
            Some((i, loss)) if i == losses.len() + 1 => losses.push(loss),
            _ => bail!("'{}' line {}: expected 'iteration,loss' with iteration {}, got '{line}'", path.display(), line_no + 1, losses.len() + 1),
        }
    }
    if losses.is_empty() {
        bail!("'{}' contains no losses; train again to rewrite it", path.display());
    }
    Ok(losses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_of_known_instants() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2026-12-04 20:16:14 UTC
        assert_eq!(utc_stamp(1_796_415_374), "20261204-201614");
        // 2000-02-29 23:59:59 UTC, a leap day
        assert_eq!(utc_stamp(951_868_799), "20000229-235959");
    }
}
