"""Bin packing: success rate of per-instance priority search (OVLR, CEM, ES) vs FFD/BFD, and a
set network trained across instances (zero-shot and as a warm start).

30 seeded instances (seeds 0..29) each of triplet-60, triplet-120 and uniform-120; the same
budget of decodes per instance and method; success = bins == the optimum (triplets) or ==
the L2 lower bound (uniform: the optimum is unknown, so "success" can be out of reach).
Methods, all with the completion decoder unless named:
  ovlr / es / cem   per-instance search on a learned priority vector (each registered solver's
                    fixed-problem preset with sigma 1, `bbopt.envs.binpacking.preset_for`)
  random            the same Gaussian priorities, no learning (what the decoder alone gives)
  ovlr/best_fit     OVLR with the best-fit decoder (what the decoder contributes)
  ffd / bfd         first / best fit decreasing
  set-net           a set network trained on a separate stream of instances of the family,
                    one decode of its output per instance (zero-shot)
  ovlr+warm         OVLR search started from the set network's priorities
Also: decodes per second of each decoder at 50 samples per call.

    python -m benchmarks.binpacking                # full protocol (about 20 minutes here)
    python -m benchmarks.binpacking --count 3 --budget 2000 --train-steps 5   # smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import bbopt
from bbopt.envs.binpacking import DECODERS, SearchResult, decode, make_instance
from bbopt.envs.binpacking.learned import priorities, train_set_network, zero_shot
from bbopt.envs.binpacking.runs import plot_success, print_table, run_instances, summarize
from benchmarks import _report

FAMILIES = (("triplet", 60), ("triplet", 120), ("uniform", 120))
SEARCH_METHODS = (*bbopt.presets.names("problem", output_space=True), "random", "ffd", "bfd")
TRAIN_SEED = 1_000_003  # the training stream: a generator seeded apart from the evaluation seeds 0..29


def decode_rate(instances, decoder: str, samples: int = 50, repeats: int = 5) -> float:
    generator = torch.Generator().manual_seed(0)
    values = [torch.randn(samples, inst.items, generator=generator) for inst in instances[:repeats]]
    began = time.perf_counter()
    for instance, batch in zip(instances[:repeats], values, strict=True):
        decode(instance, batch, decoder)
    return samples * len(values) / (time.perf_counter() - began)


def set_network_rows(family: str, items: int, instances, args) -> tuple[list[dict], dict, dict]:
    """Train on the family's training stream; zero-shot rows and warm-start priorities."""
    began = time.perf_counter()
    network, history = train_set_network(family, items, steps=args.train_steps, seed=TRAIN_SEED,
                                         progress=args.progress)  # fmt: skip
    seconds = time.perf_counter() - began
    rows = []
    for instance in instances:
        start = time.perf_counter()
        packing = zero_shot(network, instance)
        rows.append(SearchResult.single(instance, "set-net", packing, time.perf_counter() - start).to_dict())
    warm = {instance.name: priorities(network, instance) for instance in instances}
    training = {"seconds": seconds, "steps": args.train_steps, "first_excess_bins": history[0]["excess_bins"],
                "last_excess_bins": float(np.mean([h["excess_bins"] for h in history[-20:]]))}  # fmt: skip
    return rows, {"ovlr+warm": warm}, training


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--budget", type=int, default=20_000)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "binpacking.json")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, panels, extras = [], {}, {}
    for family, items in FAMILIES:
        label = f"{family}-{items}"
        instances = [make_instance(family, items, seed) for seed in range(args.count)]
        print(f"\n=== {label}: {args.count} instances, {args.budget:,} decodes per search")
        net_rows, inits, training = set_network_rows(family, items, instances, args)
        mine = run_instances(instances, SEARCH_METHODS, budget=args.budget, seed=0, progress=args.progress)
        mine += run_instances(instances, ["ovlr"], budget=args.budget, seed=0, decoder="best_fit", progress=False)
        mine[-len(instances) :] = [{**r, "solver": "ovlr/best_fit"} for r in mine[-len(instances) :]]
        mine += net_rows
        mine += run_instances(instances, ["ovlr+warm"], budget=args.budget, seed=0, inits=inits, progress=False)
        for row in mine:
            row["family"] = label
            row.pop("bin_of", None)
        summary = summarize(mine)
        print_table(summary, label)
        rates = {decoder: decode_rate(instances, decoder) for decoder in DECODERS}
        print("decodes/s (50 samples per call): " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))
        rows += mine
        panels[label] = summary
        extras[label] = {"summary": summary, "decodes_per_second": rates, "set_network_training": training}
    config = {
        "families": [f"{f}-{n}" for f, n in FAMILIES],
        "count": args.count,
        "budget": args.budget,
        "train_steps": args.train_steps,
        "train_seed": TRAIN_SEED,
        "instance_seeds": f"0..{args.count - 1}",
    }
    _report.write(args.out, config, rows, extras)
    plot_success(panels, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.png')}")
    return rows


if __name__ == "__main__":
    main()
