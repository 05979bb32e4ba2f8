"""Seeds derived from one seed by numpy's SeedSequence, and the fixed episode-seed ranges of evaluation.

One user seed feeds several generators (a network's initialization, a solver's noise, a trainer's
episode seeds, a peer's RNG). Giving each the same integer would make two generators of one kind
draw the same stream; adding offsets (``seed + 1``, ``seed + 7919``, ``seed + 1000 * run``)
collides as soon as two offsets meet. `derive` instead hashes the seed and a path of stream
numbers through `numpy.random.SeedSequence`: ``derive(seed, k)`` is the first word of
``SeedSequence(seed).spawn(k + 1)[k]`` (the same child, ``spawn_key=(k,)``), ``derive(seed, k, j)``
that child's child ``j``, and so on, so streams are independent whatever the numbers.

Evaluation episodes are not derived: they are fixed reset-seed ranges shared by every method and
seed, so that returns are comparable, and kept apart from training episodes (which draw
pseudo-random 31-bit seeds, `bbopt.rollout.Trainer.episode_seeds`).
"""

from __future__ import annotations

import numpy as np

from bbopt.checks import check_int

VALIDATION_EPISODES = 10**6  # first reset seed of the evaluations during training (model selection, curves)
TEST_EPISODES = 2 * 10**6  # first reset seed of a finished run's final evaluation (`bbopt evaluate`)


def derive(seed: int, *stream: int) -> int:
    """The seed of stream ``stream`` (a path of spawn indices) under ``seed``, in [1, 2**31 - 1].

    Never 0 (pycma reads seed 0 as "seed from the clock") and within a signed 32-bit int, so it
    suits torch, numpy, Gymnasium, MuJoCo, Ray and pycma alike.
    """
    check_int(seed, "seed", minimum=0)
    if not stream:
        raise ValueError("derive needs at least one stream number (derive(seed, k))")
    for index, k in enumerate(stream):
        check_int(k, f"stream[{index}]", minimum=0)
    word = np.random.SeedSequence(seed, spawn_key=tuple(stream)).generate_state(1, dtype=np.uint32)[0]
    return int(word) % (2**31 - 1) + 1
