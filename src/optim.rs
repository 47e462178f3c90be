//! Adam, two ways: TF1's `AdamOptimizer` rebuilt exactly, and libtorch's own.
//!
//! TF1's update for step t (both powers start at β and are multiplied by β
//! after each step):
//!     lr_t = lr·sqrt(1 − β2^t) / (1 − β1^t)
//!     m ← m + (g − m)(1 − β1)
//!     v ← v + (g² − v)(1 − β2)
//!     θ ← θ − m·lr_t / (sqrt(v) + ε)
//! TF1 keeps lr, β1, β2 and ε as float32 constants and β1^t, β2^t as float32
//! variables, cast to float64 only inside the update. libtorch's Adam differs
//! (ε added to sqrt(v̂) after bias correction), which matters here: the
//! per-sample gradients of `y_t` are near 1e-6, close to where ε takes over.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// The Adam update rule a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdamKind {
    /// TF1 `AdamOptimizer`'s update rule, constant for constant.
    Tf,
    /// libtorch's `torch::optim::Adam`.
    Torch,
}

pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
pub const EPSILON: f32 = 1e-8;

/// TF1's Adam over a fixed list of float64 variables.
pub struct TfAdam {
    lr: f32,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// β1^t and β2^t for the next step, as TF1's float32 accumulators.
    pub beta1_power: f32,
    pub beta2_power: f32,
    pub steps: u64,
}

/// Moment estimates and powers, for checkpoints.
pub struct AdamState {
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub beta1_power: f32,
    pub beta2_power: f32,
    pub steps: u64,
}

impl TfAdam {
    pub fn new(lr: f64, vars: &[Tensor]) -> Self {
        let zeros = |v: &Tensor| v.zeros_like().detach();
        Self {
            lr: lr as f32,
            m: vars.iter().map(zeros).collect(),
            v: vars.iter().map(zeros).collect(),
            beta1_power: BETA1,
            beta2_power: BETA2,
            steps: 0,
        }
    }

    /// Returns the float64 values TF1 uses for (lr, β1, β2, ε).
    pub fn constants(&self) -> (f64, f64, f64, f64) {
        (self.lr as f64, BETA1 as f64, BETA2 as f64, EPSILON as f64)
    }

    /// Applies one update to `vars` from `grads`, which match in order and shape.
    pub fn apply(&mut self, vars: &[Tensor], grads: &[Tensor]) {
        assert_eq!(vars.len(), self.m.len(), "variable count changed");
        assert_eq!(grads.len(), self.m.len(), "one gradient per variable");
        let (lr, beta1, beta2, eps) = self.constants();
        let lr_t = lr * (1.0 - self.beta2_power as f64).sqrt() / (1.0 - self.beta1_power as f64);
        let (c1, c2) = (1.0 - beta1, 1.0 - beta2);

        for ((var, grad), (m, v)) in vars.iter().zip(grads).zip(self.m.iter().zip(&self.v)) {
            if var.device() == Device::Cpu && [var, grad, m, v].iter().all(|t| is_plain_f64(t)) {
                // SAFETY: the four tensors are distinct, contiguous float64 CPU
                // tensors of the same length (checked above and below), and no
                // autograd graph uses them while the update runs.
                unsafe { update_cpu(var, grad, m, v, [lr_t, c1, c2, eps]) };
            } else {
                update_tensors(var, grad, m, v, [lr_t, c1, c2, eps]);
            }
        }

        // TF1 multiplies the float32 powers by float32 β after the update.
        self.beta1_power *= BETA1;
        self.beta2_power *= BETA2;
        self.steps += 1;
    }

    pub fn state(&self) -> AdamState {
        AdamState {
            m: self.m.iter().map(|t| t.copy()).collect(),
            v: self.v.iter().map(|t| t.copy()).collect(),
            beta1_power: self.beta1_power,
            beta2_power: self.beta2_power,
            steps: self.steps,
        }
    }

