//! binadd: trains the TensorFlow 1 binary-addition notebook's recurrent
//! network on libtorch, and checks, exports and plots the result.

mod cli;
mod compare;
mod config;
mod data;
mod eval;
mod fsutil;
mod fused;
mod metrics;
mod model;
mod optim;
mod plot;
mod progress;
mod reference;
mod run;
mod sweep;
mod train;
mod weights;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};

fn main() {
    tune_malloc();
    restore_sigpipe();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(error) = dispatch(cli, &matches) {
        eprintln!("Error: {error:#}");
        let code = if error.downcast_ref::<run::Interrupted>().is_some() { 130 } else { 1 };
        std::process::exit(code);
    }
}

/// Keeps freed tensor memory in the heap instead of returning it to the
/// kernel. libtorch allocates and frees the same few 100 KB buffers at every
/// step; with glibc's defaults each round trip costs mmap, munmap and page
/// faults. Measured 5 % faster training on the notebook workload.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Lets a closed stdout end the process quietly, as `binadd train | head`
/// expects, instead of Rust's default of ignoring SIGPIPE and panicking on
/// the next print. Output files are written atomically, so none is left
/// half-written.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: resets one signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn dispatch(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let sub = matches.subcommand().map(|(_, m)| m).expect("a subcommand is required");
    match cli.command {
        Command::Train(args) => run::train_command(args, sub),
        Command::Eval(args) => eval::eval_command(args),
        Command::Predict(args) => eval::predict_command(args),
        Command::Compare(args) => compare::compare_command(args),
        Command::Plot(args) => run::plot_command(args),
        Command::Sweep(args) => sweep::sweep_command(args),
    }
}
