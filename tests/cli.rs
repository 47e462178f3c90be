//! End-to-end tests of the `binadd` command line: training outputs,
//! reproducibility, input validation, weight and reference file errors, run
//! directory handling, divergence, Ctrl-C with resume, and the `predict`,
//! `eval`, `sweep` and `plot` commands.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command as StdCommand, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use tempfile::tempdir;

use common::{
    binadd, binadd_path, describe, file_names, read_json, run, stderr_of, stdout_of, train_small, PNG_MAGIC,
};

/// Asserts that `output` is a clean failure whose stderr contains `expected`.
fn assert_fails_with(output: &Output, expected: &str, case: &str) {
    let stderr = stderr_of(output);
    assert!(!output.status.success(), "{case}: expected a non-zero exit\n{}", describe(output));
    assert!(stderr.contains(expected), "{case}: stderr lacks '{expected}'\n{}", describe(output));
    assert!(!stderr.contains("panicked"), "{case}: binadd panicked instead of an error\n{}", describe(output));
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

// ---- train: outputs ---------------------------------------------------------

#[test]
fn train_writes_every_output_file() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);

    let names = file_names(&out);
    for expected in ["config.json", "loss.png", "losses.csv", "metrics.json", "sums.png", "weights.pt"] {
        assert!(names.iter().any(|n| n == expected), "run directory lacks {expected}; it contains {names:?}");
    }
    for chart in ["loss.png", "sums.png"] {
        let bytes = fs::read(out.join(chart)).unwrap();
        assert!(bytes.starts_with(PNG_MAGIC), "{chart} does not start with the PNG signature");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("checkpoint")),
        "a finished run should leave no checkpoint files, found {names:?}"
    );
}

#[test]
fn train_config_records_every_setting() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);
    let config = read_json(&out.join("config.json"));

    let keys = [
        "seed", "samples", "max_digits", "bits", "hidden", "lr", "iters", "log_every", "threads", "device", "cell",
        "adam", "engine", "format", "heldout",
    ];
    for key in keys {
        assert!(config.get(key).is_some(), "config.json lacks setting '{key}': {config}");
    }
    assert_eq!(config["seed"], 3, "config.json seed");
    assert_eq!(config["samples"], 200, "config.json samples");
    assert_eq!(config["iters"], 50, "config.json iters");
    assert_eq!(config["heldout"], 100, "config.json heldout");
    for key in ["binadd", "tch", "libtorch"] {
        assert!(config["versions"][key].is_string(), "config.json versions lacks '{key}': {config}");
    }
}

#[test]
fn train_metrics_have_expected_keys() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);
    let metrics = read_json(&out.join("metrics.json"));

    for key in ["final_loss", "exact_accuracy", "bit_accuracy", "train_seconds"] {
        assert!(metrics[key].is_number(), "metrics.json '{key}' is not a number: {metrics}");
    }
    assert!(metrics.get("corr").is_some(), "metrics.json lacks 'corr': {metrics}");
    let by_position = metrics["bit_accuracy_by_position"].as_array().expect("bit_accuracy_by_position is a list");
    assert_eq!(by_position.len(), 8, "one bit accuracy per bit of the default 8-bit sums");
    assert_eq!(metrics["heldout"]["samples"], 100, "held-out sample count: {metrics}");
    assert!(
        metrics["heldout"]["metrics"]["exact_accuracy"].is_number(),
        "held-out metrics lack exact_accuracy: {metrics}"
    );
}

