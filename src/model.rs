//! The recurrent cells and their named variables.
//!
//! `jordan` is the notebook's cell: the previous *output* is fed back,
//!     h = sigmoid(x·w_h + y_prev·u_h + b_h),  y = sigmoid(h·w_f + b_f),
//! with `y_t [N,1]` a trainable initial feedback, one value per training sample.
//! `elman` feeds back the hidden state instead (`u_h [H,H]`, initial state 0),
//! so a carry can be held exactly. `gru` and `lstm` are libtorch's modules
//! followed by the same sigmoid output layer.
//!
//! Shapes: xs `[T,N,2]`, outputs `[T,N,1]`; see `data.rs` for the letters.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tch::nn::{self, RNN};
use tch::{Device, Kind, Tensor};

/// The recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    /// The notebook's cell: the previous output is the recurrent input.
    Jordan,
    /// The hidden state is the recurrent input.
    Elman,
    /// libtorch's GRU with a sigmoid output layer.
    Gru,
    /// libtorch's LSTM with a sigmoid output layer.
    Lstm,
}

impl Cell {
    /// Tells whether binadd unrolls this cell itself (jordan, elman) rather
    /// than calling a libtorch module (gru, lstm).
    pub fn unrolled_by_hand(self) -> bool {
        matches!(self, Cell::Jordan | Cell::Elman)
    }

    pub fn name(self) -> &'static str {
        match self {
            Cell::Jordan => "jordan",
            Cell::Elman => "elman",
            Cell::Gru => "gru",
            Cell::Lstm => "lstm",
        }
    }
}

/// The source of a jordan cell's first feedback value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// The trained `y_t`, one per training sample (training data only).
    Trained,
    /// Zero, for samples the network was not trained on.
    Zero,
}

enum Recurrent {
    Gru(nn::GRU),
    Lstm(nn::LSTM),
}

/// A cell with its variables held in a `VarStore`, float64.
pub struct Model {
    pub cell: Cell,
    pub hidden: usize,
    pub samples: usize,
    pub vs: nn::VarStore,
    names: Vec<String>,
    vars: BTreeMap<String, Tensor>,
    recurrent: Option<Recurrent>,
}

/// Fills a buffer like TF's `truncated_normal_initializer()`: standard normal
/// draws, redrawn until they lie within two standard deviations.
pub fn truncated_normal(rng: &mut StdRng, len: usize) -> Vec<f64> {
    let mut values = Vec::with_capacity(len);
    while values.len() < len {
        let v: f64 = StandardNormal.sample(rng);
        if v.abs() <= 2.0 {
            values.push(v);
        }
    }
    values
}

impl Model {
    /// Builds a freshly initialised model. Weights are drawn from `seed`;
    /// biases and the initial feedback start at zero.
    pub fn new(cell: Cell, hidden: usize, samples: usize, device: Device, seed: u64) -> Result<Self> {
        if hidden == 0 {
            bail!("--hidden must be at least 1");
        }
        let h = hidden as i64;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut normal = |dims: &[i64]| {
            let len = dims.iter().product::<i64>() as usize;
            Tensor::from_slice(&truncated_normal(&mut rng, len)).view(dims).to_device(device)
        };
        let zeros = |dims: &[i64]| Tensor::zeros(dims, (Kind::Double, device));

        // Creation order follows the notebook: w_f, w_h, u_h, b_f, b_h, then y_t.
        let mut names: Vec<String> = Vec::new();
        let mut recurrent = None;
        let mut add = |name: &str, init: Tensor| {
            let _ = root.var_copy(name, &init);
            names.push(name.to_string());
        };
        add("w_f", normal(&[h, 1]));
        match cell {
            Cell::Jordan | Cell::Elman => {
                let u_rows = if cell == Cell::Jordan { 1 } else { h };
                add("w_h", normal(&[2, h]));
                add("u_h", normal(&[u_rows, h]));
                add("b_f", zeros(&[1, 1]));
                add("b_h", zeros(&[1, h]));
            }
            Cell::Gru | Cell::Lstm => {
                add("b_f", zeros(&[1, 1]));
                tch::manual_seed(seed as i64);
                let config = nn::RNNConfig { batch_first: false, ..Default::default() };
                let path = root.clone() / cell.name();
                recurrent = Some(match cell {
                    Cell::Gru => Recurrent::Gru(nn::gru(&path, 2, h, config)),
                    _ => Recurrent::Lstm(nn::lstm(&path, 2, h, config)),
                });
            }
        }
        if cell == Cell::Jordan {
            add("y_t", zeros(&[samples as i64, 1]));
        }

        let mut vs = vs;
        vs.double();
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        // Module variables come after the notebook's, in name order.
        let mut module_names: Vec<String> =
            vars.keys().filter(|n| !names.contains(n)).cloned().collect();
        module_names.sort();
        names.extend(module_names);
        Ok(Self { cell, hidden, samples, vs, names, vars, recurrent })
    }

