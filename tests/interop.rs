//! Weight files exchanged with real PyTorch: binadd's `.pt` read by
//! `torch.load`, and files written by `torch.save` read by binadd.
//!
//! The tests run `python3` with the torch package that
//! scripts/fetch-libtorch.sh installs next to libtorch. Without it they fail
//! with a message that names the script, and never pass silently.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use tempfile::tempdir;

use common::{describe, run, stderr_of, stdout_of, train_small};

/// Folder that contains the `torch` package, found through the checkout's
/// `.libtorch` link (it points at `<folder>/torch` after the default fetch).
fn torch_site_dir() -> Option<PathBuf> {
    let link = Path::new(env!("CARGO_MANIFEST_DIR")).join(".libtorch");
    let torch = fs::canonicalize(link).ok()?;
    let site = torch.parent()?.to_path_buf();
    site.join("torch/__init__.py").is_file().then_some(site)
}

/// Runs a Python script with torch importable and returns its stdout.
/// Panics with the fix when torch is missing, and with stderr on any error.
fn run_python(script: &str, args: &[&str]) -> String {
    let mut command = StdCommand::new("python3");
    command.arg("-c").arg(script).args(args);
    let site = torch_site_dir();
    if let Some(site) = &site {
        let mut paths = vec![site.clone()];
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            paths.extend(std::env::split_paths(&existing));
        }
        command.env("PYTHONPATH", std::env::join_paths(paths).expect("PYTHONPATH entries contain no separator"));
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot start python3: {e}; install Python 3"));
    let stderr = stderr_of(&output);
    if stderr.contains("No module named 'torch'") {
        panic!(
            "python3 cannot import torch (looked in {}); run scripts/fetch-libtorch.sh, which installs it. \
             With LIBTORCH set the script installs nothing: then pip install torch==2.13.0 for python3",
            site.map(|s| s.display().to_string()).unwrap_or_else(|| "no .libtorch link in the checkout".into())
        );
    }
    assert!(output.status.success(), "Python script failed\n{}", describe(&output));
    stdout_of(&output)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Output of `binadd eval` on fixed fresh pairs, with the weights path masked
/// so that outputs for different files compare equal.
fn eval_output(weights: &Path) -> String {
    let output = run(&["eval", "--weights", path_str(weights), "--samples", "100", "--seed", "1"]);
    assert!(output.status.success(), "binadd eval '{}' failed\n{}", weights.display(), describe(&output));
    stdout_of(&output).replace(path_str(weights), "<weights>")
}

/// Trains a small run in `dir/run` and copies its weights to `dir/binadd.pt`,
/// away from the run's config.json and metrics.json, so that `eval` output
/// depends on the tensors alone.
fn binadd_weights(dir: &Path) -> PathBuf {
    let out = dir.join("run");
    train_small(&out, 7, &[]);
    let copy = dir.join("binadd.pt");
    fs::copy(out.join("weights.pt"), &copy).unwrap();
    copy
}

// ---- binadd to PyTorch ------------------------------------------------------

/// Loads argv[1] with plain `torch.load` and compares each tensor's bits with
/// the same name in the safetensors file argv[2], parsed by hand.
const INSPECT_PT: &str = r#"
import json, struct, sys, torch

state = torch.load(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    raw = f.read()
header_len = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + header_len])
data = raw[8 + header_len:]

tensors = {}
for name, tensor in state.items():
    same = None
    if name in header:
        begin, end = header[name]["data_offsets"]
        values = tensor.detach().flatten().tolist()
        same = struct.pack("<%dd" % len(values), *values) == data[begin:end]
    tensors[name] = {"dtype": str(tensor.dtype), "shape": list(tensor.shape), "same_bits": same}
print(json.dumps({"type": type(state).__name__, "tensors": tensors}))
"#;

#[test]
fn torch_load_reads_binadd_weights() {
    let dir = tempdir().unwrap();
    let (pt_run, st_run) = (dir.path().join("pt"), dir.path().join("safetensors"));
    train_small(&pt_run, 7, &[]);
    // The same seed trains to the same values, written this time as safetensors.
    train_small(&st_run, 7, &["--format", "safetensors"]);

    let pt = pt_run.join("weights.pt");
    let st = st_run.join("weights.safetensors");
    let stdout = run_python(INSPECT_PT, &[path_str(&pt), path_str(&st)]);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script prints JSON");

    assert_eq!(report["type"], "dict", "torch.load should return a plain dict: {report}");
    let tensors = report["tensors"].as_object().expect("tensors is an object");
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["b_f", "b_h", "u_h", "w_f", "w_h", "y_t"], "tensor names");
    let shapes = [
        ("w_f", [3, 1]),
        ("w_h", [2, 3]),
        ("u_h", [1, 3]),
        ("b_f", [1, 1]),
        ("b_h", [1, 3]),
        ("y_t", [200, 1]),
    ];
    for (name, shape) in shapes {
        let tensor = &tensors[name];
        assert_eq!(tensor["dtype"], "torch.float64", "dtype of {name}");
        assert_eq!(tensor["shape"], serde_json::json!(shape), "shape of {name} (hidden 3, 200 samples)");
        assert_eq!(tensor["same_bits"], true, "{name} in weights.pt differs from weights.safetensors");
    }
}