#[test]
fn train_losses_csv_has_one_row_per_iteration() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);
    let text = fs::read_to_string(out.join("losses.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    assert_eq!(lines[0], "iteration,loss", "losses.csv header");
    assert_eq!(lines.len(), 1 + 50, "losses.csv should hold a header and 50 rows");
    for (index, line) in lines[1..].iter().enumerate() {
        let (iteration, loss) = line.split_once(',').unwrap_or_else(|| panic!("row '{line}' has no comma"));
        assert_eq!(iteration, (index + 1).to_string(), "row {} numbers its iteration", index + 1);
        let loss: f64 = loss.parse().unwrap_or_else(|_| panic!("row '{line}': the loss is not a number"));
        assert!(loss.is_finite(), "row '{line}': the loss is not finite");
        assert!(loss > 0.0, "row '{line}': the loss is not positive");
    }
}

#[test]
fn train_prints_loss_of_iteration_one() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    let mut args = vec!["train", "--seed", "3", "--out", path_str(&out)];
    args.extend(common::SMALL_RUN);

    binadd()
        .args(&args)
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^     1  0\.\d{12}$").unwrap());
}

// ---- train: reproducibility and learning ------------------------------------

#[test]
fn same_seed_gives_identical_losses() {
    let dir = tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    train_small(&first, 11, &[]);
    train_small(&second, 11, &[]);

    let a = fs::read(first.join("losses.csv")).unwrap();
    let b = fs::read(second.join("losses.csv")).unwrap();
    assert!(a == b, "two runs with --seed 11 wrote different losses.csv files");
}

#[test]
fn different_seeds_give_different_losses() {
    let dir = tempdir().unwrap();
    let (first, second) = (dir.path().join("seed11"), dir.path().join("seed12"));
    train_small(&first, 11, &[]);
    train_small(&second, 12, &[]);

    let a = fs::read(first.join("losses.csv")).unwrap();
    let b = fs::read(second.join("losses.csv")).unwrap();
    assert!(a != b, "--seed 11 and --seed 12 wrote the same losses.csv, so the seed has no effect");
}

/// Upper bound for the final training loss of `--seed 0 --samples 200 --iters 300`.
/// Measured on a 2-core x86-64 Linux machine with libtorch 2.13.0: the loss falls from
/// 0.2518 at iteration 1 to 0.1753; over seeds 0..7 it ended between 0.175 and
/// 0.198. The bound leaves 0.015 of margin for other CPUs and libtorch builds.
const SEED0_FINAL_LOSS_BELOW: f64 = 0.19;

#[test]
fn seeded_run_lowers_loss() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    let output = run(&[
        "train", "--quiet", "--seed", "0", "--samples", "200", "--iters", "300", "--heldout", "0", "--out",
        path_str(&out),
    ]);
    assert!(output.status.success(), "training failed\n{}", describe(&output));

    let final_loss = read_json(&out.join("metrics.json"))["final_loss"].as_f64().expect("final_loss is a number");
    assert!(
        final_loss < SEED0_FINAL_LOSS_BELOW,
        "final loss {final_loss} of the seed-0 run is not below {SEED0_FINAL_LOSS_BELOW}"
    );
}

// ---- train: invalid flags ---------------------------------------------------

