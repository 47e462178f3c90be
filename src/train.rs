//! The training loop: forward, loss, backward, Adam step, metrics, progress,
//! checkpoints and Ctrl-C.
//!
//! With the notebook defaults the loss starts near 0.25 and ends between about
//! 0.06 and 0.18 over seeds 0-9 (TensorFlow's original: 0.07 to 0.23).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::config::{Engine, TrainConfig};
use crate::data::{self, Dataset};
use crate::fused;
use crate::metrics::Metrics;
use crate::model::{self, Feedback, Model};
use crate::optim::{self, AdamState, Optimizer};
use crate::progress::{self, Progress};
use crate::weights;

/// Model, optimizer and data of one run, stepped one iteration at a time.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Model,
    pub vars: Vec<Tensor>,
    pub optimizer: Optimizer,
    pub data: Dataset,
    xs: Tensor,
    ys: Tensor,
    fused: Option<fused::Engine>,
    /// `losses[i - 1]` is the loss at iteration i, before its update.
    pub losses: Vec<f64>,
    /// With `keep_finite`, a copy of the weights whose loss was last finite.
    backup: Option<Vec<Tensor>>,
    pub keep_finite: bool,
    /// Worker threads for batch shards after the first, started on first use.
    shard_pool: Option<rayon::ThreadPool>,
}

/// The reason a loop ended before its last iteration.
#[derive(Debug)]
pub enum Halt {
    Interrupted,
    /// The loss at `iteration` was not finite. `last_finite` contains the weights
    /// that gave the last finite loss, when the loop was asked to keep them.
    Diverged { iteration: usize, loss: f64, last_finite: Option<Vec<(String, Tensor)>> },
}

impl Trainer {
    /// Sets up a run on `data`. `init` replaces the seeded initial values (the
    /// parity check takes TensorFlow's).
    pub fn new(cfg: &TrainConfig, data: Dataset, init: Option<&BTreeMap<String, Tensor>>) -> Result<Self> {
        cfg.validate()?;
        let device = cfg.device()?;
        let mut model = Model::new(cfg.cell, cfg.hidden, data.len(), device, init_seed(cfg.seed))?;
        if let Some(init) = init {
            model.load_values(init, "initial values")?;
        }
        let vars = model.variables();
        let optimizer = Optimizer::new(cfg.adam, cfg.lr, &model.vs, &vars)?;
        let (xs, ys) = data.tensors(device);
        let fused = match cfg.engine {
            Engine::Autograd => None,
            Engine::Fused => Some(fused::Engine::new(&model, &data, cfg.threads)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            model,
            vars,
            optimizer,
            data,
            xs,
            ys,
            fused,
            losses: Vec::new(),
            backup: None,
            keep_finite: false,
            shard_pool: None,
        })
    }

    /// One full-batch iteration; returns the loss before the update. A
    /// non-finite loss leaves the weights as they are.
    pub fn step(&mut self) -> f64 {
        if let Some(engine) = &mut self.fused {
            let (loss, grads) = engine.loss_and_grads(&self.vars);
            self.losses.push(loss);
            if loss.is_finite() {
                if self.keep_finite {
                    keep_copy(&mut self.backup, &self.vars);
                }
                self.optimizer.step_with_grads(&self.vars, grads);
            }
            return loss;
        }

        let shards = self.shards();
        if shards > 1 {
            let (value, grads) = self.sharded_loss_and_grads(shards);
            self.losses.push(value);
            if value.is_finite() {
                if self.keep_finite {
                    keep_copy(&mut self.backup, &self.vars);
                }
                self.optimizer.step_with_grads(&self.vars, &grads);
            }
            return value;
        }

        let outputs = self.model.forward(&self.xs, Feedback::Trained);
        let loss = model::mse(&outputs, &self.ys);
        let value = loss.double_value(&[]);
        self.losses.push(value);
        if !value.is_finite() {
            return value;
        }
        if self.keep_finite {
            keep_copy(&mut self.backup, &self.vars);
        }

        self.optimizer.backward_step(&loss, &self.vars);
        value
    }

    /// Batch shards trained side by side by the autograd engine: one per
    /// `--threads` for the jordan and elman cells on the CPU, else 1.
    pub fn shards(&self) -> usize {
        shard_count(&self.cfg).min(self.data.len())
    }