    pub fn restore(&mut self, state: AdamState) -> Result<()> {
        if state.m.len() != self.m.len() || state.v.len() != self.v.len() {
            bail!("optimizer state has {} moment tensors, the model needs {}", state.m.len(), self.m.len());
        }
        for (saved, own) in state.m.iter().zip(&self.m).chain(state.v.iter().zip(&self.v)) {
            if saved.size() != own.size() {
                bail!("optimizer moment of shape {:?} does not match variable shape {:?}", saved.size(), own.size());
            }
        }
        let device = self.m.first().map(|t| t.device()).unwrap_or(Device::Cpu);
        self.m = state.m.into_iter().map(|t| t.to_kind(Kind::Double).to_device(device)).collect();
        self.v = state.v.into_iter().map(|t| t.to_kind(Kind::Double).to_device(device)).collect();
        self.beta1_power = state.beta1_power;
        self.beta2_power = state.beta2_power;
        self.steps = state.steps;
        Ok(())
    }
}

pub fn is_plain_f64(t: &Tensor) -> bool {
    t.kind() == Kind::Double && t.is_contiguous() && t.device() == Device::Cpu
}

/// Borrows the memory of a contiguous float64 CPU tensor, without a copy.
///
/// # Safety
/// The tensor must outlive the slice, and nothing may write to it (through
/// libtorch or another slice) while the slice is alive.
pub unsafe fn f64_slice(t: &Tensor) -> &[f64] {
    assert!(is_plain_f64(t), "expected a contiguous float64 CPU tensor");
    std::slice::from_raw_parts(t.data_ptr() as *const f64, t.numel())
}

/// Borrows the memory of a contiguous float64 CPU tensor mutably, without a copy.
///
/// # Safety
/// As [`f64_slice`], and no other reference to the memory may be alive.
#[allow(clippy::mut_from_ref)]
pub unsafe fn f64_slice_mut(t: &Tensor) -> &mut [f64] {
    assert!(is_plain_f64(t), "expected a contiguous float64 CPU tensor");
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f64, t.numel())
}

/// Applies the update in plain Rust over the tensors' memory, in one pass without temporaries.
/// Rust does not fuse a·b + c into one rounding, so each operation rounds as
/// TF1's Eigen expression does.
unsafe fn update_cpu(var: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, [lr_t, c1, c2, eps]: [f64; 4]) {
    let (theta, g, m, v) = (f64_slice_mut(var), f64_slice(grad), f64_slice_mut(m), f64_slice_mut(v));
    let n = theta.len();
    assert_eq!(g.len(), n, "gradient and variable differ in length");
    assert_eq!(m.len(), n, "first moment and variable differ in length");
    assert_eq!(v.len(), n, "second moment and variable differ in length");
    for i in 0..n {
        m[i] += (g[i] - m[i]) * c1;
        v[i] += (g[i] * g[i] - v[i]) * c2;
        theta[i] -= m[i] * lr_t / (v[i].sqrt() + eps);
    }
}

/// Applies the same update with libtorch operations, for CUDA or non-contiguous tensors.
// NOTE: a test checks this path against the CPU loop, but only on the CPU;
// training on a CUDA device has not been run.
fn update_tensors(var: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, [lr_t, c1, c2, eps]: [f64; 4]) {
    tch::no_grad(|| {
        let (mut var, mut m, mut v) = (var.shallow_clone(), m.shallow_clone(), v.shallow_clone());
        let _ = m.g_add_(&((grad - &m) * c1));
        let _ = v.g_add_(&((grad * grad - &v) * c2));
        let _ = var.g_sub_(&((&m * lr_t) / (v.sqrt() + eps)));
    });
}

/// The optimizer a run trains with.
pub enum Optimizer {
    Tf(TfAdam),
    Torch(nn::Optimizer),
}

impl Optimizer {
    pub fn new(kind: AdamKind, lr: f64, vs: &nn::VarStore, vars: &[Tensor]) -> Result<Self> {
        Ok(match kind {
            AdamKind::Tf => Optimizer::Tf(TfAdam::new(lr, vars)),
            AdamKind::Torch => Optimizer::Torch(nn::Adam::default().build(vs, lr)?),
        })
    }

