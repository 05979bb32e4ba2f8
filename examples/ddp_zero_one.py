"""OVLR on the 0-1 loss of digits over several processes: DistributedDataParallel, gloo, CPU.

    torchrun --standalone --nproc-per-node 2 examples/ddp_zero_one.py    # ~20 s here
    torchrun --standalone --nproc-per-node 1 examples/ddp_zero_one.py    # the same run in one process

Each rank trains on its shard of every batch (a `DistributedSampler`, ``--batch`` examples per
step in all); the solver is built on the DDP-wrapped model with the same seed on every rank:
each rank draws the whole batch's noise and keeps its rows, the one VJP's gradients are
all-reduced by DDP like backprop's, so a step equals one process's step on the concatenated
batch (`bbopt.distributed`; tested in tests/test_distributed.py). Rank 0 prints.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import bbopt
from bbopt.losses import ZeroOneLoss
from bbopt.policies import MLP
from bbopt.training import accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="examples per step, over all ranks")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if "RANK" not in os.environ:
        parser.error("launch with torchrun, e.g. torchrun --standalone --nproc-per-node 2 examples/ddp_zero_one.py")
    torch.set_num_threads(1)  # one core per rank
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        parser.error(f"--batch {args.batch} must split evenly over {world} ranks")

    history, seconds = fit_on_shards(args, rank, world)
    if rank == 0:
        accuracy_now = history[-1]["accuracy"]
        print(f"{world} rank(s): test accuracy {accuracy_now:.3f} after {args.epochs} epochs, {seconds:.1f} s")
    # fit_on_shards's DDP model and solver hold the process group and sit in reference cycles: left to the
    # interpreter's exit, gloo's threads die with them and a rank aborts ("terminate called without an
    # active exception", 3 launches in 30 here). Free them now, and let every rank get here first.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def fit_on_shards(args: argparse.Namespace, rank: int, world: int) -> tuple[list[dict], float]:
    images, labels = load_digits(return_X_y=True)
    images, labels = torch.tensor(images, dtype=torch.float32) / 16, torch.tensor(labels)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))
    train, test = order[:1200], order[1200:]
    dataset = TensorDataset(images[train], labels[train])
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch // world, sampler=sampler)  # bbopt.fit sets its epoch

    model = nn.parallel.DistributedDataParallel(MLP(64, 10, hidden=(128,), activation=nn.ReLU, seed=args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    solver = bbopt.OVLR(model, optimizer, sigma=1.0, samples=args.samples, seed=args.seed)  # one seed on every rank
    began = time.perf_counter()
    history = bbopt.fit(model, ZeroOneLoss(), loader, epochs=args.epochs, solver=solver, progress=False,
                        eval_data=[(images[test], labels[test])], metrics={"accuracy": accuracy})  # fmt: skip
    return history, time.perf_counter() - began


if __name__ == "__main__":
    main()
