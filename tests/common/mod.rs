//! Helpers shared by the integration tests: the binadd command, small
//! training runs and output readers.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// Settings of a training run that takes well under a second on one core.
pub const SMALL_RUN: [&str; 6] = ["--samples", "200", "--iters", "50", "--heldout", "100"];

/// The eight bytes every PNG file starts with.
pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Path of the binadd executable that cargo built for these tests.
pub fn binadd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_binadd"))
}

/// Builds a `binadd` command with no arguments yet.
pub fn binadd() -> Command {
    Command::cargo_bin("binadd").expect("cargo builds the binadd binary for integration tests")
}

/// Runs `binadd` with `args` and returns its output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    binadd().args(args).output().expect("binadd starts")
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Stdout and stderr of a command, for assert messages.
pub fn describe(output: &Output) -> String {
    let (stdout, stderr) = (stdout_of(output), stderr_of(output));
    format!("exit status: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}", output.status)
}

/// Runs `binadd train` with [`SMALL_RUN`] settings, `seed` and `extra` flags
/// into `out`, and panics with the output unless it succeeds.
pub fn train_small(out: &Path, seed: u64, extra: &[&str]) -> Output {
    let seed = seed.to_string();
    let out_text = out.to_str().expect("temporary paths are UTF-8");
    let mut args = vec!["train", "--quiet", "--seed", &seed, "--out", out_text];
    args.extend(SMALL_RUN);
    args.extend(extra);
    let output = run(&args);
    assert!(output.status.success(), "binadd {}: training failed\n{}", args.join(" "), describe(&output));
    output
}

/// Parses a JSON file, naming it on failure.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read '{}': {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("'{}' is not valid JSON: {e}", path.display()))
}

/// Names of the entries in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list '{}': {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
