#!/usr/bin/env python3
"""Train the binary-addition RNN with PyTorch eager autograd and time the training loop.

This is the model of scripts/tf_reference.py in float64 on the CPU. Each of the
`--bits` steps feeds one bit of each addend, least significant bit first, into
h_t = sigmoid(x @ w_h + y_t @ u_h + b_h) and y_t = sigmoid(h_t @ w_f + b_f). The
initial state y_t is a trainable [N, 1] parameter. The loss is the mean squared
error over all bits and samples.

The optimizer is TF 1's Adam written in torch ops, as the CPU kernel ApplyAdamNonCuda
in tensorflow/core/kernels/training_ops.cc applies it to float64 variables. lr, beta1, beta2 and epsilon are float32-rounded constants. The beta power
accumulators are float32 and are multiplied by the float32 beta after every step.
Each step computes, in float64:
    lr_t = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
    m += (g - m) * (1 - beta1)
    v += (g * g - v) * (1 - beta2)
    p -= m * lr_t / (sqrt(v) + epsilon)

Without --reference the data and the initial weights come from torch's generator
seeded with --seed, so they differ from TensorFlow's for the same seed. With
--reference FILE (a JSON record written by tf_reference.py) the data, hidden size and
initial weights come from the file. The script then prints the largest absolute
difference between its losses and the recorded ones, and how many leading
iterations agree within 1e-12.

Output lines: `train_seconds <float>` (the training loop alone) and `final_loss
<float>` (the mean loss of the final weights, from one extra forward pass).

Needs only torch (numpy is not used). Example, with torch from scripts/fetch-libtorch.sh:
    PYTHONPATH=$HOME/.cache/binadd/libtorch-2.13.0 python3 scripts/bench_torch.py \\
        --reference tests/fixtures/tf_seed0_full.json
"""

import argparse
import json
import sys
import time
import warnings

# torch warns at import when numpy is missing. This script never converts to numpy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch

DTYPE = torch.float64
LEARNING_RATE = 0.04
# Defaults of tf.train.AdamOptimizer.
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPSILON = 1e-8
PARITY_TOLERANCE = 1e-12
PARAMETER_NAMES = ("w_f", "w_h", "u_h", "b_f", "b_h", "y_t")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train the binary-addition RNN with PyTorch eager autograd and TF 1 Adam, "
        "and print the training loop time."
    )
    # Options that a reference file also sets default to None, so that a conflict can be detected.
    parser.add_argument("--samples", type=int, default=None,
                        help="number of training samples N; default 10000")
    parser.add_argument("--iters", type=int, default=None,
                        help="number of full-batch Adam steps; default 2000, or the number of "
                        "recorded losses with --reference")
    parser.add_argument("--bits", type=int, default=None,
                        help="number of bits (RNN steps) per number; default 8")
    parser.add_argument("--max-digits", type=int, default=None,
                        help="addends are drawn from [0, 2**max_digits); at most bits - 1 so that "
                        "the sum fits; default 6")
    parser.add_argument("--hidden", type=int, default=None,
                        help="number of hidden units H; default 3")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op and inter-op thread count; default 1")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of torch's generator for data and initial weights; default 0")
    parser.add_argument("--reference", metavar="FILE",
                        help="JSON record from tf_reference.py; take data and initial weights "
                        "from it and compare the losses")
    args = parser.parse_args(argv)

    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.iters is not None and args.iters < 0:
        parser.error(f"--iters must be at least 0, got {args.iters}")
    if args.reference is None:
        fill_defaults(args)
        validate_shape(parser, args)
    return parser, args


def fill_defaults(args):
    defaults = {"samples": 10000, "iters": 2000, "bits": 8, "max_digits": 6, "hidden": 3, "seed": 0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def validate_shape(parser, args):
    if args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    if args.bits < 2:
        parser.error(f"--bits must be at least 2, got {args.bits}")
    if not 1 <= args.max_digits <= args.bits - 1:
        parser.error(f"--max-digits must be in 1..{args.bits - 1} so that the sum fits in "
                     f"{args.bits} bits, got {args.max_digits}")
    if args.hidden < 1:
        parser.error(f"--hidden must be at least 1, got {args.hidden}")
    if not 0 <= args.seed < 2**63:
        parser.error(f"--seed must be in [0, 2**63), got {args.seed}")


def apply_reference(parser, args, reference):
    """Take the shape options from the reference record and reject flags that contradict it."""
    # The record format stores numpy's 8-bit unpackbits layout, so it always has 8 bits.
    from_file = {"samples": reference["n_samples"], "bits": 8,
                 "max_digits": reference["max_digits"], "hidden": reference["hidden_dim"]}
    for name, value in from_file.items():
        flag_value = getattr(args, name)
        if flag_value is not None and flag_value != value:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} {flag_value} contradicts {args.reference}, which has {value}; "
                         f"omit {flag} when using --reference")
        setattr(args, name, value)
    if args.seed is not None:
        parser.error("--seed has no effect with --reference, because data and weights come from the file")
    args.seed = reference["seed"]
    if args.iters is None:
        args.iters = len(reference["losses"])


def to_bit_steps(values, bits):
    """Return [bits, N, 1] float64 bit planes of the integers in values, least significant bit first."""
    shifts = torch.arange(bits, dtype=torch.int64)
    planes = (values.unsqueeze(0) >> shifts.unsqueeze(1)) & 1
    return planes.to(DTYPE).unsqueeze(2)