/// Runs `binadd train` with `case` plus small defaults for the flags it leaves out.
fn train_with_flags(out: &Path, case: &[&str]) -> Output {
    let mut args = vec!["train", "--out", path_str(out)];
    args.extend(case);
    for (flag, value) in [("--samples", "10"), ("--iters", "1"), ("--heldout", "0")] {
        if !case.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    run(&args)
}

#[test]
fn invalid_flags_are_rejected() {
    // Each case with a distinctive part of its message, which names the flag.
    let cases: [(&[&str], &str); 14] = [
        (&["--hidden", "0"], "--hidden 0 is invalid"),
        (&["--samples", "0"], "--samples 0 is invalid"),
        (&["--iters", "0"], "--iters 0 is invalid"),
        (&["--lr", "0"], "--lr 0 is invalid"),
        (&["--lr", "-1"], "--lr -1 is invalid"),
        (&["--lr", "nan"], "--lr NaN is invalid"),
        (&["--lr", "inf"], "--lr inf is invalid"),
        (&["--lr", "1e300"], "--lr 1e300 is out of range"),
        (&["--max-digits", "0"], "--max-digits 0 must be at least 1"),
        (&["--max-digits", "8", "--bits", "8"], "--max-digits 8 must be at least 1 and below --bits 8"),
        (&["--bits", "65"], "--bits 65 is out of range"),
        (&["--threads", "0"], "--threads 0 is invalid"),
        (&["--log-every", "0"], "--log-every 0 is invalid"),
        (&["--device", "tpu"], "--device 'tpu' is not recognised"),
    ];
    let dir = tempdir().unwrap();
    for (case, expected) in cases {
        let out = dir.path().join("run");
        let output = train_with_flags(&out, case);
        let label = case.join(" ");
        assert_fails_with(&output, expected, &label);
        assert!(!out.exists(), "{label}: the run directory was created although the flags were invalid");
    }
}

/// Returns whether libtorch, loaded in this test process, finds a CUDA device.
fn cuda_available() -> bool {
    tch::Cuda::device_count() > 0
}

#[test]
fn device_cuda_never_falls_back_to_cpu() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    let output = train_with_flags(&out, &["--device", "cuda"]);
    if cuda_available() {
        assert!(output.status.success(), "--device cuda failed on a machine with CUDA\n{}", describe(&output));
        let on_cuda = stdout_of(&output).contains("on cuda:0");
        assert!(on_cuda, "--device cuda did not train on cuda:0\n{}", describe(&output));
    } else {
        assert_fails_with(&output, "--device cuda: no CUDA device is available", "--device cuda without CUDA");
    }
}

// ---- weight files -----------------------------------------------------------

fn eval_weights(path: &Path) -> Output {
    run(&["eval", "--weights", path_str(path), "--samples", "10", "--seed", "1"])
}

#[test]
fn eval_missing_weights_file() {
    let dir = tempdir().unwrap();
    let output = eval_weights(&dir.path().join("absent.pt"));
    assert_fails_with(&output, "absent.pt' not found", "missing weights file");
}

#[test]
fn eval_weights_path_is_directory() {
    let dir = tempdir().unwrap();
    let output = eval_weights(dir.path());
    assert_fails_with(&output, "is a directory; pass the weights file inside it", "directory as weights");
}

#[test]
fn eval_empty_weights_file() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("empty.pt");
    fs::write(&path, b"").unwrap();
    let output = eval_weights(&path);
    assert_fails_with(&output, "is empty", "empty weights file");
}

#[test]
fn eval_truncated_weights_file() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);
    let bytes = fs::read(out.join("weights.pt")).unwrap();
    let path = dir.path().join("truncated.pt");
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let output = eval_weights(&path);
    assert_fails_with(&output, "is not a readable zip file", "truncated .pt");
}

#[test]
fn eval_zip_without_pytorch_pickle() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("notes.pt");
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("notes/readme.txt", options).unwrap();
    zip.write_all(b"not a tensor").unwrap();
    zip.finish().unwrap();

    let output = eval_weights(&path);
    assert_fails_with(&output, "is a zip file but not a PyTorch file", "zip without data.pkl");
}

#[test]
fn eval_storage_shorter_than_tensor() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);

    // Copy binadd's archive entry by entry, cutting the largest storage (y_t,
    // 200 float64 values) in half, so the zip itself stays valid.
    let mut source = zip::ZipArchive::new(fs::File::open(out.join("weights.pt")).unwrap()).unwrap();
    let mut entries = Vec::new();
    for index in 0..source.len() {
        let mut entry = source.by_index(index).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        entries.push((entry.name().to_string(), bytes));
    }
    let largest = entries.iter().map(|(_, b)| b.len()).max().unwrap();
    assert_eq!(largest, 1600, "y_t of 200 samples should be the largest storage");
    let path = dir.path().join("short_storage.pt");
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in &entries {
        let keep = if bytes.len() == largest { largest / 2 } else { bytes.len() };
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(&bytes[..keep]).unwrap();
    }
    zip.finish().unwrap();

    let output = eval_weights(&path);
    assert_fails_with(&output, "storage of tensor 'y_t' has 800 bytes, expected 1600", "short storage");
}

