"""Bin packing: generators and their optimum, bounds, BPPLIB files, decoders (against plain
Python references and as properties), envs, per-instance search, the set network."""

import itertools
import json
import subprocess
import sys
import warnings
from unittest import mock

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import bbopt
from bbopt.allocation import Equal, Optimal
from bbopt.envs.binpacking import (
    DECODERS,
    Instance,
    best_fit_decreasing,
    decode,
    fill_tiebreak,
    first_fit_decreasing,
    learned,
    lower_bound_l1,
    lower_bound_l2,
    make_instance,
    read_bpplib,
    read_instances,
    read_optima,
    search,
    triplet,
    uniform,
    write_bpplib,
)
from bbopt.envs.binpacking.learned import item_features, train_set_network, zero_shot
from bbopt.envs.binpacking.online import SlotScorer, evaluate_online, rollout
from bbopt.envs.binpacking.runs import read_rows
from bbopt.policies.set_network import SetNetwork

# ------------------------------------------------------------------ plain-Python references


def reference_item_fit(sizes, capacity, priorities, best):
    order = sorted(range(len(sizes)), key=lambda i: (-priorities[i], i))
    loads, bin_of = [], [None] * len(sizes)
    for i in order:
        fitting = [b for b, load in enumerate(loads) if load + sizes[i] <= capacity]
        if not fitting:
            loads.append(0)
            fitting = [len(loads) - 1]
        b = min(fitting, key=lambda b: (capacity - loads[b], b)) if best else fitting[0]
        loads[b] += sizes[i]
        bin_of[i] = b
    return bin_of


def reference_completion(sizes, capacity, priorities):
    """The completion decoder, one sample, written for reading rather than speed."""
    unpacked, bin_of, bin = set(range(len(sizes))), [None] * len(sizes), 0

    def best(candidates):  # highest priority, ties to the lower index
        return max(candidates, key=lambda i: (priorities[i], -i))

    def put(i):
        unpacked.discard(i)
        bin_of[i] = bin

    while unpacked:
        put(best(unpacked))
        room = capacity - sum(sizes[i] for i in range(len(sizes)) if bin_of[i] == bin)
        single = [i for i in unpacked if sizes[i] == room]
        with_partner = [i for i in unpacked if any(j != i and sizes[i] + sizes[j] == room for j in unpacked)]
        if room > 0 and single:
            put(best(single))
        elif room > 0 and with_partner:
            first = best(with_partner)
            put(first)
            put(best([j for j in unpacked if sizes[j] == room - sizes[first]]))
        else:
            while fits := [i for i in unpacked if sizes[i] <= room]:
                largest = max(sizes[i] for i in fits)
                chosen = best([i for i in fits if sizes[i] == largest])
                put(chosen)
                room -= sizes[chosen]
        bin += 1
    return bin_of


# ------------------------------------------------------------------ generators and bounds


@pytest.mark.parametrize("items", [3, 60, 120, 249, 501])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_generator_proves_its_optimum(items, seed):
    instance = triplet(items, seed=seed)
    assert instance.optimum == items // 3
    # proof: L1 equals the optimum (every bin exactly full), and the planted packing uses it
    assert lower_bound_l1(instance.sizes, 1000) == instance.optimum == instance.lower_bound
    loads = np.bincount(instance.certificate, weights=instance.sizes)
    assert len(loads) == instance.optimum and (loads == 1000).all()
    assert np.bincount(instance.certificate).tolist() == [3] * instance.optimum
    assert instance.sizes.min() >= 250 and instance.sizes.max() < 500
    firsts = [instance.sizes[instance.certificate == b].max() for b in range(instance.optimum)]
    assert min(firsts) >= 380 and max(firsts) <= 490


