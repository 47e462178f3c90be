#!/usr/bin/env python3
"""Time binadd against TensorFlow and PyTorch on the notebook workload.

Runs each tool in turn, REPS rounds interleaved so that machine noise hits all
of them alike. The tools: binadd's autograd engine on 1 thread and on all
cores (one batch shard per core), binadd's fused engine on all cores, the
notebook under TensorFlow's compat.v1 (scripts/tf_reference.py) and a PyTorch
eager equivalent (scripts/bench_torch.py). Each tool reports the
seconds of its training loop alone; peak resident memory is the child's
ru_maxrss from wait4. Prints min and median seconds, peak memory, and
binadd's speed-up over the faster peer.

`--scaling` instead times binadd's two engines per iteration over sample
counts 1e3..1e6 and bit widths 8..64.

Usually called through scripts/bench.sh, which finds the interpreters.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINADD = os.path.join(REPO, "target", "release", "binadd")


def run_measured(cmd, env=None):
    """Runs cmd and returns (stdout, peak RSS in MiB) via os.wait4."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed with status {proc.returncode}:\n{err.read()[-2000:]}")
        # ru_maxrss is in KiB on Linux.
        return out.read(), usage.ru_maxrss / 1024.0


def seconds_from(stdout):
    match = re.search(r"^train_seconds\s+([0-9.eE+-]+)", stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no 'train_seconds' line in output:\n{stdout[-1000:]}")
    return float(match.group(1))


def binadd_tool(engine, extra, name):
    def command(workdir, args):
        out = os.path.join(workdir, f"binadd-{name}")
        return [BINADD, "train", "--quiet", "--seed", "0", "--samples", str(args.samples),
                "--iters", str(args.iters), "--heldout", "0", "--engine", engine,
                "--out", out, "--force", *extra]

    def seconds(stdout, workdir):
        with open(os.path.join(workdir, f"binadd-{name}", "metrics.json")) as f:
            return json.load(f)["train_seconds"]

    return command, seconds


def python_tool(python, script, extra, env):
    def command(workdir, args):
        return [python, os.path.join(REPO, "scripts", script), "--seed", "0",
                "--samples", str(args.samples), "--iters", str(args.iters), *extra]

    def seconds(stdout, workdir):
        return seconds_from(stdout)

    return command, seconds, env


def python_has(python, module, env=None):
    if not python:
        return False
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=env)
    return probe.returncode == 0


def compare(args):
    cores = os.cpu_count() or 1
    tools = []
    variants = [("autograd", 1), ("autograd", cores), ("fused", cores)] if cores > 1 else [("autograd", 1), ("fused", 1)]
    for engine, threads in variants:
        label = f"binadd {engine} ({threads} thread{'s' if threads > 1 else ''})"
        command, seconds = binadd_tool(engine, ["--threads", str(threads)], f"{engine}-{threads}")
        tools.append((label, command, seconds, None, "binadd"))

    torch_env = dict(os.environ)
    if args.torch_path:
        torch_env["PYTHONPATH"] = args.torch_path + os.pathsep + torch_env.get("PYTHONPATH", "")
    if python_has(args.python, "torch", torch_env):
        command, seconds, env = python_tool(args.python, "bench_torch.py", ["--threads", "1"], torch_env)
        tools.append(("PyTorch eager (1 thread)", command, seconds, env, "peer"))
    else:
        print("skipping PyTorch eager: 'import torch' failed; run scripts/fetch-libtorch.sh "
              "(its PyPI install carries the Python package)")
    if python_has(args.tf_python, "tensorflow"):
        command, seconds, env = python_tool(args.tf_python, "tf_reference.py", ["--threads", "1", "--time-only"], None)
        tools.append(("TensorFlow compat.v1 (1 thread)", command, seconds, env, "peer"))
    else:
        print("skipping TensorFlow: 'import tensorflow' failed; install it with "
              "'pip install tensorflow-cpu numpy pandas' and pass --tf-python")

    times = {label: [] for label, *_ in tools}
    memory = {label: 0.0 for label, *_ in tools}
    with tempfile.TemporaryDirectory() as workdir:
        for rep in range(args.reps):
            for label, command, seconds, env, _ in tools:
                stdout, rss = run_measured(command(workdir, args), env)
                times[label].append(seconds(stdout, workdir))
                memory[label] = max(memory[label], rss)
                print(f"  round {rep + 1}: {label:34} {times[label][-1]:8.3f} s  {rss:8.1f} MiB", flush=True)

    print(f"\nworkload: {args.samples} samples, 8 steps, hidden 3, float64, {args.iters} full-batch "
          f"iterations, CPU; {args.reps} rounds; seconds of the training loop")
    print(f"{'tool':36} {'min s':>8} {'median s':>9} {'peak RSS MiB':>13}")
    for label, *_ in tools:
        print(f"{label:36} {min(times[label]):8.3f} {statistics.median(times[label]):9.3f} {memory[label]:13.1f}")
    peers = [label for label, *rest in tools if rest[-1] == "peer"]
    if peers:
        fastest = min(peers, key=lambda p: statistics.median(times[p]))
        base = statistics.median(times[fastest])
        print(f"\nspeed-up over the faster peer ({fastest}), by median:")
        for label, *rest in tools:
            if rest[-1] == "binadd":
                print(f"  {label:34} {base / statistics.median(times[label]):6.2f}x")


def scaling(args):
    cores = os.cpu_count() or 1
    print(f"{'engine':9} {'samples':>9} {'bits':>5} {'iters':>6} {'ms/iter':>9}")
    with tempfile.TemporaryDirectory() as workdir:
        for samples, bits in [(1000, 8), (10_000, 8), (100_000, 8), (1_000_000, 8),
                              (10_000, 16), (10_000, 32), (10_000, 64)]:
            # Aim for a few seconds per point.
            iters = max(5, min(2000, int(2e7 / (samples * bits))))
            for engine, threads in [("autograd", cores), ("fused", cores)]:
                out = os.path.join(workdir, f"{engine}-{samples}-{bits}")
                run_measured([BINADD, "train", "--quiet", "--seed", "0", "--samples", str(samples),
                              "--bits", str(bits), "--max-digits", str(bits - 2), "--iters", str(iters),
                              "--heldout", "0", "--engine", engine, "--threads", str(threads),
                              "--out", out, "--force"])
                with open(os.path.join(out, "metrics.json")) as f:
                    seconds = json.load(f)["train_seconds"]
                print(f"{engine:9} {samples:>9} {bits:>5} {iters:>6} {1000 * seconds / iters:9.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="rounds per tool (default 3)")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--python", default=sys.executable, help="interpreter for the PyTorch script")
    parser.add_argument("--torch-path", default="", help="directory to put on PYTHONPATH for torch")
    parser.add_argument("--tf-python", default="", help="interpreter with TensorFlow")
    parser.add_argument("--scaling", action="store_true", help="time binadd over sample counts and widths")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if not os.path.exists(BINADD):
        sys.exit(f"error: {BINADD} not found; build it with 'cargo build --release'")
    if args.scaling:
        scaling(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