    /// Variable names in a stable order: the notebook's first, then module ones.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Returns the variable `name`. Panics on a name this cell does not have.
    pub fn var(&self, name: &str) -> &Tensor {
        self.vars.get(name).unwrap_or_else(|| panic!("{} cell has no variable {name}", self.cell.name()))
    }

    /// Variables in [`Model::names`] order (shallow clones).
    pub fn variables(&self) -> Vec<Tensor> {
        self.names.iter().map(|n| self.vars[n].shallow_clone()).collect()
    }

    /// Name, value pairs detached from the graph, in [`Model::names`] order.
    pub fn named_values(&self) -> Vec<(String, Tensor)> {
        self.names.iter().map(|n| (n.clone(), self.vars[n].detach().copy())).collect()
    }

    /// Expected shape of each variable.
    #[cfg(test)]
    pub fn shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.names.iter().map(|n| (n.clone(), self.vars[n].size())).collect()
    }

    /// Overwrites every variable from `values`, which must hold exactly this
    /// model's names with the same shapes, float64.
    pub fn load_values(&mut self, values: &BTreeMap<String, Tensor>, source: &str) -> Result<()> {
        check_names(self, values, source)?;
        tch::no_grad(|| -> Result<()> {
            for name in &self.names {
                let target = &self.vars[name];
                let value = &values[name];
                if value.size() != target.size() {
                    bail!(
                        "{source}: tensor '{name}' has shape {:?}, but a {} cell with hidden size {} \
                         and {} samples needs {:?}",
                        value.size(),
                        self.cell.name(),
                        self.hidden,
                        self.samples,
                        target.size()
                    );
                }
                if value.kind() != Kind::Double {
                    bail!("{source}: tensor '{name}' is {:?}, but binadd needs float64 (Double)", value.kind());
                }
                let mut target = target.shallow_clone();
                target.copy_(&value.to_device(target.device()));
            }
            Ok(())
        })
    }

    /// Output probabilities `[T,N,1]` for inputs `[T,N,2]`.
    pub fn forward(&self, xs: &Tensor, feedback: Feedback) -> Tensor {
        let (steps, n, _) = xs.size3().expect("inputs must be [T, N, 2]");
        let device = xs.device();
        match self.cell {
            Cell::Jordan => {
                let y0 = match feedback {
                    Feedback::Trained => {
                        let y_t = self.var("y_t");
                        assert_eq!(y_t.size()[0], n, "trained feedback y_t belongs to the training samples");
                        y_t.shallow_clone()
                    }
                    Feedback::Zero => Tensor::zeros([n, 1], (Kind::Double, device)),
                };
                self.cell_weights().unroll(xs, y0)
            }
            Cell::Elman => {
                let h0 = Tensor::zeros([n, self.hidden as i64], (Kind::Double, device));
                self.cell_weights().unroll(xs, h0)
            }
            Cell::Gru | Cell::Lstm => {
                let hs = match self.recurrent.as_ref().expect("module cell") {
                    // hs: [T,N,H]
                    Recurrent::Gru(gru) => {
                        let h0 = Tensor::zeros([1, n, self.hidden as i64], (Kind::Double, device));
                        gru.seq_init(xs, &nn::GRUState(h0)).0
                    }
                    Recurrent::Lstm(lstm) => {
                        let h0 = Tensor::zeros([1, n, self.hidden as i64], (Kind::Double, device));
                        lstm.seq_init(xs, &nn::LSTMState((h0.shallow_clone(), h0))).0
                    }
                };
                debug_assert_eq!(hs.size()[0], steps);
                hs.matmul(self.var("w_f")).g_add(self.var("b_f")).sigmoid()
            }
        }
    }

    /// Shallow copies of a jordan or elman cell's weights, which can move to
    /// another thread; gradients still reach the model's variables.
    pub fn cell_weights(&self) -> CellWeights {
        assert!(self.cell.unrolled_by_hand(), "only jordan and elman unroll by hand");
        let take = |name: &str| self.var(name).shallow_clone();
        CellWeights {
            jordan: self.cell == Cell::Jordan,
            w_h: take("w_h"),
            u_h: take("u_h"),
            b_h: take("b_h"),
            w_f: take("w_f"),
            b_f: take("b_f"),
        }
    }
}

