#!/usr/bin/env python3
"""Train the binary-addition RNN in TensorFlow 1 graph mode and record every tensor binadd checks.

The model adds two unsigned integers below 2**max_digits bit by bit. Each of the 8
time steps feeds one bit of each addend, least significant bit first, into a
sigmoid hidden layer of `--hidden` units. The previous step's output feeds back
through u_h. The initial state y_t is a trainable [N, 1] variable. Training runs
full-batch Adam (learning rate 0.04) on the mean squared error of the 8 output bits.

The graph is built with `tensorflow.compat.v1` after `tf.disable_v2_behavior()`, so
variables are TF1 reference variables and training runs through `tf.Session`. Ops are
created in a fixed order, because with a graph-level seed each op's random seed is
derived from the number of ops created before it. Moving, adding or removing an op
before the variables changes the initial weights.

With `--out FILE` the script writes a JSON record:
  tf_version, seed, max_digits, n_samples, hidden_dim, n_training_iters
  adam          learning_rate, beta1, beta2, epsilon as float64 values. TF 1 Adam turns
                the Python floats into float32 tensors and casts them to the variable
                dtype, so 0.04 becomes 0.03999999910593033.
  x1, x2, y     the addends and their sum, one integer per sample
  init, final   w_f [H,1], w_h [2,H], u_h [1,H], b_f [1,1], b_h [1,H], y_t [N,1] as
                nested lists, fetched after initialization and after the last step
  losses        mean_loss fetched together with train_op at every iteration, so
                losses[i] is the loss of the weights before update i + 1
  sum_predicted the outputs after training, thresholded at 0.5 and packed MSB first
  metrics       final_loss: mean_loss of the final weights, from one extra
                sess.run after the training loop (so it is not losses[-1]).
                exact_accuracy: fraction of samples with sum_predicted == y.
                bit_accuracy: fraction of the 8 * N output bits that are right.
                corr: Pearson correlation of y and sum_predicted, or null when
                either is constant.
Floats are written with Python's repr, so they round-trip exactly.

The script always prints `train_seconds <float>`: the wall time of the training loop
alone, without graph building, initialization or the final evaluation.

Install:
    pip install tensorflow-cpu numpy pandas

Example:
    python3 scripts/tf_reference.py --seed 0 --samples 64 --iters 50 \\
        --out tests/fixtures/tf_seed0_n64_i50.json
"""

import argparse
import json
import math
import os
import sys
import time

# Hide TensorFlow's C++ info and warning logs. This does not change any computation.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

N_BITS = 8  # numpy unpackbits/packbits work on uint8, so every number has 8 bits
LEARNING_RATE = 0.04
# Defaults of tf.train.AdamOptimizer.
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPSILON = 1e-8

VARIABLE_NAMES = ("w_f", "w_h", "u_h", "b_f", "b_h", "y_t")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train the binary-addition RNN with TensorFlow 1 graph mode "
        "and optionally record data, weights and losses as JSON."
    )
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for numpy (data) and the TensorFlow graph (initial weights); default 0")
    parser.add_argument("--samples", type=int, default=10000,
                        help="number of training samples N; default 10000")
    parser.add_argument("--iters", type=int, default=2000,
                        help="number of full-batch Adam steps; default 2000")
    parser.add_argument("--max-digits", type=int, default=6,
                        help="addends are drawn from [0, 2**max_digits); 1 to 7 so that the sum fits "
                        "in 8 bits; default 6")
    parser.add_argument("--hidden", type=int, default=3,
                        help="number of hidden units H; default 3")
    parser.add_argument("--out", metavar="FILE",
                        help="write the JSON record to FILE")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow intra-op and inter-op thread count; 0 lets TensorFlow "
                        "choose; default 1")
    parser.add_argument("--time-only", action="store_true",
                        help="record nothing and print only train_seconds and the last loss")
    args = parser.parse_args(argv)

    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    if args.iters < 0:
        parser.error(f"--iters must be at least 0, got {args.iters}")
    if not 1 <= args.max_digits <= N_BITS - 1:
        parser.error(f"--max-digits must be in 1..{N_BITS - 1} so that the sum fits in "
                     f"{N_BITS} bits, got {args.max_digits}")
    if args.hidden < 1:
        parser.error(f"--hidden must be at least 1, got {args.hidden}")
    if args.threads < 0:
        parser.error(f"--threads must be at least 0, got {args.threads}")
    if args.time_only and args.out:
        parser.error("--time-only records nothing, so it cannot be combined with --out")
    return args


