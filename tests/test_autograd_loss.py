"""Solver.tell(autograd_loss=): a closed-form term's autograd gradient joins the solver's VJP in
one backward call and one optimizer step, in every mode; bad terms are refused before anything
changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bbopt
from bbopt.allocation import Optimal


def policy(seed=0):
    torch.manual_seed(seed)  # test process only
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)).double()


def gradients(model):
    return [p.grad.clone() for p in model.parameters()]


def penalty(model):
    return sum((p**2).sum() for p in model.parameters()) * 0.3


def closed_form_gradient(model):
    model.zero_grad()
    penalty(model).backward()
    return gradients(model)


def losses_of(candidates):
    return (candidates**2).sum(-1)


@pytest.mark.parametrize("name", ["ovlr", "es", "cem"])
def test_batch_mode_gradient_is_the_vjp_plus_the_terms_gradient(name):
    inputs = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    runs = []
    for with_term in (False, True):
        model = policy()
        solver = bbopt.make_solver(name, model, torch.optim.SGD(model.parameters(), lr=0.0), samples=6, seed=3)
        candidates = solver.ask(inputs)
        solver.tell(losses_of(candidates), autograd_loss=penalty(model) if with_term else None)
        runs.append(gradients(model))
    expected = closed_form_gradient(policy())
    for plain, combined, term in zip(*runs, expected, strict=True):
        torch.testing.assert_close(combined, plain + term)
        assert term.abs().max() > 1e-3  # the term matters


def test_no_input_allocated_and_episode_modes_add_the_term_too():
    expected = closed_form_gradient(policy())
    inputs = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cases = {
        "allocated": dict(samples=4, allocation=Optimal()),
        "episodes": dict(episodes=4),
    }
    for case, options in cases.items():
        runs = []
        for with_term in (False, True):
            model = policy()
            solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.0), seed=3, **options)
            if case == "allocated":
                solver.tell(losses_of(solver.ask(inputs)))  # the pilot: no update
                candidates = solver.ask(inputs)
            else:
                candidates = solver.ask(inputs, episode_ids=torch.arange(4))
            solver.tell(losses_of(candidates), autograd_loss=penalty(model) if with_term else None)
            runs.append(gradients(model))
        for plain, combined, term in zip(*runs, expected, strict=True):
            torch.testing.assert_close(combined, plain + term, msg=case)


def test_the_optimizer_takes_one_step_on_the_sum():
    inputs = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = policy()
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=6, seed=3)
    before = [p.detach().clone() for p in model.parameters()]
    solver.tell(losses_of(solver.ask(inputs)), autograd_loss=penalty(model))
    for old, new, grad in zip(before, model.parameters(), gradients(model), strict=True):
        torch.testing.assert_close(new.detach(), old - 0.1 * grad)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda model: 1.0, "expected a floating-point scalar tensor"),
        (lambda model: torch.ones(2, dtype=torch.float64, requires_grad=True), "expected a floating-point scalar"),
        (lambda model: torch.tensor(1), "expected a floating-point scalar"),
        (lambda model: penalty(model).detach(), "it has no graph"),
        (lambda model: penalty(model) * float("nan"), "is not finite"),
        (lambda model: penalty(model) * float("inf"), "is not finite"),
    ],
)
def test_a_bad_term_is_refused_before_anything_changes_and_the_tell_can_be_repeated(make, message):
    inputs = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = policy()
    solver = bbopt.OVLR(model, torch.optim.Adam(model.parameters(), lr=0.1), samples=6, seed=3)
    losses = losses_of(solver.ask(inputs))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        solver.tell(losses, autograd_loss=make(model))
    assert all(torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
    assert solver.steps == 0
    solver.tell(losses, autograd_loss=penalty(model))  # the same candidates, a good term
    assert solver.steps == 1


def test_the_pilot_round_refuses_a_term():
    inputs = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = policy()
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4, allocation=Optimal(), seed=3)
    candidates = solver.ask(inputs)
    with pytest.raises(ValueError, match="the pilot round makes no update"):
        solver.tell(losses_of(candidates), autograd_loss=penalty(model))
    solver.tell(losses_of(candidates))  # the pilot, told again without the term
    assert solver.pending