/// The weights of a jordan or elman cell.
pub struct CellWeights {
    jordan: bool,
    w_h: Tensor,
    u_h: Tensor,
    b_h: Tensor,
    w_f: Tensor,
    b_f: Tensor,
}

impl CellWeights {
    /// Outputs `[T,N,1]` for inputs `[T,N,2]`, starting from `state0`: the
    /// first feedback `[N,1]` (jordan) or hidden state `[N,H]` (elman).
    pub fn unroll(&self, xs: &Tensor, state0: Tensor) -> Tensor {
        let (w_h, u_h, b_h, w_f, b_f) = (&self.w_h, &self.u_h, &self.b_h, &self.w_f, &self.b_f);

        // x·w_h for every step in one product; the inputs are 0/1 bits, so
        // each entry is rounded once either way. xws: [T,N,H]
        let xws = xs.matmul(w_h).unbind(0);

        let mut state = state0;
        let mut ys = Vec::with_capacity(xws.len());
        for xw in &xws {
            // Same addition order as the notebook: (x·w_h + state·u_h) + b_h.
            // The state·u_h product is a matmul as in the notebook: its
            // backward is a GEMM, where a broadcast multiply made training
            // twice as slow. Fusing the additions into addmm, adding b_h once
            // for all steps or keeping samples last measured no faster.
            let hs = (xw + state.matmul(u_h) + b_h).sigmoid();
            let y = (hs.matmul(w_f) + b_f).sigmoid();
            state = if self.jordan { y.shallow_clone() } else { hs };
            ys.push(y);
        }
        Tensor::stack(&ys, 0) // [T,N,1]
    }
}

/// Mean squared error over all steps and samples, the notebook's loss.
pub fn mse(outputs: &Tensor, targets: &Tensor) -> Tensor {
    outputs.mse_loss(targets, tch::Reduction::Mean)
}

/// Checks that `values` contains exactly the model's variable names.
fn check_names(model: &Model, values: &BTreeMap<String, Tensor>, source: &str) -> Result<()> {
    let missing: Vec<&String> = model.names.iter().filter(|n| !values.contains_key(*n)).collect();
    if !missing.is_empty() {
        bail!(
            "{source}: missing tensor(s) {missing:?}; a {} cell needs {:?}",
            model.cell.name(),
            model.names
        );
    }
    let extra: Vec<&String> = values.keys().filter(|n| !model.names.contains(n)).collect();
    if !extra.is_empty() {
        bail!(
            "{source}: unexpected tensor(s) {extra:?}; a {} cell has only {:?}",
            model.cell.name(),
            model.names
        );
    }
    Ok(())
}