/// Name, shape and float64 values of the notebook's variables for hidden size 3
/// and 200 training samples.
fn notebook_tensors() -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let shapes = [
        ("w_f", vec![3, 1]),
        ("w_h", vec![2, 3]),
        ("u_h", vec![1, 3]),
        ("b_f", vec![1, 1]),
        ("b_h", vec![1, 3]),
        ("y_t", vec![200, 1]),
    ];
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let len = shape.iter().product();
            (name.to_string(), shape, vec![0.25; len])
        })
        .collect()
}

/// Writes `tensors` as a safetensors file, float32 for the names in `as_f32`.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f64>)], as_f32: &[&str]) {
    let encoded: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            if as_f32.contains(&name.as_str()) {
                let bytes = values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
                (name.clone(), shape.clone(), safetensors::Dtype::F32, bytes)
            } else {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), shape.clone(), safetensors::Dtype::F64, bytes)
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = encoded
        .iter()
        .map(|(name, shape, dtype, bytes)| {
            (name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap())
        })
        .collect();
    fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn eval_safetensors_control_loads() {
    // The unmodified tensors load, so the failures below come from each change.
    let dir = tempdir().unwrap();
    let path = dir.path().join("complete.safetensors");
    write_safetensors(&path, &notebook_tensors(), &[]);
    let output = eval_weights(&path);
    assert!(output.status.success(), "complete notebook tensors were rejected\n{}", describe(&output));
}

#[test]
fn eval_safetensors_missing_tensor() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("missing.safetensors");
    let tensors: Vec<_> = notebook_tensors().into_iter().filter(|(name, _, _)| name != "b_h").collect();
    write_safetensors(&path, &tensors, &[]);
    let output = eval_weights(&path);
    assert_fails_with(&output, "missing tensor(s) [\"b_h\"]", "missing b_h");
}

#[test]
fn eval_safetensors_extra_tensor() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("extra.safetensors");
    let mut tensors = notebook_tensors();
    tensors.push(("bias2".to_string(), vec![1, 3], vec![0.0; 3]));
    write_safetensors(&path, &tensors, &[]);
    let output = eval_weights(&path);
    assert_fails_with(&output, "unexpected tensor(s) [\"bias2\"]", "extra bias2");
}

#[test]
fn eval_safetensors_misshapen_tensor() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("misshapen.safetensors");
    let mut tensors = notebook_tensors();
    let w_h = tensors.iter_mut().find(|(name, _, _)| name == "w_h").unwrap();
    *w_h = ("w_h".to_string(), vec![3, 2], vec![0.25; 6]);
    write_safetensors(&path, &tensors, &[]);
    let output = eval_weights(&path);
    assert_fails_with(&output, "tensor 'w_h' has shape [3, 2]", "transposed w_h");
}

#[test]
fn eval_safetensors_float32_tensor() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("float32.safetensors");
    write_safetensors(&path, &notebook_tensors(), &["u_h"]);
    let output = eval_weights(&path);
    assert_fails_with(&output, "tensor 'u_h' is Float, but binadd needs float64", "float32 u_h");
}

// ---- reference files --------------------------------------------------------

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn compare_malformed_reference() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("malformed.json");
    fs::write(&path, "{\"seed\": 0, ").unwrap();
    let output = run(&["compare", "--reference", path_str(&path)]);
    assert_fails_with(&output, "is not a valid reference file", "unterminated JSON");
}

#[test]
fn compare_out_non_empty_needs_force() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("report");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("notes.txt"), "keep me").unwrap();
    let reference = fixture("tf_seed0_n64_i50.json");
    let output = run(&["compare", "--reference", path_str(&reference), "--out", path_str(&out)]);
    assert_fails_with(&output, "pass --force", "non-empty compare --out");
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "keep me");

    let forced = run(&["compare", "--reference", path_str(&reference), "--out", path_str(&out), "--force"]);
    assert!(forced.status.success(), "compare --force failed\n{}", describe(&forced));
    assert!(out.join("compare.json").is_file(), "compare --force wrote no compare.json");
}