def test_generators_are_seeded_and_shuffled():
    assert np.array_equal(triplet(60, seed=5).sizes, triplet(60, seed=5).sizes)
    assert not np.array_equal(triplet(60, seed=5).sizes, triplet(60, seed=6).sizes)
    first_bin = triplet(60, seed=5).certificate[:3]
    assert len(set(first_bin.tolist())) > 1  # items of one planted bin are not adjacent
    u = uniform(500, seed=3)
    assert u.capacity == 150 and u.sizes.min() >= 20 and u.sizes.max() <= 100 and u.optimum is None
    assert np.array_equal(u.sizes, uniform(500, seed=3).sizes)
    assert len(np.unique(uniform(2000, seed=0).sizes)) == 81  # every size of [20, 100] occurs


def brute_force_optimum(sizes, capacity):
    """Fewest bins by trying every assignment (tiny instances only)."""
    for bins in range(1, len(sizes) + 1):
        for assignment in itertools.product(range(bins), repeat=len(sizes) - 1):
            loads = [0] * bins
            for size, b in zip(sizes, (0, *assignment), strict=True):
                loads[b] += size
            if max(loads) <= capacity:
                return bins
    raise AssertionError("unreachable")


@settings(max_examples=60, deadline=None)
@given(st.integers(5, 20).flatmap(lambda c: st.tuples(st.just(c), st.lists(st.integers(1, c), min_size=1, max_size=6))))
def test_lower_bounds_never_exceed_the_optimum(case):
    capacity, sizes = case
    optimum = brute_force_optimum(sizes, capacity)
    l1, l2 = lower_bound_l1(sizes, capacity), lower_bound_l2(sizes, capacity)
    assert l1 <= l2 <= optimum


def test_l2_beats_l1_where_it_should():
    # six items of 60 in bins of 100: no two share a bin; L1 = 4, L2 = 6
    assert lower_bound_l1([60] * 6, 100) == 4
    assert lower_bound_l2([60] * 6, 100) == 6
    # Martello-Toth's example shape: big items leave room the small ones cannot all use
    assert lower_bound_l2([70, 70, 70, 40, 40, 40], 100) == 5


# ------------------------------------------------------------------ instance validation

BAD_INSTANCES = [
    (dict(capacity=10, sizes=[3, 11]), r"items \[1\] \(sizes \[11\]\) exceed the capacity 10"),
    (dict(capacity=10, sizes=[3, 0]), r"items \[1\] are not positive"),
    (dict(capacity=10, sizes=[-2]), r"not positive"),
    (dict(capacity=0, sizes=[1]), r"Invalid capacity: 0"),
    (dict(capacity=-5, sizes=[1]), r"Invalid capacity"),
    (dict(capacity=2.5, sizes=[1]), r"Invalid capacity"),
    (dict(capacity=10, sizes=[]), r"Invalid sizes: shape \[0\]"),
    (dict(capacity=10, sizes=[[1, 2]]), r"Invalid sizes: shape \[1, 2\]"),
    (dict(capacity=10, sizes=[1.5, 2]), r"non-integer"),
    (dict(capacity=10, sizes=[1, float("nan")]), r"non-integer"),
    (dict(capacity=10, sizes=[6, 6, 6], optimum=2), r"Invalid optimum: 2 .*lower bound 3"),
    (dict(capacity=10, sizes=[6, 6], optimum=3), r"Invalid optimum: 3 .*item count 2"),
    (dict(capacity=10, sizes=[5, 5], certificate=[0, 0]), r"certificate: given without an optimum"),
    (dict(capacity=10, sizes=[6, 5], optimum=2, certificate=[0, 0]), r"certificate: bins outside|holds 11"),
    (dict(capacity=10, sizes=[5, 5], optimum=1, certificate=[0]), r"certificate: shape \[1\]"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_INSTANCES)
def test_bad_instances_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Instance(**kwargs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: triplet(61), r"Invalid items: 61 \(expected a positive multiple of 3\)"),
        (lambda: triplet(0), r"Invalid items"),
        (lambda: uniform(0), r"Invalid items"),
        (lambda: uniform(10, low=0), r"Invalid sizes range"),
        (lambda: uniform(10, high=151), r"Invalid sizes range"),
    ],
)
def test_bad_generator_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------ BPPLIB files


