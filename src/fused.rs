//! A hand-derived forward pass and backpropagation through time for the
//! jordan and elman cells, in plain Rust over the whole batch.
//!
//! Samples are split into one contiguous shard per thread and walked in
//! blocks of `BLOCK` samples. Blocks are stored structure-of-arrays, so every
//! inner loop runs over samples and the compiler vectorises it. It uses
//! AVX-512 or AVX2 with FMA where the CPU has them, chosen at run time, so
//! results can differ in the last bits between machines. `exp` is a
//! branch-free polynomial for the same reason. Shards are summed in a fixed order, so a run is
//! reproducible for a given thread count and CPU. Its gradients match libtorch
//! autograd's to about 1e-15 (a test checks 1e-12).

use std::ops::Range;

use anyhow::{bail, Result};
use tch::{Device, Tensor};

use crate::data::Dataset;
use crate::model::{Cell, Model};
use crate::optim;

/// Samples per block: the block's activations (T·(H+1)·BLOCK values) stay in cache.
const BLOCK: usize = 256;

/// Read-only parameter values, copied out of the variables each iteration.
#[derive(Clone, Default)]
struct Params {
    w_h: Vec<f64>, // [2,H]
    u_h: Vec<f64>, // [1,H] (jordan) or [H,H] (elman)
    b_h: Vec<f64>, // [H]
    w_f: Vec<f64>, // [H]
    b_f: f64,
}

/// Gradient sums of the shared parameters, and the summed squared error.
#[derive(Clone, Default)]
struct Sums {
    w_h: Vec<f64>,
    u_h: Vec<f64>,
    b_h: Vec<f64>,
    w_f: Vec<f64>,
    b_f: f64,
    squared_error: f64,
}

impl Sums {
    fn zeros(h: usize, u_rows: usize) -> Self {
        Self { w_h: vec![0.0; 2 * h], u_h: vec![0.0; u_rows * h], b_h: vec![0.0; h], w_f: vec![0.0; h], ..Default::default() }
    }

    fn add(&mut self, other: &Sums) {
        for (a, b) in [(&mut self.w_h, &other.w_h), (&mut self.u_h, &other.u_h), (&mut self.b_h, &other.b_h), (&mut self.w_f, &other.w_f)] {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        self.b_f += other.b_f;
        self.squared_error += other.squared_error;
    }
}

/// Per-shard buffers, reused every iteration.
struct Scratch {
    h: Vec<f64>,  // [T][H][BLOCK]
    y: Vec<f64>,  // [T][BLOCK]
    state_grad: Vec<f64>, // [H or 1][BLOCK]
    next_grad: Vec<f64>,  // [H or 1][BLOCK]
    dz: Vec<f64>,  // [BLOCK]
    da: Vec<f64>,  // [H][BLOCK]
    sums: Sums,
}

/// The fused engine for one dataset and model shape.
pub struct Engine {
    kernel: Kernel,
    scratch: Vec<Scratch>,
    pool: rayon::ThreadPool,
    /// One gradient tensor per variable, in the model's order.
    grads: Vec<Tensor>,
    names: Vec<String>,
    feedback_grad: Vec<f64>,
}

/// The data and shape the per-shard work reads; shared across threads.
struct Kernel {
    cell: Cell,
    hidden: usize,
    steps: usize,
    samples: usize,
    /// Input and target bits, [T][N] each.
    x1: Vec<f64>,
    x2: Vec<f64>,
    target: Vec<f64>,
    shards: Vec<Range<usize>>,
    avx2: bool,
    avx512: bool,
}

impl Engine {
    pub fn new(model: &Model, data: &Dataset, threads: usize) -> Result<Self> {
        if !model.cell.unrolled_by_hand() {
            bail!("the fused engine supports the jordan and elman cells only, not {}", model.cell.name());
        }
        if model.vs.device() != Device::Cpu {
            bail!("the fused engine runs on the CPU; use --device cpu or --engine autograd");
        }
        let (t, n, h) = (data.bits, data.len(), model.hidden);
        let mut x1 = vec![0.0; t * n];
        let mut x2 = vec![0.0; t * n];
        let mut target = vec![0.0; t * n];
        for step in 0..t {
            for i in 0..n {
                x1[step * n + i] = ((data.x1[i] >> step) & 1) as f64;
                x2[step * n + i] = ((data.x2[i] >> step) & 1) as f64;
                target[step * n + i] = ((data.y[i] >> step) & 1) as f64;
            }
        }
        let threads = threads.clamp(1, n.max(1));
        let shards: Vec<Range<usize>> = (0..threads).map(|k| k * n / threads..(k + 1) * n / threads).collect();
        let u_rows = if model.cell == Cell::Jordan { 1 } else { h };
        let scratch = (0..threads)
            .map(|_| Scratch {
                h: vec![0.0; t * h * BLOCK],
                y: vec![0.0; t * BLOCK],
                state_grad: vec![0.0; h * BLOCK],
                next_grad: vec![0.0; h * BLOCK],
                dz: vec![0.0; BLOCK],
                da: vec![0.0; h * BLOCK],
                sums: Sums::zeros(h, u_rows),
            })
            .collect();
        // The calling thread runs one shard, so the pool needs one thread fewer.
        let pool = rayon::ThreadPoolBuilder::new().num_threads((threads - 1).max(1)).build()?;
        let grads = model.variables().iter().map(|v| v.detach().zeros_like()).collect();
        let kernel = Kernel { cell: model.cell, hidden: h, steps: t, samples: n, x1, x2, target, shards, avx2: detect_avx2(), avx512: detect_avx512() };
        Ok(Self {
            kernel,
            scratch,
            pool,
            grads,
            names: model.names().to_vec(),
            feedback_grad: vec![0.0; if model.cell == Cell::Jordan { n } else { 0 }],
        })
    }