#[test]
fn sweep_rejects_single_seed_flag() {
    let output = run(&["sweep", "--seeds", "0..1", "--seed", "3"]);
    assert_fails_with(&output, "drop --seed 3", "sweep --seed");
}

#[test]
fn compare_incomplete_reference() {
    let dir = tempdir().unwrap();
    let mut reference = read_json(&fixture("tf_seed0_n64_i50.json"));
    reference.as_object_mut().unwrap().remove("losses").expect("the fixture has losses");
    let path = dir.path().join("incomplete.json");
    fs::write(&path, reference.to_string()).unwrap();

    let output = run(&["compare", "--reference", path_str(&path)]);
    assert_fails_with(&output, "missing field `losses`", "reference without losses");
}

#[test]
fn compare_inconsistent_reference() {
    let dir = tempdir().unwrap();
    let mut reference = read_json(&fixture("tf_seed0_n64_i50.json"));
    reference["losses"].as_array_mut().unwrap().truncate(10);
    let path = dir.path().join("short_losses.json");
    fs::write(&path, reference.to_string()).unwrap();

    let output = run(&["compare", "--reference", path_str(&path)]);
    assert_fails_with(&output, "field 'losses' has 10 entries, but n_training_iters is 50", "10 of 50 losses");
}

// ---- run directory ----------------------------------------------------------

#[test]
fn out_non_empty_without_force_fails() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("losses.csv"), "keep me\n").unwrap();

    let output = train_with_flags(&out, &["--seed", "1"]);
    assert_fails_with(&output, "already exists and is not empty; pass --force", "non-empty --out");
    assert_eq!(file_names(&out), ["losses.csv"], "binadd added files to a directory it rejected");
    assert_eq!(fs::read_to_string(out.join("losses.csv")).unwrap(), "keep me\n", "binadd changed an existing file");
}

#[test]
fn out_under_regular_file_fails() {
    let dir = tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, "a file").unwrap();
    let output = train_with_flags(&file.join("run"), &["--seed", "1"]);
    assert_fails_with(&output, "cannot create run directory", "--out below a file");
}

#[test]
fn out_regular_file_fails() {
    let dir = tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, "a file").unwrap();
    let output = train_with_flags(&file, &["--seed", "1"]);
    assert_fails_with(&output, "is a file; pass a directory", "--out on a file");
    assert_eq!(fs::read_to_string(&file).unwrap(), "a file", "binadd changed the file given as --out");
}

/// Runs `binadd train` under a 64-block file size limit (32 or 64 KiB,
/// depending on the shell), with SIGXFSZ ignored so that writes past it fail
/// with EFBIG, as on a full disk. 20000 samples make weights.pt about 160 KB.
fn train_with_small_file_limit(out: &Path) -> Output {
    StdCommand::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\""])
        .arg(binadd_path())
        .args(["train", "--quiet", "--seed", "1", "--samples", "20000", "--iters", "2", "--heldout", "100"])
        .args(["--out", path_str(out)])
        .output()
        .expect("sh starts")
}

#[test]
fn full_disk_leaves_no_partial_weights() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    let output = train_with_small_file_limit(&out);

    assert_fails_with(&output, "failed to write", "write past the file size limit");
    assert!(stderr_of(&output).contains("weights.pt"), "the error does not name weights.pt\n{}", describe(&output));
    assert!(stderr_of(&output).contains("File too large"), "the error does not give the cause\n{}", describe(&output));
    let names = file_names(&out);
    assert!(!names.iter().any(|n| n == "weights.pt"), "a partial weights.pt exists: {names:?}");
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "a temporary file was left behind: {names:?}");
}

