"""Where the time of an OVLR update goes: a batch update against a backprop step, and an
ask/tell pair on a fixed problem.

Each part of the solver is timed by wrapping it (wall-clock, ``time.perf_counter``) while the
update runs as usual: the backbone forward, drawing the noise, building the candidates, the
loss of the B x n candidates (the benchmark's, a black box to the solver), loss validation,
the weights, the output signal, the VJP (``mu.backward``), the gradient-norm guard, the
optimizer step, the noise model's update; "python" is the rest of ``ask`` + ``tell``. The
backprop step of the same model (forward, loss, backward, optimizer step) is timed the same
way. Figures: medians over ``--rounds`` updates after warm-up, in milliseconds (batch) or
microseconds (ask/tell), and each part's share. ``--trace DIR`` also writes a
``torch.profiler`` Chrome trace of a few updates per setting, with the same parts labelled.

    python -m benchmarks.profile_update                      # MLP, CNN, ResNet-8 batch updates, ask/tell d 100 and 1000
    python -m benchmarks.profile_update --models mlp --rounds 10 --trace /tmp/trace
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

import bbopt
import bbopt.solver
from bbopt.policies import LearnedVector
from benchmarks import _report
from benchmarks.overhead import make_model

PARTS = ("forward", "noise", "candidates", "loss", "validation", "weights", "signal", "vjp", "grad_norm",
         "optimizer", "noise_update", "python")  # fmt: skip


class Timers:
    """Wall-clock seconds per part for the current update; nested parts are not double counted
    (a part's time excludes the parts timed inside it)."""

    labels = False  # torch.profiler labels (record_function) on every part: only while tracing, they cost µs

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []

    @contextlib.contextmanager
    def part(self, name: str):
        began, frame = time.perf_counter(), [name, 0.0]
        self.stack.append(frame)
        try:
            with torch.profiler.record_function(name) if Timers.labels else contextlib.nullcontext():
                yield
        finally:
            spent = time.perf_counter() - began
            self.stack.pop()
            self.seconds[name] += spent - frame[1]
            if self.stack:
                self.stack[-1][1] += spent

    def wrap(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.part(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


@contextlib.contextmanager
def instrumented(solver: bbopt.Solver, timers: Timers):
    """Time the solver's parts by wrapping them on this solver (and, for the VJP and the
    gradient-norm guard, on ``torch.Tensor.backward`` and ``bbopt.solver._total_norm``)."""
    timers.wrap(solver.policy, "forward", "forward")
    timers.wrap(solver.noise, "draw", "noise")
    timers.wrap(solver.noise, "candidates", "candidates")
    timers.wrap(solver.noise, "paired_candidates", "candidates")
    timers.wrap(solver, "_as_losses", "validation")
    timers.wrap(solver, "_group_weights", "weights")
    timers.wrap(solver.noise, "signal", "signal")
    timers.wrap(solver.optimizer, "step", "optimizer")
    timers.wrap(solver.noise, "update", "noise_update")
    backward, total_norm = torch.Tensor.backward, bbopt.solver._total_norm

    def timed_backward(tensor, *args, **kwargs):
        with timers.part("vjp"):
            return backward(tensor, *args, **kwargs)

    def timed_norm(optimizer):
        with timers.part("grad_norm"):
            return total_norm(optimizer)

    torch.Tensor.backward, bbopt.solver._total_norm = timed_backward, timed_norm
    try:
        yield
    finally:
        torch.Tensor.backward, bbopt.solver._total_norm = backward, total_norm


def ovlr_batch(model_name: str, samples: int):
    """(one OVLR update, one backprop update, timers of each) on the model of benchmarks/overhead.py."""
    runs = {}
    for kind in ("ovlr", "bp"):
        model, shape, batch = make_model(model_name)
        generator = torch.Generator().manual_seed(1)
        inputs = torch.randn((batch, *shape), generator=generator)
        targets = torch.randint(0, 10, (batch,), generator=generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        timers = Timers()
        if kind == "ovlr":
            solver = bbopt.OVLR(model, optimizer, sigma=1.0, samples=samples, seed=0)

            def ovlr_step(solver=solver, targets=targets, inputs=inputs, timers=timers):
                candidates = solver.ask(inputs)
                with timers.part("loss"), torch.no_grad():
                    losses = bbopt.losses.cross_entropy(candidates, targets[:, None])
                solver.tell(losses)

            runs[kind] = (ovlr_step, timers, solver)
        else:

            def bp_step(model=model, optimizer=optimizer, inputs=inputs, targets=targets, timers=timers):
                optimizer.zero_grad(set_to_none=True)
                with timers.part("forward"):
                    outputs = model(inputs)
                with timers.part("loss"):
                    loss = F.cross_entropy(outputs, targets)
                with timers.part("vjp"):
                    loss.backward()
                with timers.part("optimizer"):
                    optimizer.step()

            runs[kind] = (bp_step, timers, None)
    return runs


def ask_tell(dimension: int, samples: int):
    """One ask/tell pair of OVLR on the sphere, as benchmarks/ask_tell.py runs it."""
    policy = LearnedVector(dimension, init=torch.full((dimension,), 1.0))
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05, fused=True)
    solver = bbopt.OVLR(policy, optimizer, sigma=0.5, samples=samples, seed=0)
    timers = Timers()

    def step():
        candidates = solver.ask()
        with timers.part("loss"):
            losses = candidates.square().sum(dim=1)
        solver.tell(losses)

    return {"ovlr": (step, timers, solver)}


def measure(runs: dict, rounds: int, warmup: int = 3, trace: Path | None = None, label: str = "") -> dict:
    totals: dict[str, list[float]] = {kind: [] for kind in runs}
    parts: dict[str, dict[str, list[float]]] = {kind: defaultdict(list) for kind in runs}
    contexts = {kind: instrumented(solver, timers) if solver is not None else contextlib.nullcontext()
                for kind, (_, timers, solver) in runs.items()}  # fmt: skip
    with contextlib.ExitStack() as stack:
        for context in contexts.values():
            stack.enter_context(context)
        for round_index in range(warmup + rounds):
            for kind, (step, timers, _) in runs.items():  # interleaved: drift hits every method alike
                timers.seconds.clear()
                began = time.perf_counter()
                step()
                total = time.perf_counter() - began
                if round_index < warmup:
                    continue
                totals[kind].append(total)
                timed = sum(timers.seconds.values())
                for name in PARTS:
                    parts[kind][name].append(total - timed if name == "python" else timers.seconds.get(name, 0.0))
        if trace is not None:
            trace.mkdir(parents=True, exist_ok=True)
            Timers.labels = True
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                for _ in range(3):
                    for step, _, _ in runs.values():
                        step()
            Timers.labels = False
            profiler.export_chrome_trace(str(trace / f"{label}.json"))
    out = {}
    for kind in runs:
        total = statistics.median(totals[kind])
        medians = {name: statistics.median(parts[kind][name]) for name in PARTS}
        out[kind] = {"total": total, "parts": medians}
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn,resnet8", help="batch updates on these models ('' for none)")
    parser.add_argument("--samples", type=int, default=200, help="candidates per input in the batch updates")
    parser.add_argument("--ask-tell", default="100x16,1000x256", help="DxN settings of the ask/tell pair ('' for none)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--trace", type=Path, help="write torch.profiler Chrome traces here")
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "profile_update.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for model_name in filter(None, args.models.split(",")):
        result = measure(ovlr_batch(model_name, args.samples), args.rounds, trace=args.trace, label=model_name)
        for kind, figures in result.items():
            parts = {name: seconds * 1e3 for name, seconds in figures["parts"].items()}
            rows.append({"setting": f"{model_name} n={args.samples}", "method": kind, "unit": "ms",
                         "total": figures["total"] * 1e3, **parts})  # fmt: skip
        rows.append({"setting": f"{model_name} n={args.samples}", "method": "ovlr/bp", "unit": "ratio",
                     "total": result["ovlr"]["total"] / result["bp"]["total"]})  # fmt: skip
    for setting in filter(None, args.ask_tell.split(",")):
        dimension, samples = (int(v) for v in setting.split("x"))
        rounds = args.rounds * 20  # microsecond-scale pairs: more rounds
        figures = measure(ask_tell(dimension, samples), rounds, trace=args.trace, label=f"ask_tell_{setting}")["ovlr"]
        rows.append({"setting": f"ask/tell d={dimension} n={samples}", "method": "ovlr", "unit": "us",
                     "total": figures["total"] * 1e6, **{k: v * 1e6 for k, v in figures["parts"].items()}})  # fmt: skip
    columns = [("setting", "setting", "s"), ("method", "method", "s"), ("unit", "unit", "s"), ("total", "total", ".3f")]
    columns += [(name, name, ".3f") for name in PARTS]
    print(f"\nWhere an update's time goes (median of {args.rounds} rounds; torch threads {torch.get_num_threads()})\n")
    _report.table(rows, columns)
    _report.write(args.out, vars(args) | {"out": str(args.out), "trace": str(args.trace)}, rows)
    return rows


if __name__ == "__main__":
    main()