def make_data(seed, n_samples, max_digits):
    """Draw the addends and return (x1, x2, y, x_data, y_data).

    x_data is [8, N, 2] and y_data is [8, N, 1], both float64, with the bit axis in
    numpy unpackbits order (most significant bit first).
    """
    np.random.seed(seed)
    ints = np.random.randint(low=0, high=np.power(2, max_digits), size=[n_samples, 2])
    x1 = ints[:, 0]
    x2 = ints[:, 1]
    y = x1 + x2

    y_bits = np.unpackbits(y.astype(np.uint8)).astype(np.float64).reshape(n_samples, N_BITS, 1)
    y_data = np.transpose(y_bits, axes=[1, 0, 2])

    x_bits = np.zeros([2, n_samples, N_BITS], dtype=np.uint8)
    x_bits[0] = np.unpackbits(x1.astype(np.uint8)).reshape(n_samples, N_BITS)
    x_bits[1] = np.unpackbits(x2.astype(np.uint8)).reshape(n_samples, N_BITS)
    x_data = np.transpose(x_bits.astype(np.float64), axes=[2, 1, 0])
    return x1, x2, y, x_data, y_data


def build_graph(seed, n_samples, hidden_dim):
    """Build the RNN, loss and Adam training op in a fresh default graph and return them by name."""
    tf.reset_default_graph()
    tf.set_random_seed(seed)

    with tf.variable_scope("input"):
        x_in = tf.placeholder(shape=(N_BITS, n_samples, 2), dtype=np.float64, name="x")
        y_in = tf.placeholder(shape=(N_BITS, n_samples, 1), dtype=np.float64, name="y")

    # Each initializer's op seed depends on the number of ops created before it, so keep this order.
    with tf.variable_scope("hidden"):
        w_f = tf.get_variable("w_f", shape=[hidden_dim, 1], dtype=np.float64,
                              initializer=tf.truncated_normal_initializer())
        w_h = tf.get_variable("w_h", shape=[2, hidden_dim], dtype=np.float64,
                              initializer=tf.truncated_normal_initializer())
        u_h = tf.get_variable("u_h", shape=[1, hidden_dim], dtype=np.float64,
                              initializer=tf.truncated_normal_initializer())
        b_f = tf.get_variable("b_f", shape=[1, 1], dtype=np.float64,
                              initializer=tf.zeros_initializer())
        b_h = tf.get_variable("b_h", shape=[1, hidden_dim], dtype=np.float64,
                              initializer=tf.zeros_initializer())

    with tf.variable_scope("output"):
        y_init = tf.get_variable("y_t", shape=(n_samples, 1), dtype=np.float64,
                                 initializer=tf.zeros_initializer())
        # Walk the bits from least to most significant. y_out[k] is the output for bit k
        # counted from the LSB.
        x_steps = list(reversed(tf.unstack(x_in, axis=0)))
        y_steps = list(reversed(tf.unstack(y_in, axis=0)))
        y_out = []
        y_t = y_init
        for x in x_steps:
            # y_t [N,1] times u_h [1,H] is an outer product. It stays a matmul, not a
            # broadcast multiply, because binadd reproduces this graph op for op.
            h_t = tf.nn.sigmoid(tf.matmul(x, w_h) + tf.matmul(y_t, u_h) + b_h, name="h_t")
            y_t = tf.nn.sigmoid(tf.matmul(h_t, w_f) + b_f, name="y_t")
            y_out.append(y_t)

    with tf.variable_scope("loss"):
        losses = [tf.squared_difference(y_calc, y_actual)
                  for y_calc, y_actual in zip(y_out, y_steps)]
        optimizer = tf.train.AdamOptimizer(learning_rate=LEARNING_RATE)
        # reduce_mean of the Python list packs the 8 [N,1] losses into one [8,N,1]
        # tensor and averages all 8 * N elements.
        mean_loss = tf.reduce_mean(losses, name="ms_loss")
        train_op = optimizer.minimize(mean_loss, name="minimization")

    return {
        "x_in": x_in,
        "y_in": y_in,
        "variables": dict(zip(VARIABLE_NAMES, (w_f, w_h, u_h, b_f, b_h, y_init))),
        "y_out": y_out,
        "mean_loss": mean_loss,
        "train_op": train_op,
        "init": tf.global_variables_initializer(),
    }


