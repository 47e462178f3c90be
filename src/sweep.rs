//! `binadd sweep`: one training run per seed, as parallel `binadd train`
//! processes, then the spread of their metrics and, optionally, held-out
//! accuracy on wider sums.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cli::{SweepArgs, TrainOptions};
use crate::config;
use crate::data::Dataset;
use crate::eval;
use crate::train;

/// One seed's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub final_loss: f64,
    pub exact_accuracy: f64,
    pub bit_accuracy: f64,
    pub corr: Option<f64>,
    pub heldout_exact: Option<f64>,
    /// Held-out exact accuracy at each extra width, as (bits, accuracy).
    pub wider: Vec<(usize, f64)>,
    pub train_seconds: f64,
}

/// Parses `A..B` (inclusive) or a single seed.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let parse = |s: &str| -> Result<u64> {
        s.trim().parse::<u64>().with_context(|| format!("--seeds '{text}': '{s}' is not a non-negative integer"))
    };
    let (a, b) = match text.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b.trim_start_matches('='))?),
        None => {
            let s = parse(text)?;
            (s, s)
        }
    };
    if b < a {
        bail!("--seeds '{text}': the range is empty; write it as LOW..HIGH, e.g. 0..9");
    }
    if b - a >= 10_000 {
        bail!("--seeds '{text}' has {} seeds; sweep at most 10000 at once", b - a + 1);
    }
    Ok((a..=b).collect())
}

/// Command-line flags that reproduce `options` for one seed.
fn train_args(options: &TrainOptions, seed: u64, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--quiet".into(),
        "--seed".into(), seed.to_string(),
        "--samples".into(), options.samples.to_string(),
        "--max-digits".into(), options.max_digits.to_string(),
        "--bits".into(), options.bits.to_string(),
        "--hidden".into(), options.hidden.to_string(),
        "--lr".into(), options.lr.to_string(),
        "--iters".into(), options.iters.to_string(),
        "--log-every".into(), options.log_every.to_string(),
        "--device".into(), options.device.clone(),
        "--cell".into(), config::flag_value(options.cell),
        "--adam".into(), config::flag_value(options.adam),
        "--engine".into(), config::flag_value(options.engine),
        "--format".into(), config::flag_value(options.format),
        "--heldout".into(), options.heldout.to_string(),
        "--out".into(), out.display().to_string(),
        "--force".into(),
    ];
    // Runs already fill the cores, one per job, so each defaults to one thread.
    let threads = options.threads.unwrap_or(1);
    args.extend(["--threads".into(), threads.to_string()]);
    args
}

fn parse_widths(text: &str) -> Result<Vec<usize>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|w| {
            let bits: usize = w.trim().parse().with_context(|| format!("--eval-bits: '{w}' is not a number"))?;
            if !(2..=crate::data::MAX_BITS).contains(&bits) {
                bail!("--eval-bits: {bits} is out of range 2..={}", crate::data::MAX_BITS);
            }
            Ok(bits)
        })
        .collect()
}

pub fn sweep_command(args: SweepArgs) -> Result<()> {
    let seeds = parse_seeds(&args.seeds)?;
    if let Some(seed) = args.options.seed {
        bail!("sweep sets each run's seed from --seeds; drop --seed {seed} (for one seed use --seeds {seed})");
    }
    // Validate the shared options once, before starting any process.
    let mut probe = args.options.clone();
    probe.seed = Some(seeds[0]);
    let cfg = probe.to_config()?;
    let widths = parse_widths(&args.eval_bits)?;
    let jobs = args.jobs.unwrap_or_else(config::cores);
    if jobs == 0 {
        bail!("--jobs 0 is invalid: run at least 1 at a time");
    }
    let dir = crate::run::prepare_out_dir(args.out.as_deref(), args.force, &format!("sweep-{}", cfg.cell.name()))?;
    let exe = std::env::current_exe().context("cannot find the binadd executable to start runs")?;
    println!("sweeping {} seeds ({}), {} at a time, into '{}'", seeds.len(), args.seeds, jobs, dir.display());

    // Each worker takes the next seed until none are left.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<SeedResult>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(seeds.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(index) else { break };
                let run_dir = dir.join(format!("seed-{seed}"));
                let result = run_seed(&exe, &args.options, seed, &run_dir, &widths, args.eval_samples);
                match &result {
                    Ok(r) => println!(
                        "seed {seed:>5}: loss {:.5}, exact {:6.2} %, held-out exact {}",
                        r.final_loss,
                        r.exact_accuracy * 100.0,
                        r.heldout_exact.map(|h| format!("{:6.2} %", h * 100.0)).unwrap_or_else(|| "-".into())
                    ),
                    Err(e) => println!("seed {seed:>5}: failed: {e:#}"),
                }
                results.lock().unwrap().push(result);
            });
        }
    });

    let mut ok = Vec::new();
    let mut failures = Vec::new();
    for result in results.into_inner().unwrap() {
        match result {
            Ok(r) => ok.push(r),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    ok.sort_by_key(|r| r.seed);
    if ok.is_empty() {
        bail!("every run of the sweep failed; first error: {}", failures.first().cloned().unwrap_or_default());
    }
    let summary = summarise(&ok, &widths);
    print!("{}", summary.text);
    write_outputs(&dir, &ok, &summary.json, &widths)?;
    println!("sweep written to '{}'", dir.display());
    if !failures.is_empty() {
        bail!("{} of {} runs failed; first error: {}", failures.len(), seeds.len(), failures[0]);
    }
    Ok(())
}

fn run_seed(exe: &Path, options: &TrainOptions, seed: u64, run_dir: &Path, widths: &[usize], eval_samples: usize) -> Result<SeedResult> {
    let output = Command::new(exe)
        .args(train_args(options, seed, run_dir))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start '{}'", exe.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("seed {seed}: training failed: {}", stderr.trim());
    }
    let metrics_path = run_dir.join("metrics.json");
    let text = std::fs::read_to_string(&metrics_path).with_context(|| format!("cannot read '{}'", metrics_path.display()))?;
    let m: Value = serde_json::from_str(&text).with_context(|| format!("'{}' is not valid JSON", metrics_path.display()))?;
    let number = |v: &Value| v.as_f64();

    let mut wider = Vec::new();
    if !widths.is_empty() {
        let weights = run_dir.join(format!("weights.{}", options.format.extension()));
        let loaded = eval::load_model(&weights, tch::Device::Cpu)?;
        for &bits in widths {
            let data = Dataset::draw_seeded(eval_samples, bits - 1, bits, train::heldout_seed(seed) ^ bits as u64)?;
            let (metrics, _) = train::evaluate_fresh(&loaded.model, &data);
            wider.push((bits, metrics.exact_accuracy));
        }
    }
    Ok(SeedResult {
        seed,
        final_loss: number(&m["final_loss"]).context("metrics.json has no final_loss")?,
        exact_accuracy: number(&m["exact_accuracy"]).context("metrics.json has no exact_accuracy")?,
        bit_accuracy: number(&m["bit_accuracy"]).context("metrics.json has no bit_accuracy")?,
        corr: number(&m["corr"]),
        heldout_exact: number(&m["heldout"]["metrics"]["exact_accuracy"]),
        wider,
        train_seconds: number(&m["train_seconds"]).unwrap_or(f64::NAN),
    })
}

