"""Per-update cost of an OVLR step vs a backprop step vs a parameter-space ES step.

Same model, same batch, same loss (cross-entropy on class logits; for OVLR and ES it is only
evaluated, never differentiated). One OVLR update = one forward, n samples of output noise,
the loss of all B x n candidates, one VJP and one Adam step. One ES update = n perturbed
forwards of the whole network and an Adam step on the flattened parameters.

Time: median seconds per update, the methods interleaved round by round in one process so
that drift hits them alike. Memory: each method runs in a fresh subprocess; on CPU the figure
is the peak resident memory added by the updates (VmHWM after the updates minus VmRSS after
building model and data, with glibc returning freed tensors to the system and the peak
counter reset after setup), on CUDA ``torch.cuda.max_memory_allocated`` over the updates.

    python -m benchmarks.overhead                       # CPU: MLP, CNN and ResNet-8, n = 200
    python -m benchmarks.overhead --device cuda --models mlp,cnn,resnet18   # on a GPU
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import bbopt
from bbopt.baselines import ParameterES
from benchmarks import _report


def make_model(name: str) -> tuple[nn.Module, tuple[int, ...], int]:
    """Model, input shape (without batch) and batch size."""
    torch.manual_seed(0)  # benchmark process only; the library itself never seeds globally
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
        return model, (784,), 256
    if name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(128, 10),
        )  # fmt: skip
        return model, (3, 32, 32), 128
    if name == "resnet8":  # a ResNet-style CNN for the CPU, where the backbone dominates the update
        return ResNet8(), (3, 32, 32), 128
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=10), (3, 32, 32), 128
    raise ValueError(f"Invalid model: {name!r} (expected mlp, cnn or resnet18)")


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm and a skip connection (a 1x1
    projection where the width or resolution changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(outputs),
        )  # fmt: skip
        self.skip = nn.Identity() if stride == 1 and inputs == outputs else nn.Sequential(
            nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))  # fmt: skip

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class ResNet8(nn.Sequential):
    """A stem and three basic blocks (32, 64, 128 channels at 32, 16, 8 pixels), 10 classes:
    ResNet-18's design at a size that trains on a CPU (0.3M parameters)."""

    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            BasicBlock(32, 32, 1), BasicBlock(32, 64, 2), BasicBlock(64, 128, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
        )  # fmt: skip


class Method:
    """One update of one training method on a fixed batch."""

    def __init__(self, kind: str, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, samples: int):
        self.kind, self.model, self.inputs, self.targets, self.samples = kind, model, inputs, targets, samples
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        if kind == "bp":
            self.optimizer = optimizer
        elif kind == "ovlr":
            self.solver = bbopt.OVLR(model, optimizer, sigma=1.0, samples=samples, seed=0)
        elif kind == "param_es":
            self.solver = ParameterES(model, optimizer, sigma=0.01, samples=samples, seed=0)
        else:
            raise ValueError(kind)

    def step(self) -> None:
        if self.kind == "bp":
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(self.inputs), self.targets).backward()
            self.optimizer.step()
            return
        candidates = self.solver.ask(self.inputs)  # [B, n, C]
        began = time.perf_counter()
        with torch.no_grad():  # bbopt's cross-entropy: log-sum-exp and a gather, 5x F.cross_entropy's speed here
            losses = bbopt.losses.cross_entropy(candidates, self.targets[:, None])  # [B, n]
        self.loss_seconds = time.perf_counter() - began  # the black-box loss, n x B evaluations
        self.solver.tell(losses)


def setup(model_name: str, device: str, kind: str, samples: int) -> Method:
    model, shape, batch = make_model(model_name)
    model = model.to(device)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn((batch, *shape), generator=generator).to(device)
    targets = torch.randint(0, 10, (batch,), generator=generator).to(device)
    return Method(kind, model, inputs, targets, samples)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(model_name, device, kind, samples, steps, queue) -> None:
    torch.set_num_threads(torch.get_num_threads())
    method = setup(model_name, device, kind, samples)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(steps):
            method.step()
        torch.cuda.synchronize()
        queue.put((torch.cuda.max_memory_allocated() - base) / 2**20)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        base = _rss_kib("VmRSS")
        for _ in range(steps):
            method.step()
        queue.put((_rss_kib("VmHWM") - base) / 1024)