    /// Loss and gradients over the batch split into `shards` sample ranges,
    /// each forward and backward pass on its own thread with single-threaded
    /// libtorch ops, the gradients summed in shard order. This is faster than
    /// one libtorch op pool over all cores, because these ops are too small
    /// to split well. The sums round differently from the single-shard path.
    fn sharded_loss_and_grads(&mut self, shards: usize) -> (f64, Vec<Tensor>) {
        let n = self.data.len() as i64;
        let total = (self.data.bits as i64 * n) as f64;
        let jordan = self.cfg.cell == model::Cell::Jordan;
        // One job per shard: inputs are views into the batch, so nothing is copied.
        let jobs: Vec<ShardJob> = (0..shards as i64)
            .map(|k| {
                let (start, end) = (k * n / shards as i64, (k + 1) * n / shards as i64);
                let state0 = if jordan {
                    self.model.var("y_t").narrow(0, start, end - start)
                } else {
                    Tensor::zeros([end - start, self.cfg.hidden as i64], (Kind::Double, self.xs.device()))
                };
                ShardJob {
                    weights: self.model.cell_weights(),
                    vars: self.vars.iter().map(Tensor::shallow_clone).collect(),
                    xs: self.xs.narrow(1, start, end - start),
                    ys: self.ys.narrow(1, start, end - start),
                    state0,
                    total,
                }
            })
            .collect();

        // The calling thread runs the first shard; the pool's long-lived
        // threads run the rest, so libtorch's per-thread set-up happens once.
        let mut slots: Vec<Option<(f64, Vec<Tensor>)>> = (0..shards).map(|_| None).collect();
        let pool = self.shard_pool.get_or_insert_with(|| {
            rayon::ThreadPoolBuilder::new().num_threads(shards - 1).build().expect("cannot start shard threads")
        });
        let mut work = jobs.into_iter().zip(slots.iter_mut());
        let (first_job, first_slot) = work.next().expect("at least one shard");
        pool.in_place_scope(|scope| {
            for (job, slot) in work {
                scope.spawn(move |_| *slot = Some(job.run()));
            }
            *first_slot = Some(first_job.run());
        });
        let parts = slots.into_iter().map(|slot| slot.expect("every shard ran"));

        let mut parts = parts;
        let (mut loss, mut grads) = parts.next().expect("at least one shard");
        for (part_loss, part_grads) in parts {
            loss += part_loss;
            for (sum, part) in grads.iter_mut().zip(&part_grads) {
                *sum = &*sum + part;
            }
        }
        (loss, grads)
    }

    /// Returns the weights whose loss was the last finite one, if kept.
    pub fn last_finite(&self) -> Option<Vec<(String, Tensor)>> {
        let backup = self.backup.as_ref()?;
        Some(self.model.names().iter().cloned().zip(backup.iter().map(|t| t.copy())).collect())
    }

    /// Loss and predicted sums of the current weights on the training data.
    pub fn evaluate_training(&self) -> (f64, Vec<u64>) {
        evaluate(&self.model, &self.data, &self.xs, &self.ys, Feedback::Trained)
    }

    /// Copies of the variables, for a "last finite weights" snapshot.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        self.model.named_values()
    }
}

/// One shard's forward and backward pass, ready to move to a worker thread.
struct ShardJob {
    weights: model::CellWeights,
    vars: Vec<Tensor>,
    xs: Tensor,
    ys: Tensor,
    state0: Tensor,
    /// T·N of the whole batch: each shard's squared errors are divided by it,
    /// so the shard losses add up to the batch mean.
    total: f64,
}

impl ShardJob {
    fn run(self) -> (f64, Vec<Tensor>) {
        // OpenMP's thread count is per thread: without this a worker's
        // libtorch ops would fan out over all cores and contend with the
        // other shards.
        tch::set_num_threads(1);
        let outputs = self.weights.unroll(&self.xs, self.state0);
        let loss = outputs.mse_loss(&self.ys, tch::Reduction::Sum) / self.total;
        let grads = Tensor::run_backward(&[&loss], &self.vars, false, false);
        (loss.double_value(&[]), grads)
    }
}

/// Smallest shard worth a thread: on 2 cores, 2 shards of 1500 samples were
/// no faster than one pass, 2 of 2500 were 1.2 times faster.
const MIN_SHARD_SAMPLES: usize = 2048;

/// Shards for the autograd engine's data-parallel step (see `Trainer::shards`).
pub fn shard_count(cfg: &TrainConfig) -> usize {
    if cfg.engine == Engine::Autograd && cfg.cell.unrolled_by_hand() && cfg.on_cpu() {
        cfg.threads.min(cfg.samples / MIN_SHARD_SAMPLES).max(1)
    } else {
        1
    }
}