#[test]
fn full_disk_stderr_contains_only_error() {
    let dir = tempdir().unwrap();
    let output = train_with_small_file_limit(&dir.path().join("run"));
    let stderr = stderr_of(&output);
    assert!(stderr.starts_with("Error: failed to write"), "stderr contains more than the error\n{}", describe(&output));
}

// ---- divergence -------------------------------------------------------------

/// A learning rate that makes the loss non-finite. The loss is a mean of
/// squared differences of sigmoid outputs, so it stays finite until the
/// weights overflow: rates up to float32's maximum of 3.4e38 (1e6, 1e20, 3e38)
/// kept it finite for 200 iterations. With libtorch's float64 Adam, 1e308
/// moves the weights to about 1e308 in the first update and to infinity in the
/// second, so the loss of iteration 2 is NaN. TF1's Adam rejects such a rate,
/// because it keeps the rate as float32.
const DIVERGING_LR: &str = "1e308";

fn train_diverging(out: &Path) -> Output {
    run(&[
        "train", "--quiet", "--seed", "3", "--samples", "200", "--iters", "50", "--heldout", "0", "--adam", "torch",
        "--lr", DIVERGING_LR, "--out", path_str(out),
    ])
}

#[test]
fn huge_lr_reports_divergence_iteration() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    let output = train_diverging(&out);

    assert_fails_with(&output, "training diverged at iteration 2", "--lr 1e308");
    let losses = fs::read_to_string(out.join("losses.csv")).unwrap();
    assert_eq!(losses.lines().count(), 2, "losses.csv should keep the header and the finite loss of iteration 1");
}

#[test]
fn huge_lr_keeps_last_finite_weights() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    let output = train_diverging(&out);
    assert!(!output.status.success(), "training with --lr {DIVERGING_LR} succeeded\n{}", describe(&output));

    let path = out.join("weights.pt");
    assert!(path.is_file(), "no weights.pt kept after divergence\n{}", describe(&output));
    let mut archive = zip::ZipArchive::new(fs::File::open(&path).unwrap()).unwrap();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).unwrap();
        if !entry.name().starts_with("archive/data/") {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let finite = bytes.chunks_exact(8).all(|c| f64::from_le_bytes(c.try_into().unwrap()).is_finite());
        assert!(finite, "storage {} of the kept weights is not finite", entry.name());
    }
}

// ---- Ctrl-C and resume ------------------------------------------------------

/// Loss lines to see before sending SIGINT.
const ITERATIONS_BEFORE_INTERRUPT: usize = 10;

/// Starts a long training run into `out`, sends SIGINT once stdout shows
/// iteration [`ITERATIONS_BEFORE_INTERRUPT`], and returns its output (stderr only).
fn interrupt_training(out: &Path) -> Output {
    let mut child = StdCommand::new(binadd_path())
        .args(["train", "--seed", "5", "--samples", "2000", "--iters", "100000", "--heldout", "100"])
        .args(["--log-every", "1", "--out", path_str(out)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binadd starts");

    // Read stdout on a thread so that waiting for a line can time out.
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("binadd train printed no loss for iteration {ITERATIONS_BEFORE_INTERRUPT} within 60 s");
            }
        };
        let iteration = line.split_whitespace().next().and_then(|word| word.parse::<usize>().ok());
        if iteration.is_some_and(|i| i >= ITERATIONS_BEFORE_INTERRUPT) {
            break;
        }
    }

    let kill = StdCommand::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill starts");
    assert!(kill.success(), "kill -INT {} failed", child.id());
    let output = child.wait_with_output().expect("binadd exits");
    drop(receiver);
    output
}

/// Reads the iteration recorded in a run directory's checkpoint.json.
fn checkpoint_iteration(out: &Path) -> usize {
    let state = read_json(&out.join("checkpoint.json"));
    state["iteration"].as_u64().expect("checkpoint.json has an integer iteration") as usize
}

