//! Build script: lets the binary find libtorch at run time without
//! LD_LIBRARY_PATH, and records the tch and libtorch versions for config.json.
//!
//! Environment variables read:
//! - `DEP_TCH_LIBTORCH_LIB`: libtorch's `lib/` folder, exported by torch-sys
//!   (links = "tch"); it becomes the binary's rpath, and the folder above it
//!   contains `build-version` (libtorch archives) or `version.py` (PyTorch wheels).
//! - `LIBTORCH`, `LIBTORCH_USE_PYTORCH`: read by torch-sys, listed here so a
//!   change of libtorch rebuilds this crate too.

use std::path::Path;

fn main() {
    for name in ["DEP_TCH_LIBTORCH_LIB", "LIBTORCH", "LIBTORCH_USE_PYTORCH"] {
        println!("cargo:rerun-if-env-changed={name}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");

    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib_dir) = &lib_dir {
        // Applies to the binary, tests and examples alike.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }

    // Keep libtorch_cuda.so linked even though no symbol of it is referenced
    // directly; without it a CUDA-enabled libtorch reports no CUDA device.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");

    let libtorch = lib_dir.as_deref().and_then(|d| libtorch_version(Path::new(d)));
    println!("cargo:rustc-env=BINADD_LIBTORCH_VERSION={}", libtorch.unwrap_or_else(|| "unknown".into()));
    let tch = locked_version("tch").unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BINADD_TCH_VERSION={tch}");
}

fn libtorch_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return Some(text.trim().to_string());
    }
    // version.py of a PyTorch wheel: a line `__version__ = '2.13.0+cu130'`.
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split(['\'', '"']).nth(1)?.to_string())
}

/// The version of `package` in Cargo.lock.
fn locked_version(package: &str) -> Option<String> {
    let lock = std::fs::read_to_string("Cargo.lock").ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_string());
        }
    }
    None
}
