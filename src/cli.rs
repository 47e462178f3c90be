//! Command-line interface: clap commands and flags, turned into `TrainConfig`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::config::{Engine, TrainConfig};
use crate::model::Cell;
use crate::optim::AdamKind;
use crate::plot::ImageFormat;
use crate::weights::Format;

#[derive(Parser, Debug)]
#[command(name = "binadd", version, about = "Train a tiny recurrent network to add binary numbers (a TensorFlow 1 notebook rebuilt on libtorch)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a network; the defaults are the notebook's.
    Train(TrainArgs),
    /// Evaluate saved weights on freshly drawn pairs.
    Eval(EvalArgs),
    /// Add two numbers with saved weights.
    Predict(PredictArgs),
    /// Train from a TensorFlow reference file and compare the losses side by side.
    Compare(CompareArgs),
    /// Redraw the charts of a run directory.
    Plot(PlotArgs),
    /// Train one run per seed and summarise the spread.
    Sweep(SweepArgs),
}

/// Settings shared by `train` and `sweep`.
#[derive(Args, Debug, Clone)]
pub struct TrainOptions {
    /// Seed for data, initial weights and held-out pairs [default: random, printed and saved]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of training pairs
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Operands are drawn from [0, 2^max-digits)
    #[arg(long, default_value_t = 6)]
    pub max_digits: usize,
    /// Sequence length: bits of the sum, read least significant first; must exceed --max-digits
    #[arg(long, default_value_t = 8)]
    pub bits: usize,
    /// Hidden units
    #[arg(long, default_value_t = 3)]
    pub hidden: usize,
    /// Adam learning rate
    #[arg(long, default_value_t = 0.04, allow_negative_numbers = true)]
    pub lr: f64,
    /// Full-batch training iterations
    #[arg(long, default_value_t = 2000)]
    pub iters: usize,
    /// Print the loss at iteration 1 and every this many iterations
    #[arg(long, default_value_t = 100)]
    pub log_every: usize,
    /// CPU threads. Jordan and elman cells on the CPU split the batch into one
    /// shard per thread, at most one per 2048 samples, and run libtorch on one
    /// thread. Gru and lstm give the threads to libtorch [default: all cores
    /// for jordan, elman and the fused engine; 1 otherwise]
    #[arg(long)]
    pub threads: Option<usize>,
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Recurrent cell
    #[arg(long, value_enum, default_value_t = Cell::Jordan)]
    pub cell: Cell,
    /// Adam update rule: TF1's exactly, or libtorch's
    #[arg(long, value_enum, default_value_t = AdamKind::Tf)]
    pub adam: AdamKind,
    /// Gradient engine
    #[arg(long, value_enum, default_value_t = Engine::Autograd)]
    pub engine: Engine,
    /// Weights file format
    #[arg(long, value_enum, default_value_t = Format::Pt)]
    pub format: Format,
    /// Freshly drawn pairs to evaluate after training (0 skips it)
    #[arg(long, default_value_t = 10_000)]
    pub heldout: usize,
}

impl TrainOptions {
    /// Builds and validates the config; a missing seed is drawn at random.
    pub fn to_config(&self) -> Result<TrainConfig> {
        let cores = crate::config::cores();
        let threads = self.threads.unwrap_or(match (self.engine, self.cell) {
            (Engine::Fused, _) | (Engine::Autograd, Cell::Jordan | Cell::Elman) => cores,
            (Engine::Autograd, Cell::Gru | Cell::Lstm) => 1,
        });
        let config = TrainConfig {
            seed: self.seed.unwrap_or_else(|| rand::random::<u32>() as u64),
            samples: self.samples,
            max_digits: self.max_digits,
            bits: self.bits,
            hidden: self.hidden,
            lr: self.lr,
            iters: self.iters,
            log_every: self.log_every,
            threads,
            device: self.device.clone(),
            cell: self.cell,
            adam: self.adam,
            engine: self.engine,
            format: self.format,
            heldout: self.heldout,
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub options: TrainOptions,
    /// Run directory [default: a new folder under runs/]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allow writing into a non-empty --out directory
    #[arg(long)]
    pub force: bool,
    /// Continue the interrupted run in this directory from its checkpoint
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "force"])]
    pub resume: Option<PathBuf>,
    /// Draw loss.png with a logarithmic loss axis
    #[arg(long)]
    pub log_scale: bool,
    /// Hide the progress bar and the per-iteration log lines
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Weights file (.pt or .safetensors)
    #[arg(long)]
    pub weights: PathBuf,
    /// Fresh pairs to draw
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Seed for the fresh pairs [default: random]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Bits of the sum [default: the trained width from config.json, else 8]
    #[arg(long)]
    pub bits: Option<usize>,
    /// Operands are drawn from [0, 2^max-digits) [default: bits - 1 with --bits, else the trained width]
    #[arg(long)]
    pub max_digits: Option<usize>,
    /// CPU threads for libtorch
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Weights file (.pt or .safetensors)
    #[arg(long)]
    pub weights: PathBuf,
    /// First operand
    #[arg(allow_negative_numbers = true)]
    pub a: String,
    /// Second operand
    #[arg(allow_negative_numbers = true)]
    pub b: String,
    /// Bits of the sum [default: the trained width from config.json, else 8]
    #[arg(long)]
    pub bits: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Reference JSON written by scripts/tf_reference.py
    #[arg(long)]
    pub reference: PathBuf,
    /// Print the losses at iteration 1 and every this many iterations
    #[arg(long, default_value_t = 100)]
    pub log_every: usize,
    /// Adam update rule
    #[arg(long, value_enum, default_value_t = AdamKind::Tf)]
    pub adam: AdamKind,
    /// Gradient engine
    #[arg(long, value_enum, default_value_t = Engine::Autograd)]
    pub engine: Engine,
    /// CPU threads: batch shards for autograd, workers for fused [default: 1 for
    /// autograd, so sums round as in one pass; all cores for fused]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Exit non-zero when the largest loss difference exceeds this
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Check only the first N iterations [default: all of the reference's]
    #[arg(long)]
    pub iters: Option<usize>,
    /// Directory for compare.json and parity.png
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allow writing into a non-empty --out directory
    #[arg(long)]
    pub force: bool,
    /// Chart format for parity
    #[arg(long, value_enum, default_value_t = ImageFormat::Png)]
    pub plot_format: ImageFormat,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run directory written by `binadd train`
    pub run_dir: PathBuf,
    /// Image format
    #[arg(long, value_enum, default_value_t = ImageFormat::Png)]
    pub format: ImageFormat,
    /// Logarithmic loss axis
    #[arg(long)]
    pub log_scale: bool,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Seeds as A..B (inclusive), e.g. 0..9
    #[arg(long)]
    pub seeds: String,
    #[command(flatten)]
    pub options: TrainOptions,
    /// Runs at once; each run uses one thread unless --threads is given [default: the number of cores]
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Also evaluate each run on fresh sums of these widths, comma-separated (empty skips it)
    #[arg(long, default_value = "16,32,64")]
    pub eval_bits: String,
    /// Fresh pairs per width for --eval-bits
    #[arg(long, default_value_t = 10_000)]
    pub eval_samples: usize,
    /// Sweep directory [default: a new folder under runs/]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allow writing into a non-empty --out directory
    #[arg(long)]
    pub force: bool,
}