#[test]
fn interrupt_exits_130_with_checkpoint() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    let output = interrupt_training(&out);

    assert_eq!(output.status.code(), Some(130), "SIGINT should end training with status 130\n{}", describe(&output));
    assert!(stderr_of(&output).contains("binadd train --resume"), "no resume hint\n{}", describe(&output));
    let names = file_names(&out);
    for expected in ["checkpoint.json", "checkpoint.pt", "weights.pt", "losses.csv"] {
        assert!(names.iter().any(|n| n == expected), "interrupted run lacks {expected}: {names:?}");
    }
    let iteration = checkpoint_iteration(&out);
    assert!(
        iteration >= ITERATIONS_BEFORE_INTERRUPT,
        "checkpoint at iteration {iteration}, but stdout had shown iteration {ITERATIONS_BEFORE_INTERRUPT}"
    );
}

#[test]
fn resume_matches_uninterrupted_run() {
    let dir = tempdir().unwrap();
    let interrupted = dir.path().join("interrupted");
    let output = interrupt_training(&interrupted);
    assert_eq!(output.status.code(), Some(130), "interrupt failed\n{}", describe(&output));

    // Finish 40 iterations past the checkpoint, then train the same seed for
    // that many iterations without a break.
    let total = (checkpoint_iteration(&interrupted) + 40).to_string();
    let resumed = run(&["train", "--quiet", "--resume", path_str(&interrupted), "--iters", &total]);
    assert!(resumed.status.success(), "resume failed\n{}", describe(&resumed));
    let straight = dir.path().join("straight");
    let uninterrupted = run(&[
        "train", "--quiet", "--seed", "5", "--samples", "2000", "--iters", &total, "--heldout", "100", "--out",
        path_str(&straight),
    ]);
    assert!(uninterrupted.status.success(), "uninterrupted run failed\n{}", describe(&uninterrupted));

    let names = file_names(&interrupted);
    assert!(!names.iter().any(|n| n.starts_with("checkpoint")), "checkpoint left after the resumed run: {names:?}");
    let losses_resumed = fs::read(interrupted.join("losses.csv")).unwrap();
    let losses_straight = fs::read(straight.join("losses.csv")).unwrap();
    let same_losses = losses_resumed == losses_straight;
    assert!(same_losses, "resumed losses.csv differs from the uninterrupted run's ({total} iterations)");
    let weights_resumed = fs::read(interrupted.join("weights.pt")).unwrap();
    let weights_straight = fs::read(straight.join("weights.pt")).unwrap();
    assert!(weights_resumed == weights_straight, "resumed weights.pt differs from the uninterrupted run's");
}

#[test]
fn resume_rejects_iters_behind_checkpoint() {
    let dir = tempdir().unwrap();
    let interrupted = dir.path().join("interrupted");
    let output = interrupt_training(&interrupted);
    assert_eq!(output.status.code(), Some(130), "interrupt failed\n{}", describe(&output));

    let reached = checkpoint_iteration(&interrupted).to_string();
    let resumed = run(&["train", "--quiet", "--resume", path_str(&interrupted), "--iters", &reached]);
    assert_fails_with(&resumed, "does not go past the checkpoint", "--iters at the checkpoint");
    let names = file_names(&interrupted);
    assert!(names.iter().any(|n| n == "checkpoint.json"), "the checkpoint was removed: {names:?}");
}

#[test]
fn resume_of_finished_run_explains() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);
    let output = run(&["train", "--resume", path_str(&out), "--iters", "100"]);
    assert_fails_with(&output, "only an interrupted run can be resumed", "resume of a finished run");
}

// ---- predict ----------------------------------------------------------------

/// Trains a small 8-bit run in `dir` and returns its weights.pt path.
fn trained_weights(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("run");
    train_small(&out, 3, &[]);
    out.join("weights.pt")
}