/// Copies `vars` into `backup`, reusing its buffers after the first call.
fn keep_copy(backup: &mut Option<Vec<Tensor>>, vars: &[Tensor]) {
    tch::no_grad(|| match backup {
        Some(copies) => {
            for (copy, var) in copies.iter_mut().zip(vars) {
                if optim::is_plain_f64(copy) && optim::is_plain_f64(var) {
                    // SAFETY: distinct contiguous CPU tensors of one shape, the
                    // copy owned here; a memcpy skips libtorch's dispatch.
                    unsafe { optim::f64_slice_mut(copy).copy_from_slice(optim::f64_slice(var)) };
                } else {
                    copy.copy_(var);
                }
            }
        }
        None => *backup = Some(vars.iter().map(|v| v.detach().copy()).collect()),
    });
}

/// Derives the seed of the initial weights, a stream separate from the data's.
pub fn init_seed(seed: u64) -> u64 {
    seed ^ 0x9e37_79b9_7f4a_7c15
}

/// Derives the seed of the held-out pairs, a third stream.
pub fn heldout_seed(seed: u64) -> u64 {
    seed ^ 0x6a09_e667_f3bc_c908
}

/// Loss and predicted sums, without building a graph.
pub fn evaluate(model: &Model, data: &Dataset, xs: &Tensor, ys: &Tensor, feedback: Feedback) -> (f64, Vec<u64>) {
    tch::no_grad(|| {
        let outputs = model.forward(xs, feedback);
        let loss = model::mse(&outputs, ys).double_value(&[]);
        let predicted = data::decode_predictions(&outputs.squeeze_dim(2)); // [T,N]
        assert_eq!(predicted.len(), data.len());
        (loss, predicted)
    })
}

/// Metrics of `model` on freshly drawn pairs, which start from zero feedback.
pub fn evaluate_fresh(model: &Model, data: &Dataset) -> (Metrics, Vec<u64>) {
    let (xs, ys) = data.tensors(model.vs.device());
    let (loss, predicted) = evaluate(model, data, &xs, &ys, Feedback::Zero);
    (Metrics::compute(loss, data, &predicted), predicted)
}

/// Runs iterations `start+1 ..= cfg.iters`, logging every `log_every`.
/// With `keep_finite`, each update first copies the weights, so that a
/// divergence can hand back the last ones whose loss was finite.
pub fn run_loop(
    trainer: &mut Trainer,
    progress: &Progress,
    interrupt: &AtomicBool,
    keep_finite: bool,
) -> std::result::Result<(), Halt> {
    let start = trainer.losses.len();
    trainer.keep_finite = keep_finite;
    for iteration in start + 1..=trainer.cfg.iters {
        if interrupt.load(Ordering::SeqCst) {
            return Err(Halt::Interrupted);
        }

        let loss = trainer.step();

        if !loss.is_finite() {
            trainer.losses.pop();
            return Err(Halt::Diverged { iteration, loss, last_finite: trainer.last_finite() });
        }
        progress.update(iteration as u64, loss);
        if iteration == 1 || iteration % trainer.cfg.log_every == 0 {
            progress.println(&progress::loss_line(iteration, loss));
        }
    }
    Ok(())
}

// ---- checkpoints ------------------------------------------------------------

pub const CHECKPOINT_TENSORS: &str = "checkpoint.pt";
pub const CHECKPOINT_STATE: &str = "checkpoint.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointState {
    iteration: usize,
    beta1_power: f32,
    beta2_power: f32,
    adam_steps: u64,
    losses: Vec<f64>,
    /// Training-loop seconds of every part of the run so far.
    #[serde(default)]
    train_seconds: f64,
}

/// Writes weights and TF-Adam state after the last completed iteration.
pub fn write_checkpoint(trainer: &Trainer, dir: &Path, train_seconds: f64) -> Result<()> {
    let Optimizer::Tf(adam) = &trainer.optimizer else {
        bail!("checkpoints need --adam tf: libtorch's Adam does not expose its moment estimates through tch");
    };
    let state = adam.state();
    let mut tensors = Vec::new();
    for ((name, value), (m, v)) in trainer.model.named_values().into_iter().zip(state.m.iter().zip(&state.v)) {
        tensors.push((format!("adam_m.{name}"), m.shallow_clone()));
        tensors.push((format!("adam_v.{name}"), v.shallow_clone()));
        tensors.push((format!("param.{name}"), value));
    }
    let iteration = trainer.losses.len();
    tensors.push(("iteration".into(), Tensor::from_slice(&[iteration as f64])));
    weights::save_pt(&dir.join(CHECKPOINT_TENSORS), &tensors)?;
    let meta = CheckpointState {
        iteration,
        beta1_power: state.beta1_power,
        beta2_power: state.beta2_power,
        adam_steps: state.steps,
        losses: trainer.losses.clone(),
        train_seconds,
    };
    let text = serde_json::to_string(&meta)?;
    crate::fsutil::write_bytes_atomic(&dir.join(CHECKPOINT_STATE), text.as_bytes())
}