    /// Backpropagates `loss` to `vars` and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor, vars: &[Tensor]) {
        match self {
            Optimizer::Tf(adam) => {
                let grads = Tensor::run_backward(&[loss], vars, false, false);
                adam.apply(vars, &grads);
            }
            Optimizer::Torch(opt) => opt.backward_step(loss),
        }
    }

    /// Applies one update from gradients computed elsewhere (the fused engine).
    pub fn step_with_grads(&mut self, vars: &[Tensor], grads: &[Tensor]) {
        match self {
            Optimizer::Tf(adam) => adam.apply(vars, grads),
            Optimizer::Torch(opt) => {
                for (var, grad) in vars.iter().zip(grads) {
                    let mut current = var.grad();
                    if current.defined() {
                        tch::no_grad(|| current.copy_(grad));
                    } else {
                        // First step: let autograd allocate the .grad tensors.
                        let _ = (var * grad.detach()).sum(Kind::Double).backward();
                    }
                }
                opt.step();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_float32_rounded() {
        let adam = TfAdam::new(0.04, &[]);
        let (lr, beta1, beta2, eps) = adam.constants();
        assert_eq!(lr, 0.03999999910593033);
        assert_eq!(beta1, 0.8999999761581421);
        assert_eq!(beta2, 0.9990000128746033);
        assert_eq!(eps, 9.99999993922529e-09);
    }

    #[test]
    fn first_step_moves_by_about_lr() {
        // With m and v at zero, TF1's first step is lr·g·(1−β1)/(sqrt(g²(1−β2))·(1−β1)/sqrt(1−β2) + ε) ≈ lr·sign(g).
        let var = Tensor::from_slice(&[1.0f64, -2.0, 0.5]);
        let grad = Tensor::from_slice(&[0.3f64, -4.0, 1e-3]);
        let mut adam = TfAdam::new(0.04, &[var.shallow_clone()]);
        adam.apply(&[var.shallow_clone()], &[grad]);
        let moved = Vec::<f64>::try_from(&var).unwrap();
        assert!((moved[0] - (1.0 - 0.04)).abs() < 1e-6, "{moved:?}");
        assert!((moved[1] - (-2.0 + 0.04)).abs() < 1e-6, "{moved:?}");
        // With g = 1e-3, ε is 3e-4 of sqrt(v), so the step falls short of lr by that fraction.
        assert!((moved[2] - (0.5 - 0.04)).abs() < 2e-5, "{moved:?}");
        assert_eq!(adam.beta1_power, 0.9f32 * 0.9f32);
    }

    #[test]
    fn cpu_loop_matches_tensor_ops_bitwise() {
        let vals: Vec<f64> = (0..50).map(|i| ((i * 37 % 17) as f64 - 8.0) / 3.0).collect();
        let grads: Vec<f64> = (0..50).map(|i| ((i * 11 % 13) as f64 - 6.0) * 1e-3).collect();
        let a = Tensor::from_slice(&vals);
        let b = Tensor::from_slice(&vals);
        let g = Tensor::from_slice(&grads);
        let mut fast = TfAdam::new(0.04, &[a.shallow_clone()]);
        let mut slow = TfAdam::new(0.04, &[b.shallow_clone()]);
        for step in 0..5 {
            let g = &g * (1.0 + step as f64);
            fast.apply(&[a.shallow_clone()], &[g.shallow_clone()]);
            // A strided view forces the tensor-op path.
            let strided_b = b.shallow_clone();
            let lr_t = {
                let (lr, ..) = slow.constants();
                lr * (1.0 - slow.beta2_power as f64).sqrt() / (1.0 - slow.beta1_power as f64)
            };
            update_tensors(&strided_b, &g, &slow.m[0], &slow.v[0], [lr_t, 1.0 - BETA1 as f64, 1.0 - BETA2 as f64, EPSILON as f64]);
            slow.beta1_power *= BETA1;
            slow.beta2_power *= BETA2;
        }
        let diff = (&a - &b).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "the two update paths round differently");
    }
}