#[test]
fn predict_prints_sum_line() {
    let dir = tempdir().unwrap();
    let weights = trained_weights(dir.path());
    binadd()
        .args(["predict", "--weights", path_str(&weights), "23", "41"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^23 \+ 41 -> \d+ \(true 64\)").unwrap());
}

#[test]
fn predict_rejects_negative_operand() {
    let dir = tempdir().unwrap();
    let weights = trained_weights(dir.path());
    let output = run(&["predict", "--weights", path_str(&weights), "-5", "3"]);
    assert_fails_with(&output, "operand A '-5' is negative", "predict -5 3");
}

#[test]
fn predict_rejects_non_number() {
    let dir = tempdir().unwrap();
    let weights = trained_weights(dir.path());
    let output = run(&["predict", "--weights", path_str(&weights), "3", "abc"]);
    assert_fails_with(&output, "operand B 'abc' is not a non-negative integer", "predict 3 abc");
}

#[test]
fn predict_rejects_too_wide_operand() {
    let dir = tempdir().unwrap();
    let weights = trained_weights(dir.path());
    let output = run(&["predict", "--weights", path_str(&weights), "200", "3"]);
    let expected = "operand A = 200 is too wide: with 8-bit sums each operand must be below 128";
    assert_fails_with(&output, expected, "predict 200 3");
}

// ---- eval, sweep, plot ------------------------------------------------------

#[test]
fn eval_prints_fresh_pair_metrics() {
    let dir = tempdir().unwrap();
    let weights = trained_weights(dir.path());
    let output = run(&["eval", "--weights", path_str(&weights), "--samples", "100", "--seed", "1"]);
    assert!(output.status.success(), "eval failed\n{}", describe(&output));

    let stdout = stdout_of(&output);
    assert!(stdout.contains("on 100 fresh pairs"), "no pair count in the header\n{stdout}");
    let note = "new samples have no trained initial feedback y_t, so each starts from 0";
    assert!(stdout.contains(note), "no note on the initial feedback\n{stdout}");
    assert!(stdout.contains("fresh pairs:\n  loss "), "no fresh-pair metrics block\n{stdout}");
    assert!(stdout.contains("training set, from '"), "the run's training metrics are not shown\n{stdout}");
}

#[test]
fn sweep_writes_json_and_csv() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("sweep");
    let output = run(&[
        "sweep", "--seeds", "0..1", "--samples", "200", "--iters", "50", "--heldout", "100", "--eval-bits", "16",
        "--eval-samples", "100", "--jobs", "2", "--out", path_str(&out),
    ]);
    assert!(output.status.success(), "sweep failed\n{}", describe(&output));

    let csv = fs::read_to_string(out.join("sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("seed,final_loss,"), "sweep.csv header: {}", lines[0]);
    assert!(lines[0].ends_with(",exact_accuracy_16bit"), "sweep.csv lacks the 16-bit column: {}", lines[0]);
    assert_eq!(lines.len(), 3, "sweep.csv should hold a header and two rows:\n{csv}");
    assert!(lines[1].starts_with("0,"), "first row is not seed 0: {}", lines[1]);
    assert!(lines[2].starts_with("1,"), "second row is not seed 1: {}", lines[2]);
    let sweep = read_json(&out.join("sweep.json"));
    assert_eq!(sweep["runs"].as_array().map(Vec::len), Some(2), "sweep.json should list two runs: {sweep}");
    assert_eq!(sweep["summary"]["seeds"], 2, "sweep.json summary seed count: {sweep}");
}

#[test]
fn plot_svg_writes_both_charts() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("run");
    train_small(&out, 3, &[]);
    let output = run(&["plot", path_str(&out), "--format", "svg"]);
    assert!(output.status.success(), "plot failed\n{}", describe(&output));

    for chart in ["loss.svg", "sums.svg"] {
        let text = fs::read_to_string(out.join(chart)).unwrap_or_else(|e| panic!("cannot read {chart}: {e}"));
        assert!(text.starts_with("<svg"), "{chart} is not an SVG document");
    }
}