/// Restores a trainer from `dir`'s checkpoint; returns the iteration reached
/// and the training seconds spent so far.
pub fn restore_checkpoint(trainer: &mut Trainer, dir: &Path) -> Result<(usize, f64)> {
    let state_path = dir.join(CHECKPOINT_STATE);
    let text = std::fs::read_to_string(&state_path).with_context(|| {
        format!(
            "no checkpoint in '{}' ('{}' is missing): only an interrupted run can be resumed, \
             and a finished run removes its checkpoint",
            dir.display(),
            state_path.display()
        )
    })?;
    let meta: CheckpointState =
        serde_json::from_str(&text).with_context(|| format!("'{}' is corrupt", state_path.display()))?;
    let tensor_path = dir.join(CHECKPOINT_TENSORS);
    let mut tensors = weights::load(&tensor_path)?;
    let saved_iteration = tensors.remove("iteration").map(|t| t.double_value(&[0]) as usize);
    if saved_iteration != Some(meta.iteration) || meta.losses.len() != meta.iteration {
        bail!("checkpoint files in '{}' disagree about the iteration; resume is not safe", dir.display());
    }
    let mut params = BTreeMap::new();
    let (mut m, mut v) = (Vec::new(), Vec::new());
    for name in trainer.model.names().to_vec() {
        let take = |tensors: &mut BTreeMap<String, Tensor>, key: String| {
            tensors.remove(&key).with_context(|| format!("'{}' is missing tensor '{key}'", tensor_path.display()))
        };
        params.insert(name.clone(), take(&mut tensors, format!("param.{name}"))?);
        m.push(take(&mut tensors, format!("adam_m.{name}"))?);
        v.push(take(&mut tensors, format!("adam_v.{name}"))?);
    }
    trainer.model.load_values(&params, &tensor_path.display().to_string())?;
    let Optimizer::Tf(adam) = &mut trainer.optimizer else {
        bail!("resume needs --adam tf");
    };
    adam.restore(AdamState {
        m,
        v,
        beta1_power: meta.beta1_power,
        beta2_power: meta.beta2_power,
        steps: meta.adam_steps,
    })?;
    trainer.losses = meta.losses;
    Ok((meta.iteration, meta.train_seconds))
}

/// Seconds since `start`, for metrics.
pub fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Device of a run, for messages.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// Output probabilities `[T,N]` for plotting or inspection.
pub fn probabilities(model: &Model, xs: &Tensor, feedback: Feedback) -> Tensor {
    tch::no_grad(|| model.forward(xs, feedback).squeeze_dim(2).to_kind(Kind::Double))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Engine;
    use crate::model::Cell;
    use crate::optim::AdamKind;
    use crate::weights::Format;

    fn config(cell: Cell, threads: usize) -> TrainConfig {
        TrainConfig {
            seed: 4,
            samples: 5000,
            max_digits: 6,
            bits: 8,
            hidden: 3,
            lr: 0.04,
            iters: 1,
            log_every: 1,
            threads,
            device: "cpu".into(),
            cell,
            adam: AdamKind::Tf,
            engine: Engine::Autograd,
            format: Format::Pt,
            heldout: 0,
        }
    }

    #[test]
    fn sharded_gradients_match_single_pass() {
        for cell in [Cell::Jordan, Cell::Elman] {
            let data = Dataset::draw_seeded(5000, 6, 8, 4).unwrap();
            let mut sharded = Trainer::new(&config(cell, 2), data.clone(), None).unwrap();
            assert_eq!(sharded.shards(), 2, "{cell:?}: 5000 samples make two shards");
            let (loss, grads) = sharded.sharded_loss_and_grads(2);

            let single = Trainer::new(&config(cell, 1), data, None).unwrap();
            let outputs = single.model.forward(&single.xs, Feedback::Trained);
            let reference = model::mse(&outputs, &single.ys);
            let reference_grads = Tensor::run_backward(&[&reference], &single.vars, false, false);

            let loss_diff = (loss - reference.double_value(&[])).abs();
            assert!(loss_diff < 1e-15, "{cell:?}: loss differs by {loss_diff:e}");
            for (name, (a, b)) in single.model.names().iter().zip(grads.iter().zip(&reference_grads)) {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-15, "{cell:?}: gradient of {name} differs by {diff:e}");
            }
        }
    }

    #[test]
    fn small_batches_stay_in_one_shard() {
        let mut cfg = config(Cell::Jordan, 8);
        cfg.samples = 3000;
        assert_eq!(shard_count(&cfg), 1);
        cfg.samples = 10_000;
        assert_eq!(shard_count(&cfg), 4);
        cfg.cell = Cell::Gru;
        assert_eq!(shard_count(&cfg), 1);
    }
}