def peak_memory_mib(model_name: str, device: str, kind: str, samples: int, steps: int) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(model_name, device, kind, samples, steps, queue))
    # glibc: serve every block >= 64 KiB by mmap and return it on free, so RSS follows the
    # tensors alive (the default dynamic threshold keeps freed blocks in the heap).
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        process.start()
    finally:
        if saved is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    result = queue.get(timeout=1800)
    process.join()
    return result


def measure(model_name: str, device: str, samples: int, rounds: int, es_rounds: int, kinds: list[str]) -> dict:
    methods = {kind: setup(model_name, device, kind, samples) for kind in kinds}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    ovlr_without_loss: list[float] = []
    for method in methods.values():  # warm-up (allocator, Adam state)
        method.step()
    for round_index in range(rounds):
        for kind, method in methods.items():
            if kind == "param_es" and round_index >= es_rounds:
                continue
            _sync(device)
            began = time.perf_counter()
            method.step()
            _sync(device)
            times[kind].append(time.perf_counter() - began)
            if kind == "ovlr":
                ovlr_without_loss.append(times[kind][-1] - method.loss_seconds)
    row = {
        "model": model_name,
        "parameters": sum(p.numel() for p in methods[kinds[0]].model.parameters()),
        "batch": methods[kinds[0]].inputs.shape[0],
        "samples": samples,
    }
    for kind in kinds:
        row[f"{kind}_seconds"] = statistics.median(times[kind])
        row[f"{kind}_memory_mib"] = peak_memory_mib(model_name, device, kind, samples, steps=3)
    row["ovlr_bp_time_ratio"] = row["ovlr_seconds"] / row["bp_seconds"]
    # Excluding the black-box loss on the B x n candidates (the n * T_L term of the paper's Table 1).
    row["ovlr_without_loss_bp_time_ratio"] = statistics.median(ovlr_without_loss) / row["bp_seconds"]
    row["ovlr_bp_memory_ratio"] = row["ovlr_memory_mib"] / row["bp_memory_mib"]
    if "param_es" in kinds:
        row["es_ovlr_time_ratio"] = row["param_es_seconds"] / row["ovlr_seconds"]
        row["es_ovlr_memory_ratio"] = row["param_es_memory_mib"] / row["ovlr_memory_mib"]
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn,resnet8")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30, help="timed updates per method")
    parser.add_argument("--es-rounds", type=int, default=3, help="timed updates of parameter-space ES")
    parser.add_argument("--no-es", action="store_true", help="skip parameter-space ES")
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "overhead.json")
    args = parser.parse_args(argv)
    kinds = ["bp", "ovlr"] + ([] if args.no_es else ["param_es"])
    rows = [measure(m, args.device, args.samples, args.rounds, args.es_rounds, kinds) for m in args.models.split(",")]
    columns = [
        ("model", "model", "s"),
        ("parameters", "parameters", "d"),
        ("bp_seconds", "BP s/update", ".4f"),
        ("ovlr_seconds", "OVLR s/update", ".4f"),
        ("param_es_seconds", "ES s/update", ".4f"),
        ("bp_memory_mib", "BP MiB", ".1f"),
        ("ovlr_memory_mib", "OVLR MiB", ".1f"),
        ("param_es_memory_mib", "ES MiB", ".1f"),
        ("ovlr_bp_time_ratio", "OVLR/BP time", ".3f"),
        ("ovlr_without_loss_bp_time_ratio", "w/o loss", ".3f"),
        ("ovlr_bp_memory_ratio", "OVLR/BP mem", ".3f"),
        ("es_ovlr_time_ratio", "ES/OVLR time", ".1f"),
        ("es_ovlr_memory_ratio", "ES/OVLR mem", ".1f"),
    ]
    print(f"\nPer-update cost, n = {args.samples} samples, device {args.device}\n")
    _report.table(rows, columns)
    _report.write(args.out, vars(args) | {"out": str(args.out)}, rows)
    return rows


if __name__ == "__main__":
    main()