def predict_sums(y_out_values):
    """Threshold the 8 per-bit outputs (LSB first, each [N,1]) at 0.5.

    Returns (sums, bits). sums are the packed integers. bits is [N, 8] uint8, most
    significant bit first.
    """
    by_sample = np.array(y_out_values)[:, :, 0].T  # [N, 8], LSB first
    bits = np.where(np.fliplr(by_sample) > 0.5, 1, 0).astype(np.uint8)
    sums = np.packbits(bits, axis=1)[:, 0]
    return sums, bits


def pearson_or_none(a, b):
    """Return the Pearson correlation of a and b, or None when it is undefined (NaN)."""
    corr = pd.Series(a, dtype=np.float64).corr(pd.Series(b, dtype=np.float64))
    return None if math.isnan(corr) else float(corr)


def fetch_variables(sess, variables):
    return {name: sess.run(var).tolist() for name, var in variables.items()}


def adam_constants():
    """Return the Adam constants as TF 1 applies them to float64 variables.

    In tensorflow/python/training/adam.py (TF 2.21 compat.v1) the Python floats become
    float32 tensors, which ApplyAdam receives cast to the variable dtype.
    """
    return {
        "learning_rate": float(np.float32(LEARNING_RATE)),
        "beta1": float(np.float32(ADAM_BETA1)),
        "beta2": float(np.float32(ADAM_BETA2)),
        "epsilon": float(np.float32(ADAM_EPSILON)),
    }


def main(argv):
    args = parse_args(argv)
    x1, x2, y, x_data, y_data = make_data(args.seed, args.samples, args.max_digits)
    graph = build_graph(args.seed, args.samples, args.hidden)
    feed = {graph["x_in"]: x_data, graph["y_in"]: y_data}
    fetches = [graph["train_op"], graph["mean_loss"]]
    config = tf.ConfigProto(intra_op_parallelism_threads=args.threads,
                            inter_op_parallelism_threads=args.threads)

    with tf.Session(config=config) as sess:
        sess.run(graph["init"])
        init_values = None if args.time_only else fetch_variables(sess, graph["variables"])

        losses = []
        loss_value = float("nan")
        # NOTE: the first iteration also pays TensorFlow's one-time graph optimization
        # and executor setup for this fetch list, so train_seconds includes it.
        start = time.perf_counter()
        for _ in range(args.iters):
            _, loss_value = sess.run(fetches, feed_dict=feed)
            if not args.time_only:
                losses.append(float(loss_value))
        train_seconds = time.perf_counter() - start
        print(f"train_seconds {train_seconds}")

        if args.time_only:
            print(f"last_loss {float(loss_value)}")
            return 0

        final_loss, y_out_values = sess.run([graph["mean_loss"], graph["y_out"]], feed_dict=feed)
        final_values = fetch_variables(sess, graph["variables"])

    sum_predicted, predicted_bits = predict_sums(y_out_values)
    actual_bits = np.unpackbits(y.astype(np.uint8)).reshape(args.samples, N_BITS)
    metrics = {
        "final_loss": float(final_loss),
        "exact_accuracy": float(np.mean(sum_predicted.astype(np.int64) == y)),
        "bit_accuracy": float(np.mean(predicted_bits == actual_bits)),
        "corr": pearson_or_none(y, sum_predicted),
    }
    for name, value in metrics.items():
        print(f"{name} {value}")

    if args.out:
        record = {
            "tf_version": tf.__version__,
            "seed": args.seed,
            "max_digits": args.max_digits,
            "n_samples": args.samples,
            "hidden_dim": args.hidden,
            "n_training_iters": args.iters,
            "adam": adam_constants(),
            "x1": x1.tolist(),
            "x2": x2.tolist(),
            "y": y.tolist(),
            "init": init_values,
            "losses": losses,
            "final": final_values,
            "sum_predicted": sum_predicted.astype(np.int64).tolist(),
            "metrics": metrics,
        }
        # allow_nan=False: a NaN or infinite loss would make invalid JSON, so fail instead.
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(record, out, separators=(",", ":"), allow_nan=False)
            out.write("\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