def test_bpplib_round_trip(tmp_path):
    instance = uniform(120, seed=4)
    path = write_bpplib(instance, tmp_path / "u120_04.txt")
    assert path.read_text().splitlines()[:2] == ["120", "150"]
    back = read_bpplib(path)
    assert back.capacity == 150 and np.array_equal(back.sizes, instance.sizes) and back.name == "u120_04"
    assert read_bpplib(path, optimum=back.lower_bound).optimum == back.lower_bound


def test_bpplib_size_count_pairs_and_blank_lines(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("5\n100\n\n60 2\n30 3\n")
    assert read_bpplib(path).sizes.tolist() == [60, 60, 30, 30, 30]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3\n10\n4\nfour\n5\n", r"bad.txt:4: expected integers, got 'four'"),
        ("3\n10\n4\n5\n", r"bad.txt: the header says 3 items, the file lists 2"),
        ("2\n10\n4\n5\n6\n", r"bad.txt:5: the header says 2 items, the file lists more"),
        ("2\n10\n4\n11\n", r"bad.txt:4: size 11 \(expected 1..capacity 10\)"),
        ("2\n10\n4\n0\n", r"bad.txt:4: size 0"),
        ("2 3\n10\n4\n5\n", r"bad.txt:1: expected one integer"),
        ("2\n0\n4\n5\n", r"bad.txt:2: capacity 0"),
        ("0\n10\n", r"bad.txt:1: item count 0"),
        ("2\n", r"expected the item count, the capacity and the sizes"),
        ("2\n10\n4 1 1\n5\n", r"bad.txt:3: expected a size \(or 'size count'\), got 3 numbers"),
        ("2\n10\n4 0\n", r"bad.txt:3: multiplicity 0"),
        ("2\n10\n4.5\n5\n", r"bad.txt:3: expected integers"),
    ],
)
def test_malformed_bpplib_files_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_bpplib(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("a 3 4\n", r"optima.txt:1: expected 'name"), ("a x\n", r":1: expected"), ("a 3\na 4\n", r":2: 'a' twice")],
)
def test_malformed_optima_files(tmp_path, text, message):
    (tmp_path / "optima.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_optima(tmp_path / "optima.txt")


def test_optimum_below_the_lower_bound_names_the_file(tmp_path):
    write_bpplib(triplet(60, seed=0), tmp_path / "t.txt")
    with pytest.raises(ValueError, match=r"t.txt: Invalid optimum: 19"):
        read_instances(tmp_path / "t.txt", optima={"t": 19})


def test_read_instances_from_files_and_directories(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    for k in (2, 0, 1):
        write_bpplib(triplet(60, seed=k), folder / f"t60_{k}.txt")
    names = [instance.name for instance in read_instances([folder])]
    assert names == ["t60_0", "t60_1", "t60_2"]
    assert len(read_instances([folder / "t60_1.txt", folder])) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no instance files"):
        read_instances(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_instances(tmp_path / "missing.txt")


# ------------------------------------------------------------------ decoders


@st.composite
def instances_and_priorities(draw):
    capacity = draw(st.integers(1, 60))
    sizes = draw(st.lists(st.integers(1, capacity), min_size=1, max_size=25))
    samples = draw(st.integers(1, 4))
    values = draw(st.lists(st.lists(st.integers(-3, 3), min_size=len(sizes), max_size=len(sizes)),
                           min_size=samples, max_size=samples))  # fmt: skip
    return Instance(capacity, sizes), np.array(values, dtype=float)  # small ints: many ties


@settings(max_examples=150, deadline=None)
@given(instances_and_priorities())
def test_every_decoded_packing_is_feasible_and_matches_the_reference(case):
    instance, values = case
    for decoder in DECODERS:
        packing = decode(instance, values, decoder)
        assert packing.bin_of.shape == values.shape
        for row, bins, fill, priorities in zip(packing.bin_of, packing.bins, packing.fill, values, strict=True):
            assert sorted(set(row.tolist())) == list(range(bins))  # every item in exactly one bin, no gaps
            loads = np.bincount(row, weights=instance.sizes, minlength=fill.size)
            assert np.array_equal(loads, fill) and loads.max() <= instance.capacity
            if decoder == "completion":
                expected = reference_completion(instance.sizes.tolist(), instance.capacity, priorities.tolist())
            else:
                expected = reference_item_fit(instance.sizes.tolist(), instance.capacity, priorities.tolist(),
                                              best=decoder == "best_fit")  # fmt: skip
            assert row.tolist() == expected
        assert np.all((packing.loss - packing.bins >= 0) & (packing.loss - packing.bins < 1))


def test_decoders_take_torch_and_one_dimensional_priorities():
    instance = triplet(60, seed=0)
    values = torch.randn(8, 60, generator=torch.Generator().manual_seed(0))
    for decoder in DECODERS:
        batch = decode(instance, values, decoder)
        single = decode(instance, values[3], decoder)
        assert np.array_equal(batch.bin_of[3], single.bin_of[0])


def test_completion_decoder_finds_planted_bins_that_fit_decoders_miss():
    """Priorities that list the planted triples in order give the optimum for every decoder;
    from no information at all (equal priorities) only the completion decoder gets close."""
    instance = triplet(60, seed=0)
    planted = -instance.certificate.astype(float)  # bin 0's items first, then bin 1's...
    for decoder in DECODERS:
        assert decode(instance, planted, decoder).bins[0] == 20
    flat = np.zeros(60)
    assert decode(instance, flat, "completion").bins[0] <= 21
    assert first_fit_decreasing(instance).bins[0] >= 22


def test_loss_ranks_bins_first_then_concentration_of_free_space():
    fill = np.array([[10, 10, 10, 0], [10, 10, 6, 4], [10, 8, 8, 4], [10, 10, 9, 1], [10, 10, 10, 10]])
    bins = (fill > 0).sum(axis=1)
    tie = fill_tiebreak(fill, bins, 10)
    assert tie[0] == 0 and tie[4] == 0  # perfect packings
    assert tie.min() >= 0 and tie.max() < 1
    assert tie[3] < tie[1] < tie[2]  # free space in one bin < spread over two < spread wider
    # from bins = 3 (3 perfect) to 4: any 4-bin packing loses to any 3-bin one
    assert (bins + tie)[0] < (bins + tie)[1:4].min()


def test_ffd_and_bfd_on_a_textbook_instance():
    # the classic example where FFD is optimal and first fit in the given order is not
    instance = Instance(10, [2, 5, 4, 7, 1, 3, 8])
    assert first_fit_decreasing(instance).bins[0] == 3 == best_fit_decreasing(instance).bins[0]
    assert decode(instance, -np.arange(7.0), "first_fit").bins[0] == 4
    assert instance.lower_bound == 3


@pytest.mark.parametrize(
    ("priorities", "message"),
    [
        (np.zeros(59), r"Invalid priorities: shape \[59\] \(expected \[60\] or \[samples, 60\]"),
        (np.zeros((2, 3, 60)), r"shape \[2, 3, 60\]"),
        (np.array([[0.0] * 59 + [np.nan]] * 2), r"NaN or inf in samples \[0, 1\]"),
        (np.array([[0.0] * 60, [0.0] * 59 + [np.inf]]), r"NaN or inf in samples \[1\]"),
    ],
)
def test_bad_priorities(priorities, message):
    with pytest.raises(ValueError, match=message):
        decode(triplet(60, seed=0), priorities)


def test_unknown_decoder():
    with pytest.raises(ValueError, match=r"Invalid decoder: 'next_fit'"):
        decode(triplet(60, seed=0), np.zeros(60), "next_fit")


# ------------------------------------------------------------------ Gymnasium


@pytest.mark.parametrize("env_id", ["bbopt/BinPacking-v0", "bbopt/BinPackingOnline-v0"])
def test_envs_pass_check_env_and_are_seeded(env_id):
    env = gymnasium.make(env_id, family="uniform", items=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gymnasium's advice against unbounded Boxes: priorities are unbounded
        check_env(env.unwrapped)
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    other, _ = env.reset(seed=4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_one_step_env_reports_the_packing():
    instance = triplet(60, seed=0)
    env = gymnasium.make("bbopt/BinPacking-v0", instance=instance)
    observation, _ = env.reset(seed=0)
    assert np.allclose(observation * 1000, instance.sizes)
    _, reward, terminated, truncated, info = env.step(-instance.certificate.astype(np.float32))
    assert terminated and not truncated
    assert info["bins"] == 20 and info["success"] and info["optimum"] == 20 and reward == -20.0
    with pytest.raises(ValueError, match="Invalid priorities"):
        env.step(np.zeros(10))


def test_online_env_return_is_minus_bins_and_every_choice_is_feasible():
    instance = uniform(40, seed=1)
    env = gymnasium.make("bbopt/BinPackingOnline-v0", instance=instance)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    total, done, info = 0.0, False, {}
    while not done:
        observation, reward, done, _, info = env.step(rng.normal(size=40))
        assert observation.min() >= 0  # room never negative
        total += reward
    assert total == -info["bins"] and info["bins"] >= instance.lower_bound
    # scoring slot 0 highest always (first fit in arrival order) gives first fit's bin count
    env.reset(seed=0)
    first_slot = -np.arange(40.0)
    while True:
        _, _, done, _, info = env.step(first_slot)
        if done:
            break
    assert info["bins"] == decode(instance, -np.arange(40.0), "first_fit").bins[0]
    with pytest.raises(ValueError, match="Invalid action: expected 40 finite scores"):
        env.reset(seed=0)
        env.step(np.full(40, np.nan))


# ------------------------------------------------------------------ search and the set network


@pytest.mark.parametrize("solver", ["ovlr", "es", "cem", "random"])
def test_search_spends_the_budget_exactly_and_is_deterministic(solver):
    instance = uniform(60, seed=0)
    a = search(instance, solver, budget=333, seed=1, stop_at_bound=False)
    b = search(instance, solver, budget=333, seed=1, stop_at_bound=False)
    assert a.evaluations == 333 and a.bins == b.bins and np.array_equal(a.bin_of, b.bin_of)
    packing = decode(instance, -a.bin_of.astype(float), "first_fit")  # the reported packing is real
    loads = np.bincount(a.bin_of, weights=instance.sizes)
    assert loads.max() <= instance.capacity and len(loads) == a.bins and packing.bins[0] <= a.bins


def test_ovlr_search_solves_triplet_60_where_random_priorities_do_not():
    """The learning matters on triplet-120: over three fixed instances OVLR reaches the optimum
    on each within 20,000 decodes; random priorities with the same decoder and noise do not."""
    instances = [triplet(120, seed=10_000 + k) for k in range(3)]
    learned = [search(instance, "ovlr", budget=20_000, seed=0) for instance in instances]
    assert all(result.success for result in learned), [r.bins for r in learned]
    control = [search(instance, "random", budget=20_000, seed=0) for instance in instances]
    assert sum(result.success for result in control) < 3


def test_search_rejects_bad_arguments():
    instance = triplet(60, seed=0)
    with pytest.raises(ValueError, match=r"Invalid solver name: 'sgd' \(expected one of \['cem', 'es', 'ovlr'\]\)"):
        search(instance, "sgd")
    with pytest.raises(ValueError, match="Invalid budget: 0"):
        search(instance, budget=0)
    with pytest.raises(ValueError, match=r"Invalid init: expected 60 finite priorities"):
        search(instance, init=np.zeros(5))


def test_set_network_is_permutation_equivariant_and_takes_any_set_size():
    network = SetNetwork(4, seed=0)
    items = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(0))
    permutation = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(network(items)[:, permutation], network(items[:, permutation]), atol=1e-6)
    assert network(torch.randn(3, 7, 4)).shape == (3, 7)
    with pytest.raises(ValueError, match=r"Invalid items: shape \[30, 4\]"):
        network(items[0])


def test_item_features_ignore_item_order_and_scale():
    instance = uniform(40, seed=2)
    shuffled = Instance(150, instance.sizes[::-1].copy())
    doubled = Instance(300, instance.sizes * 2)
    assert torch.allclose(item_features(instance).flip(0), item_features(shuffled))
    assert torch.allclose(item_features(instance), item_features(doubled))


def test_set_network_training_reaches_first_fit_decreasing_on_unseen_instances():
    """60 steps take the zero-shot packing of 20 unseen instances from a start clearly worse than
    first-fit-decreasing to FFD's level (26.25 bins on average, lower bound 25.8). The start must be
    checked: initializations differ by more than a bin (26.2 to 27.35 at seeds 0-2, so seed 0's would
    pass untrained); seed 1's packs 27.35."""
    network, history = train_set_network("uniform", 60, steps=60, instances_per_step=8, seed=1)
    untrained = SetNetwork(4, seed=1)
    unseen = [uniform(60, seed=k) for k in range(20)]
    after = np.mean([zero_shot(network, instance).bins[0] for instance in unseen])
    before = np.mean([zero_shot(untrained, instance).bins[0] for instance in unseen])
    ffd = np.mean([first_fit_decreasing(instance).bins[0] for instance in unseen])
    assert before > ffd + 0.5, (before, ffd)  # a start that has something to learn
    assert after <= ffd + 0.1, (before, after, ffd)
    assert len(history) == 60 and history[-1]["excess_bins"] < history[0]["excess_bins"]


def test_set_network_on_mixed_batches_with_equal_allocation_matches_the_plain_split():
    """Mixed triplet/uniform batches; allocation=Equal() (flat rows, groups, decoded per
    instance) trains the same network as the plain [B, n] path."""
    options = {"steps": 3, "instances_per_step": 4, "samples": 8, "seed": 3}
    plain, plain_history = train_set_network(("triplet", "uniform"), 30, **options)
    flat, flat_history = train_set_network(("triplet", "uniform"), 30, allocation=Equal(), **options)
    for a, b in zip(plain.parameters(), flat.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert [h["loss"] for h in plain_history] == pytest.approx([h["loss"] for h in flat_history])


def test_set_network_with_a_pilot_allocator_decodes_each_row_for_its_own_instance():
    seen = []
    real = learned.decode

    def recording(instance, candidates, decoder="completion"):
        seen.append((instance.name, candidates.shape[0]))
        return real(instance, candidates, decoder)

    with mock.patch.object(learned, "decode", recording):
        _, history = train_set_network(("triplet", "uniform"), 30, steps=2, instances_per_step=4, samples=8,
                                       allocation=Optimal(), seed=0)  # fmt: skip
    assert len(history) == 2
    per_step = [seen[:8], seen[8:16]]  # pilot round (4 decodes) + allocated round (4 decodes) per step
    for rounds in per_step:
        pilot, allocated = rounds[:4], rounds[4:]
        assert [n for _, n in pilot] == [2] * 4  # one antithetic pair per instance
        assert sum(n for _, n in allocated) == 4 * 8 - 4 * 2 and all(n >= 2 and n % 2 == 0 for _, n in allocated)
        assert [name for name, _ in pilot] == [name for name, _ in allocated]
        assert [name.split("-")[0] for name, _ in pilot] == ["triplet", "uniform"] * 2


def test_set_network_refuses_an_empty_family_list():
    with pytest.raises(ValueError, match="Invalid family"):
        train_set_network((), 30, steps=1)


# ------------------------------------------------------------------ online env, episode mode


def test_online_episode_training_reaches_best_fit_from_a_worse_start():
    """OVLR in episode mode on BinPackingOnline-v0 (uniform-60): after 20 updates of 32
    episodes, the noiseless slot scorer packs 20 held-out instances no worse than online best
    fit, starting from a policy that is worse than it."""
    policy = SlotScorer(seed=4)
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=0.01), sigma=0.5, episodes=32, seed=0)
    held_out = list(range(10_000, 10_020))
    instances = [make_instance("uniform", 60, seed) for seed in held_out]
    best_fit = np.mean([decode(i, -np.arange(60.0), "best_fit").bins[0] - i.lower_bound for i in instances])
    before = evaluate_online(policy, "uniform", 60, held_out)
    for update in range(20):
        rollout(solver, "uniform", 60, [update * 100 + k for k in range(16)] * 2)
    after = evaluate_online(policy, "uniform", 60, held_out)
    assert before > best_fit >= after - 1e-9, (before, best_fit, after)


def test_slot_scorer_is_equivariant_in_the_slots():
    policy = SlotScorer(seed=0)
    observation = torch.tensor([[0.3, 0.5, 0.2, 1.0, 0.7, 0.4]])
    swapped = observation[:, [0, 1, 5, 4, 3, 2]]
    assert torch.allclose(policy(observation)[:, [3, 2, 1, 0]], policy(swapped), atol=1e-6)


# ------------------------------------------------------------------ CLI


def run_cli(*arguments, cwd):
    return subprocess.run([sys.executable, "-m", "bbopt.cli", "binpacking", *map(str, arguments), "--no-progress"],
                          capture_output=True, text=True, cwd=cwd)  # fmt: skip


def test_cli_on_generated_instances_writes_table_json_and_plot(tmp_path):
    done = run_cli("--family", "triplet", "--items", 60, "--count", 2, "--budget", 3000, "--solvers", "ovlr,ffd",
                   "--out", tmp_path, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 triplet-60 instances" in done.stdout and "ffd" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["solver"] for r in results["summary"]] == ["ovlr", "ffd"]
    assert read_rows(tmp_path / "runs.jsonl") == results["runs"]  # each run as it ended
    for row in results["runs"]:
        assert row["optimum"] == 20 and row["lower_bound"] == 20 and len(row["bin_of"]) == 60
    assert (tmp_path / "success.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_on_bpplib_files(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    write_bpplib(uniform(40, seed=0), folder / "a.txt")
    write_bpplib(uniform(40, seed=1), tmp_path / "b.txt")
    done = run_cli("--instances", folder, tmp_path / "b.txt", "--budget", 500, "--solvers", "ovlr",
                   "--out", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [r["instance"] for r in runs] == ["a", "b"] and all(r["optimum"] is None for r in runs)
    (folder / "c.txt").write_text("2\n10\n4\nx\n")
    done = run_cli("--instances", folder, "--out", tmp_path / "out2", cwd=tmp_path)
    assert done.returncode == 2 and "c.txt:4: expected integers" in done.stderr
    (folder / "c.txt").unlink()
    optima = tmp_path / "optima.txt"
    optima.write_text("# name optimum (both lower bounds are 16)\na 17\nb, 16\n")
    done = run_cli("--instances", folder, tmp_path / "b.txt", "--optima", optima, "--budget", 200, "--solvers", "ffd",
                   "--out", tmp_path / "out3", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads((tmp_path / "out3" / "results.json").read_text())["runs"]
    assert [r["optimum"] for r in runs] == [17, 16] and [r["lower_bound"] for r in runs] == [16, 16]
    optima.write_text("a 17\nzzz 3\n")
    done = run_cli("--instances", folder, "--optima", optima, "--out", tmp_path / "out4", cwd=tmp_path)
    assert done.returncode == 2 and "no instance file named ['zzz']" in done.stderr
    done = run_cli("--solvers", "ovlr,sa", "--out", tmp_path / "out4", cwd=tmp_path)
    assert done.returncode == 2 and "Invalid solvers: ['sa']" in done.stderr
