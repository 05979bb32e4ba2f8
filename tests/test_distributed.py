"""Data-parallel OVLR (bbopt.distributed): 2 gloo processes on the CPU against one process on
the concatenated batch, refusals that reach every rank, and the seeds' contract."""

from __future__ import annotations

import datetime
import gc
import os
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import bbopt
from bbopt.allocation import Optimal
from bbopt.noise import Diagonal
from bbopt.policies import MLP
from bbopt.sigma import Learned

BATCH, SPLIT, STEPS = 7, 4, 3  # rank 0 holds examples 0..3, rank 1 examples 4..6 (unequal shards)
INPUTS = torch.randn(BATCH, 5, generator=torch.Generator().manual_seed(1))
TARGETS = torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(2))


def squared_loss(candidates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((candidates - targets[:, None]) ** 2).sum(-1)


def make_solver(policy, name, seed=0):
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    if name == "learned_sigma":
        return bbopt.OVLR(policy, optimizer, sigma=Learned(0.5, lr=0.1), samples=6, antithetic=True, seed=seed)
    if name == "diagonal":
        return bbopt.OVLR(policy, optimizer, noise=Diagonal(0.5), samples=6, seed=seed)
    return bbopt.make_solver(name, policy, optimizer, sigma=0.5, samples=6, seed=seed)


def run_steps(solver, inputs, targets, steps=STEPS):
    for _ in range(steps):
        candidates = solver.ask(inputs)
        solver.tell(squared_loss(candidates, targets))


def single_process(name):
    policy = MLP(5, 3, hidden=(8,), seed=3)
    solver = make_solver(policy, name)
    run_steps(solver, INPUTS, TARGETS)
    return [p.detach().clone() for p in policy.parameters()], solver.noise.state_dict()


def _shard(rank):
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, BATCH)
    return INPUTS[rows], TARGETS[rows]


def _equal_update(rank, name, out):
    model = nn.parallel.DistributedDataParallel(MLP(5, 3, hidden=(8,), seed=3))
    solver = make_solver(model, name)
    run_steps(solver, *_shard(rank))
    torch.save({"parameters": [p.detach().clone() for p in model.module.parameters()],
                "noise": solver.noise.state_dict()}, out)  # fmt: skip


def _refusal(rank, name, out):
    model = nn.parallel.DistributedDataParallel(MLP(5, 3, hidden=(8,), seed=3))
    solver = make_solver(model, name)
    inputs, targets = _shard(rank)
    before = [p.detach().clone() for p in model.parameters()]
    candidates = solver.ask(inputs)
    losses = squared_loss(candidates, targets)
    if rank == 1:
        losses[0, 2] = float("nan")
    messages = []
    for _ in range(2):  # refused twice: each tell has its own agreement
        try:
            solver.tell(losses)
        except ValueError as error:
            messages.append(str(error))
    message = messages[-1] if len(messages) == 2 and messages[0] == messages[1] else messages
    unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    solver.tell(squared_loss(candidates, targets))  # corrected losses: the step goes through on both
    run_steps(solver, inputs, targets, steps=1)  # and a new ask/tell after it
    torch.save({"message": message, "unchanged": unchanged, "steps": solver.steps,
                "parameters": [p.detach().clone() for p in model.module.parameters()]}, out)  # fmt: skip


def _contract(rank, name, out):
    results = {}
    for key, build in {
        "seeds": lambda m: make_solver(m, "ovlr", seed=rank),
        "allocation": lambda m: bbopt.OVLR(m, torch.optim.SGD(m.parameters(), lr=0.1), samples=8, allocation=Optimal()),
        "episodes": lambda m: bbopt.OVLR(m, torch.optim.SGD(m.parameters(), lr=0.1), episodes=4),
    }.items():
        try:
            build(nn.parallel.DistributedDataParallel(MLP(5, 3, hidden=(8,), seed=3)))
            results[key] = None
        except ValueError as error:
            results[key] = str(error)
    model = nn.parallel.DistributedDataParallel(MLP(5, 3, hidden=(8,), seed=3))
    fresh = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4)  # no seed: rank 0's
    results["fresh_state"] = fresh.generator.get_state()
    try:
        fresh.ask()
    except ValueError as error:
        results["no_inputs"] = str(error)
    torch.save(results, out)


WORKERS = {"equal_update": _equal_update, "refusal": _refusal, "contract": _contract}


def _worker(rank, world, port, job, name, folder):
    torch.set_num_threads(1)
    out = os.path.join(folder, f"rank{rank}.pt")
    try:
        # a rank left waiting in a collective fails the test after a minute, instead of hanging it
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))  # fmt: skip
        WORKERS[job](rank, name, out)
        # The job's DDP model and solver hold the process group and sit in reference cycles: left to
        # the interpreter's finalization, gloo's threads die with it and a rank aborted twice in CI
        # ("terminate called without an active exception"). Free them while the interpreter is alive,
        # and let both ranks get there before either tears down (rank 0 hosts the TCP store).
        gc.collect()
        dist.barrier()
    except BaseException:
        torch.save({"error": traceback.format_exc()}, out)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(job, name, tmp_path, world=2):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_worker, args=(world, port, job, name, str(tmp_path)), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


@pytest.mark.parametrize("name", ["ovlr", "es", "cem", "learned_sigma", "diagonal"])
def test_two_ranks_equal_one_process_on_the_concatenated_batch(name, tmp_path):
    """Unequal shards (4 + 3 examples), 3 Adam steps: each rank's parameters (and a learned
    sigma or shape) equal one process's on all 7 examples with the same seed."""
    ranks = run_ranks("equal_update", name, tmp_path)
    parameters, noise = single_process(name)
    for result in ranks:
        for got, expected in zip(result["parameters"], parameters, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        for key, value in noise.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(result["noise"][key], value, rtol=1e-5, atol=1e-6)


def test_a_refusal_on_one_rank_refuses_on_every_rank_before_the_all_reduce(tmp_path):
    zero, one = run_ranks("refusal", "ovlr", tmp_path)
    assert "non-finite" in one["message"]
    assert "rank(s) [1] refused" in zero["message"]
    assert zero["unchanged"] and one["unchanged"]
    assert zero["steps"] == one["steps"] == 2  # the corrected tell and the next step went through on both
    for a, b in zip(zero["parameters"], one["parameters"], strict=True):
        assert torch.equal(a, b)


def test_the_ranks_contract_seeds_modes_and_inputs(tmp_path):
    zero, one = run_ranks("contract", "ovlr", tmp_path)
    for result in (zero, one):
        assert "rank(s) [1] hold another generator state" in result["seeds"]
        assert "DistributedDataParallel is for batch mode" in result["allocation"]
        assert "DistributedDataParallel is for batch mode" in result["episodes"]
        assert "ask(inputs)" in result["no_inputs"]
    assert torch.equal(zero["fresh_state"], one["fresh_state"])  # no seed: rank 0's fresh generator everywhere