struct Summary {
    text: String,
    json: Value,
}

/// min, median, max of finite values; `None` when there are none.
fn spread(values: impl Iterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    Some((v[0], median, v[v.len() - 1]))
}

fn summarise(results: &[SeedResult], widths: &[usize]) -> Summary {
    let mut text = format!("\n{:<24} {:>10} {:>10} {:>10}\n", format!("over {} seeds", results.len()), "min", "median", "max");
    let mut json = serde_json::Map::new();
    let rows: [(&str, Box<dyn Fn(&SeedResult) -> f64>); 4] = [
        ("final_loss", Box::new(|r| r.final_loss)),
        ("exact_accuracy", Box::new(|r| r.exact_accuracy)),
        ("corr", Box::new(|r| r.corr.unwrap_or(f64::NAN))),
        ("heldout_exact_accuracy", Box::new(|r| r.heldout_exact.unwrap_or(f64::NAN))),
    ];
    for (name, get) in rows.iter() {
        if let Some((lo, mid, hi)) = spread(results.iter().map(get)) {
            text.push_str(&format!("{name:<24} {lo:>10.4} {mid:>10.4} {hi:>10.4}\n"));
            json.insert(name.to_string(), json!({"min": lo, "median": mid, "max": hi}));
        }
    }
    let perfect = results.iter().filter(|r| r.heldout_exact == Some(1.0)).count();
    text.push_str(&format!("seeds at 100 % held-out exact accuracy: {perfect} of {}\n", results.len()));
    json.insert("seeds_perfect_heldout".into(), json!(perfect));
    let mut wider_json = serde_json::Map::new();
    for &bits in widths {
        let count = results.iter().filter(|r| r.wider.iter().any(|&(b, a)| b == bits && a == 1.0)).count();
        text.push_str(&format!("seeds at 100 % on fresh {bits}-bit sums: {count} of {}\n", results.len()));
        wider_json.insert(bits.to_string(), json!(count));
    }
    json.insert("seeds_perfect_by_bits".into(), Value::Object(wider_json));
    json.insert("seeds".into(), json!(results.len()));
    Summary { text, json: Value::Object(json) }
}

fn write_outputs(dir: &Path, results: &[SeedResult], summary: &Value, widths: &[usize]) -> Result<()> {
    let doc = json!({"summary": summary, "runs": results});
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    crate::fsutil::write_bytes_atomic(&dir.join("sweep.json"), text.as_bytes())?;

    let mut csv = String::from("seed,final_loss,exact_accuracy,bit_accuracy,corr,heldout_exact_accuracy,train_seconds");
    for bits in widths {
        csv.push_str(&format!(",exact_accuracy_{bits}bit"));
    }
    csv.push('\n');
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in results {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}",
            r.seed, r.final_loss, r.exact_accuracy, r.bit_accuracy, opt(r.corr), opt(r.heldout_exact), r.train_seconds
        ));
        for &(_, acc) in &r.wider {
            csv.push_str(&format!(",{acc}"));
        }
        csv.push('\n');
    }
    crate::fsutil::write_bytes_atomic(&dir.join("sweep.csv"), csv.as_bytes())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_inclusive_ranges() {
        assert_eq!(parse_seeds("0..3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_seeds("7").unwrap(), vec![7]);
        assert_eq!(parse_seeds("2..=4").unwrap(), vec![2, 3, 4]);
        assert!(parse_seeds("5..1").is_err());
        assert!(parse_seeds("a..b").is_err());
    }

    #[test]
    fn spread_gives_min_median_max() {
        assert_eq!(spread([3.0, 1.0, 2.0].into_iter()), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread([4.0, 1.0, 2.0, f64::NAN, 3.0].into_iter()), Some((1.0, 2.5, 4.0)));
        assert_eq!(spread(std::iter::empty()), None);
    }
}