    /// Mean squared error of the current variables and its gradient with
    /// respect to each of them (in the model's variable order).
    pub fn loss_and_grads(&mut self, vars: &[Tensor]) -> (f64, &[Tensor]) {
        let named: Vec<(&str, &Tensor)> = self.names.iter().map(String::as_str).zip(vars).collect();
        // SAFETY: the variables are contiguous float64 CPU tensors (checked
        // inside f64_slice) that nothing writes while the kernel reads them.
        let read = |name: &str| -> &[f64] {
            let t = named.iter().find(|(n, _)| *n == name).expect("variable present").1;
            unsafe { optim::f64_slice(t) }
        };
        let params = Params {
            w_h: read("w_h").to_vec(),
            u_h: read("u_h").to_vec(),
            b_h: read("b_h").to_vec(),
            w_f: read("w_f").to_vec(),
            b_f: read("b_f")[0],
        };
        let kernel = &self.kernel;
        let feedback: &[f64] = if kernel.cell == Cell::Jordan { read("y_t") } else { &[] };

        // Forward and backward per shard, in parallel.
        let this = kernel;
        let scratch = &mut self.scratch;
        let feedback_grad = &mut self.feedback_grad;
        {
            let mut grad_slices: Vec<&mut [f64]> = Vec::new();
            let mut rest = feedback_grad.as_mut_slice();
            for shard in &this.shards {
                let take = if this.cell == Cell::Jordan { shard.len() } else { 0 };
                let (head, tail) = rest.split_at_mut(take);
                grad_slices.push(head);
                rest = tail;
            }
            // The calling thread runs the first shard itself, which saves a
            // wake-up per iteration; the pool runs the others.
            let mut jobs = scratch.iter_mut().zip(&this.shards).zip(grad_slices);
            let (params, feedback) = (&params, &feedback);
            let ((first_scratch, first_shard), first_grad) = jobs.next().expect("at least one shard");
            self.pool.in_place_scope(|s| {
                for ((scratch, shard), grad) in jobs {
                    s.spawn(move |_| this.run_shard(shard.clone(), params, feedback, grad, scratch));
                }
                this.run_shard(first_shard.clone(), params, feedback, first_grad, first_scratch);
            });
        }

        // Sum the shards in a fixed order.
        let u_rows = if kernel.cell == Cell::Jordan { 1 } else { kernel.hidden };
        let mut total = Sums::zeros(kernel.hidden, u_rows);
        for s in self.scratch.iter() {
            total.add(&s.sums);
        }

        let mean = total.squared_error / (kernel.steps * kernel.samples) as f64;
        for (grad, name) in self.grads.iter_mut().zip(&self.names) {
            let values: &[f64] = match name.as_str() {
                "w_h" => &total.w_h,
                "u_h" => &total.u_h,
                "b_h" => &total.b_h,
                "w_f" => &total.w_f,
                "b_f" => std::slice::from_ref(&total.b_f),
                "y_t" => &self.feedback_grad,
                other => unreachable!("fused engine has no variable {other}"),
            };
            // SAFETY: the gradient tensors are contiguous float64 CPU tensors
            // that only this engine writes, and no other slice of them is alive.
            unsafe { optim::f64_slice_mut(grad) }.copy_from_slice(values);
        }
        (mean, &self.grads)
    }

}

impl Kernel {
    fn run_shard(&self, shard: Range<usize>, params: &Params, feedback: &[f64], grad: &mut [f64], scratch: &mut Scratch) {
        let u_rows = if self.cell == Cell::Jordan { 1 } else { self.hidden };
        scratch.sums = Sums::zeros(self.hidden, u_rows);
        let mut start = shard.start;
        while start < shard.end {
            let len = BLOCK.min(shard.end - start);
            let grad_block = if self.cell == Cell::Jordan {
                &mut grad[start - shard.start..start - shard.start + len]
            } else {
                &mut [][..]
            };
            if self.avx512 {
                // SAFETY: detect_avx512 confirmed the CPU supports AVX-512F, AVX2 and FMA.
                unsafe { self.block_avx512(start, len, params, feedback, grad_block, scratch) }
            } else if self.avx2 {
                // SAFETY: detect_avx2 confirmed the CPU supports AVX2 and FMA.
                unsafe { self.block_avx2(start, len, params, feedback, grad_block, scratch) }
            } else {
                self.block::<false, false>(start, len, params, feedback, grad_block, scratch)
            }
            start += len;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2(&self, start: usize, len: usize, params: &Params, feedback: &[f64], grad: &mut [f64], scratch: &mut Scratch) {
        if len == BLOCK {
            self.block::<true, true>(start, len, params, feedback, grad, scratch)
        } else {
            self.block::<true, false>(start, len, params, feedback, grad, scratch)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn block_avx512(&self, start: usize, len: usize, params: &Params, feedback: &[f64], grad: &mut [f64], scratch: &mut Scratch) {
        if len == BLOCK {
            self.block::<true, true>(start, len, params, feedback, grad, scratch)
        } else {
            self.block::<true, false>(start, len, params, feedback, grad, scratch)
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn block_avx512(&self, start: usize, len: usize, params: &Params, feedback: &[f64], grad: &mut [f64], scratch: &mut Scratch) {
        self.block::<false, false>(start, len, params, feedback, grad, scratch)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn block_avx2(&self, start: usize, len: usize, params: &Params, feedback: &[f64], grad: &mut [f64], scratch: &mut Scratch) {
        self.block::<false, false>(start, len, params, feedback, grad, scratch)
    }

    /// Forward and backward for samples `start..start+len`, adding into
    /// `scratch.sums` and writing the initial-feedback gradients into `grad`.
    #[inline(always)]
    /// `FULL` blocks have exactly `BLOCK` samples, a constant the compiler
    /// unrolls and vectorises without remainder loops.
    fn block<const FMA: bool, const FULL: bool>(&self, start: usize, len: usize, p: &Params, feedback: &[f64], grad: &mut [f64], scratch: &mut Scratch) {
        let len = if FULL { BLOCK } else { len };
        let (t_steps, n, h) = (self.steps, self.samples, self.hidden);
        let jordan = self.cell == Cell::Jordan;
        let Scratch { h: hs, y: ys, state_grad, next_grad, dz, da, sums } = scratch;
        let at = |t: usize| t * n + start..t * n + start + len;

        // forward: hs[t][j][b], ys[t][b]
        for t in 0..t_steps {
            let (x1, x2) = (&self.x1[at(t)], &self.x2[at(t)]);
            for j in 0..h {
                let (w0, w1, bj) = (p.w_h[j], p.w_h[h + j], p.b_h[j]);
                let (before, rest) = hs.split_at_mut((t * h + j) * BLOCK);
                let out = &mut rest[..len];
                if jordan {
                    let u = p.u_h[j];
                    let prev: &[f64] = if t == 0 { &feedback[start..start + len] } else { &ys[(t - 1) * BLOCK..(t - 1) * BLOCK + len] };
                    for b in 0..len {
                        out[b] = sigmoid::<FMA>(((x1[b] * w0 + x2[b] * w1) + prev[b] * u) + bj);
                    }
                } else {
                    for b in 0..len {
                        out[b] = x1[b] * w0 + x2[b] * w1;
                    }
                    if t > 0 {
                        // The previous hidden state times u_h, summed over k in order.
                        let mut acc = [0.0f64; BLOCK];
                        for k in 0..h {
                            let prev = &before[((t - 1) * h + k) * BLOCK..((t - 1) * h + k) * BLOCK + len];
                            let u = p.u_h[k * h + j];
                            if k == 0 {
                                for b in 0..len {
                                    acc[b] = prev[b] * u;
                                }
                            } else {
                                for b in 0..len {
                                    acc[b] += prev[b] * u;
                                }
                            }
                        }
                        for b in 0..len {
                            out[b] += acc[b];
                        }
                    }
                    for b in 0..len {
                        out[b] = sigmoid::<FMA>(out[b] + bj);
                    }
                }
            }
            let y = &mut ys[t * BLOCK..t * BLOCK + len];
            let hs_t = &hs[t * h * BLOCK..(t + 1) * h * BLOCK];
            // z = h·w_f summed over j in order, then + b_f; loops run over samples.
            for b in 0..len {
                y[b] = hs_t[b] * p.w_f[0];
            }
            for j in 1..h {
                let hj = &hs_t[j * BLOCK..j * BLOCK + len];
                let wf = p.w_f[j];
                for b in 0..len {
                    y[b] += hj[b] * wf;
                }
            }
            for b in 0..len {
                y[b] = sigmoid::<FMA>(y[b] + p.b_f);
            }
        }

        // backward through time
        let scale = 2.0 * (1.0 / (t_steps * n) as f64);
        let rows = if jordan { 1 } else { h };
        state_grad[..rows * BLOCK].iter_mut().for_each(|g| *g = 0.0);
        for t in (0..t_steps).rev() {
            let (x1, x2, target) = (&self.x1[at(t)], &self.x2[at(t)], &self.target[at(t)]);
            let y = &ys[t * BLOCK..t * BLOCK + len];
            let hs_t = &hs[t * h * BLOCK..(t + 1) * h * BLOCK];

            // Output layer: dz = dL/dz for y = sigmoid(z).
            let dz = &mut dz[..len];
            for b in 0..len {
                let diff = y[b] - target[b];
                let mut dy = scale * diff;
                if jordan {
                    dy += state_grad[b];
                }
                dz[b] = dy * y[b] * (1.0 - y[b]);
            }
            sums.squared_error += squared_distance(y, target);
            sums.b_f += sum(dz);
            for j in 0..h {
                sums.w_f[j] += dot(&hs_t[j * BLOCK..j * BLOCK + len], dz);
            }

            // Hidden layer: da = dL/da for h = sigmoid(a).
            for j in 0..h {
                let hj = &hs_t[j * BLOCK..j * BLOCK + len];
                let daj = &mut da[j * BLOCK..j * BLOCK + len];
                let wf = p.w_f[j];
                if jordan {
                    for b in 0..len {
                        daj[b] = dz[b] * wf * hj[b] * (1.0 - hj[b]);
                    }
                } else {
                    let carried = &state_grad[j * BLOCK..j * BLOCK + len];
                    for b in 0..len {
                        daj[b] = (dz[b] * wf + carried[b]) * hj[b] * (1.0 - hj[b]);
                    }
                }
                sums.w_h[j] += dot(x1, daj);
                sums.w_h[h + j] += dot(x2, daj);
                sums.b_h[j] += sum(daj);
            }

            // Recurrent weights and the gradient carried to step t-1.
            if jordan {
                let prev: &[f64] = if t == 0 { &feedback[start..start + len] } else { &ys[(t - 1) * BLOCK..(t - 1) * BLOCK + len] };
                let next = &mut next_grad[..len];
                next.iter_mut().for_each(|g| *g = 0.0);
                for j in 0..h {
                    let daj = &da[j * BLOCK..j * BLOCK + len];
                    let u = p.u_h[j];
                    for b in 0..len {
                        next[b] += daj[b] * u;
                    }
                    sums.u_h[j] += dot(prev, daj);
                }
            } else {
                for k in 0..h {
                    let next = &mut next_grad[k * BLOCK..k * BLOCK + len];
                    next.iter_mut().for_each(|g| *g = 0.0);
                    for j in 0..h {
                        let daj = &da[j * BLOCK..j * BLOCK + len];
                        let u = p.u_h[k * h + j];
                        for b in 0..len {
                            next[b] += daj[b] * u;
                        }
                        if t > 0 {
                            let prev = &hs[((t - 1) * h + k) * BLOCK..((t - 1) * h + k) * BLOCK + len];
                            sums.u_h[k * h + j] += dot(prev, daj);
                        }
                    }
                }
            }
            std::mem::swap(state_grad, next_grad);
        }
        if jordan {
            grad.copy_from_slice(&state_grad[..len]);
        }
    }
}

/// Lanes of the reductions below: partial sums LLVM can keep in vector registers.
const LANES: usize = 8;

/// Σ a·b with `LANES` partial sums combined in a fixed order.
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    reduce(a.len(), |i| a[i] * b[i])
}

#[inline(always)]
fn sum(a: &[f64]) -> f64 {
    reduce(a.len(), |i| a[i])
}

/// Σ (a − b)².
#[inline(always)]
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    reduce(a.len(), |i| (a[i] - b[i]) * (a[i] - b[i]))
}

#[inline(always)]
fn reduce(len: usize, term: impl Fn(usize) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let full = len / LANES * LANES;
    for chunk in (0..full).step_by(LANES) {
        for (lane, acc) in lanes.iter_mut().enumerate() {
            *acc += term(chunk + lane);
        }
    }
    let mut tail = 0.0;
    for i in full..len {
        tail += term(i);
    }
    let halves = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    ((halves[0] + halves[2]) + (halves[1] + halves[3])) + tail
}

fn detect_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        detect_avx2() && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn detect_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
fn sigmoid<const FMA: bool>(x: f64) -> f64 {
    1.0 / (1.0 + exp::<FMA>(-x))
}

/// e^x without branches, so loops calling it vectorise. Cody–Waite reduction
/// x = k·ln2 + r with |r| ≤ ln2/2, then a degree-11 polynomial in r whose
/// relative error there, evaluated in float64, is below 2e-16 (scripts/fit_exp.py
/// fits it by least squares at Chebyshev nodes in 60-digit arithmetic and
/// prints that bound). Inputs are clamped to [-708, 709], where 2^k stays a
/// normal number.
#[inline(always)]
pub fn exp<const FMA: bool>(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that k·LN2_HI is exact for |k| < 2^11.
    const LN2_HI: f64 = 6.931_471_803_691_238_164_9e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    // Adding 1.5·2^52 rounds to the nearest integer and leaves it in the low
    // mantissa bits. The extra 1023 makes that integer k + 1023, the biased
    // exponent of 2^k, so one shift moves it into place.
    const ROUND: f64 = 6_755_399_441_055_744.0 + 1023.0;
    const C: [f64; 12] = [
        1.0,
        1.0,
        0.5000000000000018,
        0.16666666666666147,
        0.04166666666649316,
        0.008333333333569098,
        0.0013888888951133485,
        0.00019841269413815112,
        2.480148660775664e-05,
        2.7557638344026344e-06,
        2.763226447373137e-07,
        2.4989491355772434e-08,
    ];
    let x = x.max(-708.0).min(709.0);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    // k·LN2_HI is exact, so the first step rounds once either way.
    let r = if FMA { (-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, x)) } else { (x - k * LN2_HI) - k * LN2_LO };
    let mut p = C[11];
    for c in C[..11].iter().rev() {
        // With FMA each Horner step rounds once; without it, twice.
        p = if FMA { p.mul_add(r, *c) } else { p * r + c };
    }
    p * f64::from_bits(shifted.to_bits() << 52)
}

/// Gradients from libtorch autograd, for checking the fused engine.
#[cfg(test)]
pub fn autograd_grads(model: &Model, data: &Dataset) -> (f64, Vec<Tensor>) {
    let (xs, ys) = data.tensors(Device::Cpu);
    let outputs = model.forward(&xs, crate::model::Feedback::Trained);
    let loss = crate::model::mse(&outputs, &ys);
    let grads = Tensor::run_backward(&[&loss], &model.variables(), false, false);
    (loss.double_value(&[]), grads.into_iter().map(|g| g.to_kind(tch::Kind::Double)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst: f64 = 0.0;
        let mut x = -40.0;
        while x < 40.0 {
            for rel in [((exp::<false>(x) - x.exp()) / x.exp()).abs(), ((exp::<true>(x) - x.exp()) / x.exp()).abs()] {
                worst = worst.max(rel);
            }
            x += 0.001_37;
        }
        assert!(worst < 4.5e-16, "max relative error {worst:e}");
        assert_eq!(exp::<false>(0.0), 1.0);
        assert!(exp::<false>(-1000.0) > 0.0, "exp(-1000) underflows to zero");
        assert!(exp::<false>(-1000.0) < 1e-300, "exp(-1000) is not tiny");
        assert!(exp::<false>(1000.0).is_finite());
    }

    fn max_grad_difference(cell: Cell, hidden: usize, n: usize, threads: usize) -> (f64, f64) {
        let data = Dataset::draw_seeded(n, 6, 8, 5).unwrap();
        let model = Model::new(cell, hidden, n, Device::Cpu, 11).unwrap();
        if cell == Cell::Jordan {
            // Non-zero initial feedback exercises its gradient path.
            tch::no_grad(|| {
                let mut y_t = model.var("y_t").shallow_clone();
                y_t.copy_(&(Tensor::rand([n as i64, 1], (tch::Kind::Double, Device::Cpu)) * 0.5));
            });
        }
        let (loss_ref, grads_ref) = autograd_grads(&model, &data);
        let mut engine = Engine::new(&model, &data, threads).unwrap();
        let (loss, grads) = engine.loss_and_grads(&model.variables());
        let mut worst: f64 = 0.0;
        for (name, (a, b)) in model.names().iter().zip(grads.iter().zip(&grads_ref)) {
            assert_eq!(a.size(), b.size(), "{name}");
            let diff = (a - b).abs().max().double_value(&[]);
            worst = worst.max(diff);
        }
        ((loss - loss_ref).abs(), worst)
    }

    #[test]
    fn fused_matches_autograd_jordan() {
        for threads in [1, 2, 3] {
            let (dl, dg) = max_grad_difference(Cell::Jordan, 3, 300, threads);
            assert!(dl < 1e-12, "threads {threads}: loss differs by {dl:e}");
            assert!(dg < 1e-12, "threads {threads}: a gradient differs by {dg:e}");
        }
    }

    #[test]
    fn fused_matches_autograd_elman() {
        for hidden in [1, 4] {
            let (dl, dg) = max_grad_difference(Cell::Elman, hidden, 257, 2);
            assert!(dl < 1e-12, "hidden {hidden}: loss differs by {dl:e}");
            assert!(dg < 1e-12, "hidden {hidden}: a gradient differs by {dg:e}");
        }
    }
}