// ---- PyTorch to binadd ------------------------------------------------------

/// Re-saves the tensors of argv[1] to argv[2] in the layout named by argv[3].
const RESAVE: &str = r#"
import collections, sys, torch

source, target, layout = sys.argv[1:4]
state = torch.load(source)

if layout == "dict":
    torch.save({name: tensor.clone() for name, tensor in state.items()}, target)
elif layout == "module":
    # A model's state_dict: an OrderedDict that also carries _metadata.
    class Notebook(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, tensor in state.items():
                self.register_parameter(name, torch.nn.Parameter(tensor.clone()))
    saved = Notebook().state_dict()
    assert isinstance(saved, collections.OrderedDict) and hasattr(saved, "_metadata")
    torch.save(saved, target)
elif layout == "views":
    # Every tensor is a view into one shared storage at a non-zero offset
    # (a leading pad), and w_h is a transposed, non-contiguous view.
    blocks = [torch.zeros(3, dtype=torch.float64)]
    for name, tensor in state.items():
        blocks.append((tensor.t() if name == "w_h" else tensor).contiguous().flatten())
    flat = torch.cat(blocks)
    views, offset = {}, 3
    for name, tensor in state.items():
        count = tensor.numel()
        block = flat[offset:offset + count]
        views[name] = block.view(tensor.shape[1], tensor.shape[0]).t() if name == "w_h" else block.view(tensor.shape)
        offset += count
    assert not views["w_h"].is_contiguous()
    assert all(v.storage_offset() > 0 for v in views.values())
    assert all(torch.equal(views[name], tensor) for name, tensor in state.items())
    torch.save(views, target)
else:
    raise SystemExit("unknown layout " + layout)
"#;

/// Re-saves binadd's weights in Python with `layout`; asserts that binadd
/// evaluates the copy exactly as it evaluates its own file.
fn assert_python_copy_evaluates_alike(layout: &str) {
    let dir = tempdir().unwrap();
    let own = binadd_weights(dir.path());
    let copy = dir.path().join(format!("{layout}.pt"));
    run_python(RESAVE, &[path_str(&own), path_str(&copy), layout]);

    let expected = eval_output(&own);
    let got = eval_output(&copy);
    assert_eq!(got, expected, "binadd evaluates the Python '{layout}' copy differently from its own file");
}

#[test]
fn python_plain_dict_loads() {
    assert_python_copy_evaluates_alike("dict");
}

#[test]
fn python_module_state_dict_loads() {
    assert_python_copy_evaluates_alike("module");
}

#[test]
fn python_strided_views_load() {
    assert_python_copy_evaluates_alike("views");
}

// ---- malformed files from PyTorch -------------------------------------------

/// Saves a broken variant of the tensors in argv[1] to argv[2]; argv[3] names the fault.
const BREAK: &str = r#"
import sys, torch

source, target, fault = sys.argv[1:4]
state = dict(torch.load(source))
if fault == "missing":
    del state["u_h"]
elif fault == "extra":
    state["extra"] = torch.zeros(2, dtype=torch.float64)
elif fault == "shape":
    state["w_h"] = torch.zeros(3, 3, dtype=torch.float64)
elif fault == "float32":
    state["w_h"] = state["w_h"].float()
elif fault == "list":
    state = list(state.values())
else:
    raise SystemExit("unknown fault " + fault)
torch.save(state, target)
"#;

/// Asserts that binadd rejects the Python-made variant `fault` with each of
/// `expected` in stderr.
fn assert_python_fault_rejected(fault: &str, expected: &[&str]) {
    let dir = tempdir().unwrap();
    let own = binadd_weights(dir.path());
    let broken = dir.path().join(format!("{fault}.pt"));
    run_python(BREAK, &[path_str(&own), path_str(&broken), fault]);

    let output = run(&["eval", "--weights", path_str(&broken), "--samples", "100", "--seed", "1"]);
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "{fault}: binadd accepted the file\n{}", describe(&output));
    for part in expected {
        assert!(stderr.contains(part), "{fault}: stderr lacks '{part}'\n{}", describe(&output));
    }
    assert!(!stderr.contains("panicked"), "{fault}: binadd panicked\n{}", describe(&output));
}

#[test]
fn python_missing_tensor_rejected() {
    assert_python_fault_rejected("missing", &["missing tensor 'u_h'"]);
}

#[test]
fn python_extra_tensor_rejected() {
    assert_python_fault_rejected("extra", &["unexpected tensor(s) [\"extra\"]"]);
}

#[test]
fn python_wrong_shape_rejected() {
    assert_python_fault_rejected("shape", &["tensor 'w_h' has shape [3, 3]"]);
}

#[test]
fn python_float32_rejected() {
    assert_python_fault_rejected(
        "float32",
        &["tensor 'w_h' is Float, but binadd needs float64", "convert it in Python with tensor.double()"],
    );
}

#[test]
fn python_list_rejected() {
    assert_python_fault_rejected("list", &["contains a list, not a dict of tensors"]);
}
