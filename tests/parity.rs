//! Loss parity with TensorFlow 1: `binadd compare` against the reference runs
//! committed in tests/fixtures (written by scripts/tf_reference.py).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::tempdir;

use common::{describe, read_json, run, stderr_of, stdout_of, PNG_MAGIC};

/// Largest loss difference accepted per iteration. Both sides compute in
/// float64 from the same data and initial weights, and on these fixtures the
/// measured differences stay below 5e-16. The bound leaves room for another
/// summation order, while libtorch's Adam (about 1e-4 apart) fails it.
const LOSS_TOLERANCE: &str = "1e-12";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Runs `binadd compare --tolerance LOSS_TOLERANCE` on `reference` with
/// `extra` flags and asserts that it passes; a failure shows the iteration
/// and both losses from binadd's output.
fn assert_parity(reference: &str, extra: &[&str]) {
    let path = fixture(reference);
    let mut args = vec!["compare", "--reference", path.to_str().unwrap(), "--tolerance", LOSS_TOLERANCE];
    args.extend(extra);
    let output = run(&args);
    assert!(
        output.status.success(),
        "binadd {} exceeded the tolerance or failed\n{}",
        args.join(" "),
        describe(&output)
    );
}

#[test]
fn parity_n64_autograd() {
    assert_parity("tf_seed0_n64_i50.json", &["--engine", "autograd"]);
}

#[test]
fn parity_n64_fused() {
    assert_parity("tf_seed0_n64_i50.json", &["--engine", "fused"]);
}

#[test]
fn parity_n200_autograd() {
    assert_parity("tf_seed2_n200_i100.json", &["--engine", "autograd"]);
}

#[test]
fn parity_n200_fused() {
    assert_parity("tf_seed2_n200_i100.json", &["--engine", "fused"]);
}

#[test]
fn parity_n1000_autograd() {
    assert_parity("tf_seed1_n1000_i300.json", &["--engine", "autograd"]);
}

#[test]
fn parity_n1000_fused() {
    assert_parity("tf_seed1_n1000_i300.json", &["--engine", "fused"]);
}

#[test]
fn parity_full_notebook_first_500() {
    // The full run (10000 samples, 2000 iterations) drifts chaotically after a
    // few hundred iterations, so only the first 500 are held to the tolerance.
    assert_parity("tf_seed0_full.json", &["--engine", "autograd", "--iters", "500"]);
}

#[test]
fn compare_out_writes_report() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("report");
    let path = fixture("tf_seed0_n64_i50.json");
    let output = run(&["compare", "--reference", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(output.status.success(), "compare --out failed\n{}", describe(&output));

    let report = read_json(&out.join("compare.json"));
    assert_eq!(report["iterations"], 50, "compare.json iteration count: {report}");
    assert!(report["first_iteration_above"].is_null(), "an iteration exceeded 1e-12: {report}");
    let max_diff = report["max_diff"].as_f64().expect("compare.json max_diff is a number");
    let tolerance: f64 = LOSS_TOLERANCE.parse().unwrap();
    assert!(max_diff <= tolerance, "compare.json max_diff {max_diff} exceeds {LOSS_TOLERANCE}");
    let chart = fs::read(out.join("parity.png")).expect("parity.png is written");
    assert!(chart.starts_with(PNG_MAGIC), "parity.png does not start with the PNG signature");
}

/// Parses the value after "max |diff|: " in compare's output.
fn reported_max_diff(stdout: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with("max |diff|: ")).expect("compare prints 'max |diff|: '");
    let value = line.trim_start_matches("max |diff|: ").split_whitespace().next().unwrap();
    value.parse().unwrap_or_else(|_| panic!("'{value}' in '{line}' is not a number"))
}

#[test]
fn torch_adam_misses_tolerance() {
    // libtorch's Adam adds ε after bias correction, unlike TF1, so its losses
    // drift from TensorFlow's. A failure here means --adam torch has no effect.
    let path = fixture("tf_seed1_n1000_i300.json");
    let output = run(&[
        "compare", "--reference", path.to_str().unwrap(), "--tolerance", LOSS_TOLERANCE, "--adam", "torch",
    ]);

    assert!(!output.status.success(), "--adam torch met the TF1 tolerance\n{}", describe(&output));
    assert!(stderr_of(&output).contains("exceeds --tolerance"), "no tolerance message\n{}", describe(&output));
    let max_diff = reported_max_diff(&stdout_of(&output));
    assert!(max_diff > 1e-6, "--adam torch drifted only {max_diff:e} from TensorFlow, expected above 1e-6");
}