/// Works out the cell, hidden size and training sample count from saved
/// variables, so weights load without the run's config.
pub fn infer_architecture(values: &BTreeMap<String, Tensor>, source: &str) -> Result<(Cell, usize, usize)> {
    let w_f = values
        .get("w_f")
        .with_context(|| format!("{source}: missing tensor 'w_f' (the output weights [H,1])"))?;
    let w_f_shape = w_f.size();
    if w_f_shape.len() != 2 || w_f_shape[1] != 1 || w_f_shape[0] < 1 {
        bail!("{source}: tensor 'w_f' has shape {w_f_shape:?}; expected [H, 1]");
    }
    let hidden = w_f_shape[0] as usize;
    let cell = if values.keys().any(|k| k.starts_with("gru.")) {
        Cell::Gru
    } else if values.keys().any(|k| k.starts_with("lstm.")) {
        Cell::Lstm
    } else {
        let u_h = values
            .get("u_h")
            .with_context(|| format!("{source}: missing tensor 'u_h' (the recurrent weights)"))?;
        match u_h.size().first() {
            Some(1) if hidden != 1 || values.contains_key("y_t") => Cell::Jordan,
            Some(&rows) if rows as usize == hidden => Cell::Elman,
            _ => bail!("{source}: tensor 'u_h' has shape {:?}; expected [1, {hidden}] or [{hidden}, {hidden}]", u_h.size()),
        }
    };
    let samples = match values.get("y_t") {
        Some(y_t) if cell == Cell::Jordan => y_t.size().first().copied().unwrap_or(0) as usize,
        _ => 0,
    };
    Ok((cell, hidden, samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;

    #[test]
    fn truncated_normal_stays_within_two() {
        let mut rng = StdRng::seed_from_u64(3);
        let values = truncated_normal(&mut rng, 20_000);
        assert!(values.iter().all(|v| v.abs() <= 2.0));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        // A standard normal cut at two standard deviations has variance 0.774.
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 0.774).abs() < 0.03, "variance {var}");
    }

    #[test]
    fn shapes_follow_the_notebook() {
        let model = Model::new(Cell::Jordan, 3, 10, Device::Cpu, 0).unwrap();
        let shapes: BTreeMap<String, Vec<i64>> = model.shapes().into_iter().collect();
        assert_eq!(shapes["w_h"], vec![2, 3]);
        assert_eq!(shapes["u_h"], vec![1, 3]);
        assert_eq!(shapes["b_h"], vec![1, 3]);
        assert_eq!(shapes["w_f"], vec![3, 1]);
        assert_eq!(shapes["b_f"], vec![1, 1]);
        assert_eq!(shapes["y_t"], vec![10, 1]);
        assert_eq!(model.names(), ["w_f", "w_h", "u_h", "b_f", "b_h", "y_t"]);
        for v in model.variables() {
            assert_eq!(v.kind(), Kind::Double);
            assert!(v.requires_grad());
        }
    }

    #[test]
    fn every_cell_unrolls_to_t_by_n() {
        let data = Dataset::draw_seeded(10, 6, 8, 1).unwrap();
        let (xs, ys) = data.tensors(Device::Cpu);
        for cell in [Cell::Jordan, Cell::Elman, Cell::Gru, Cell::Lstm] {
            let model = Model::new(cell, 4, 10, Device::Cpu, 1).unwrap();
            for feedback in [Feedback::Trained, Feedback::Zero] {
                let out = model.forward(&xs, feedback);
                assert_eq!(out.size(), vec![8, 10, 1], "{cell:?}");
                assert_eq!(out.kind(), Kind::Double);
                let loss = mse(&out, &ys).double_value(&[]);
                assert!(loss > 0.0, "{cell:?} loss {loss}");
                assert!(loss < 1.0, "{cell:?} loss {loss}");
            }
        }
    }

    #[test]
    fn infer_architecture_reads_cell_and_sizes() {
        for (cell, hidden) in [(Cell::Jordan, 3), (Cell::Elman, 3), (Cell::Gru, 5), (Cell::Lstm, 2), (Cell::Elman, 1)] {
            let model = Model::new(cell, hidden, 7, Device::Cpu, 0).unwrap();
            let values: BTreeMap<String, Tensor> = model.named_values().into_iter().collect();
            let samples = if cell == Cell::Jordan { 7 } else { 0 };
            assert_eq!(infer_architecture(&values, "test").unwrap(), (cell, hidden, samples));
        }
    }
}