def make_data(ints, bits):
    """Return (x_steps [bits, N, 2], y_steps [bits, N, 1]) for addends ints [N, 2]."""
    x_steps = torch.cat([to_bit_steps(ints[:, 0], bits), to_bit_steps(ints[:, 1], bits)], dim=2)
    y_steps = to_bit_steps(ints[:, 0] + ints[:, 1], bits)
    return x_steps, y_steps


def random_problem(args):
    """Draw data and initial weights from torch's generator, with TF's initializer distributions."""
    generator = torch.Generator().manual_seed(args.seed)
    ints = torch.randint(0, 2**args.max_digits, (args.samples, 2), generator=generator)

    def truncated_normal(*shape):
        # Same distribution as tf.truncated_normal_initializer(): N(0, 1) redrawn outside 2 std.
        return torch.nn.init.trunc_normal_(torch.empty(shape, dtype=DTYPE), mean=0.0, std=1.0,
                                           a=-2.0, b=2.0, generator=generator)

    hidden = args.hidden
    init = {
        "w_f": truncated_normal(hidden, 1),
        "w_h": truncated_normal(2, hidden),
        "u_h": truncated_normal(1, hidden),
        "b_f": torch.zeros(1, 1, dtype=DTYPE),
        "b_h": torch.zeros(1, hidden, dtype=DTYPE),
        "y_t": torch.zeros(args.samples, 1, dtype=DTYPE),
    }
    return ints, init


def reference_problem(reference):
    ints = torch.tensor([reference["x1"], reference["x2"]], dtype=torch.int64).T.contiguous()
    init = {name: torch.tensor(reference["init"][name], dtype=DTYPE) for name in PARAMETER_NAMES}
    return ints, init


def mean_loss(params, x_steps, y_steps):
    """Run the RNN over all bits and return the mean squared error of its outputs."""
    y_t = params["y_t"]
    losses = []
    for x, target in zip(x_steps, y_steps):
        h_t = torch.sigmoid(x @ params["w_h"] + y_t @ params["u_h"] + params["b_h"])
        y_t = torch.sigmoid(h_t @ params["w_f"] + params["b_f"])
        diff = y_t - target
        losses.append(diff * diff)
    return torch.stack(losses).mean()


class Tf1Adam:
    """Adam with the constants, accumulator dtypes and update order of TF 1's ApplyAdam."""

    def __init__(self, params):
        self.params = params
        # Python floats hold the float32-rounded constants exactly.
        self.lr = float(torch.tensor(LEARNING_RATE, dtype=torch.float32))
        self.beta1_f32 = torch.tensor(ADAM_BETA1, dtype=torch.float32)
        self.beta2_f32 = torch.tensor(ADAM_BETA2, dtype=torch.float32)
        self.one_minus_beta1 = 1.0 - float(self.beta1_f32)
        self.one_minus_beta2 = 1.0 - float(self.beta2_f32)
        self.epsilon = float(torch.tensor(ADAM_EPSILON, dtype=torch.float32))
        self.beta1_power = self.beta1_f32.clone()
        self.beta2_power = self.beta2_f32.clone()
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        beta1_power = self.beta1_power.to(DTYPE)
        beta2_power = self.beta2_power.to(DTYPE)
        lr_t = self.lr * torch.sqrt(1.0 - beta2_power) / (1.0 - beta1_power)
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m.add_((g - m) * self.one_minus_beta1)
            v.add_((g * g - v) * self.one_minus_beta2)
            p.sub_((m * lr_t) / (torch.sqrt(v) + self.epsilon))
        # float32 multiplications, as TF 1 updates its beta power variables.
        self.beta1_power = self.beta1_power * self.beta1_f32
        self.beta2_power = self.beta2_power * self.beta2_f32


def report_parity(losses, final_loss, params, reference):
    recorded = reference["losses"]
    compared = min(len(losses), len(recorded))
    if compared == 0:
        print("no losses to compare with the reference")
        return
    diffs = [abs(a - b) for a, b in zip(losses[:compared], recorded[:compared])]
    leading = next((i for i, d in enumerate(diffs) if d > PARITY_TOLERANCE), compared)
    worst = max(range(compared), key=diffs.__getitem__)
    print(f"compared_iters {compared}")
    print(f"max_abs_loss_diff {diffs[worst]} (iteration {worst + 1})")
    print(f"iters_within_{PARITY_TOLERANCE:g} {leading}")
    if len(losses) == len(recorded):
        print(f"final_loss_diff {abs(final_loss - reference['metrics']['final_loss'])}")
        for name in PARAMETER_NAMES:
            expected = torch.tensor(reference["final"][name], dtype=DTYPE)
            print(f"final_{name}_max_abs_diff {(params[name].detach() - expected).abs().max().item()}")


def main(argv):
    parser, args = parse_args(argv)
    # set_num_interop_threads fails once inter-op work has started, so set threads first.
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    reference = None
    if args.reference is not None:
        with open(args.reference, encoding="utf-8") as f:
            reference = json.load(f)
        apply_reference(parser, args, reference)
        ints, init = reference_problem(reference)
    else:
        ints, init = random_problem(args)

    x_steps, y_steps = make_data(ints, args.bits)
    params = {name: init[name].clone().requires_grad_(True) for name in PARAMETER_NAMES}
    optimizer = Tf1Adam(list(params.values()))

    losses = []
    start = time.perf_counter()
    for _ in range(args.iters):
        for p in params.values():
            p.grad = None
        loss = mean_loss(params, x_steps, y_steps)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start

    with torch.no_grad():
        final_loss = mean_loss(params, x_steps, y_steps).item()
    print(f"train_seconds {train_seconds}")
    print(f"final_loss {final_loss}")
    if reference is not None:
        report_parity(losses, final_loss, params, reference)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
