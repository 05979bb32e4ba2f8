"""The ask/tell solver base: everything but a solver's weighting rule.

Candidates are drawn around the policy's deterministic output ``mu`` by a noise model
(`bbopt.noise`: ``x = mu + sigma * A eps``, or bits). A solver turns the losses of its
candidates into one weight per sample; the model turns the weights into one output-space signal
``v`` of ``mu``'s shape, and the policy is trained by one vector-Jacobian product,
``mu.backward(v)``, followed by one ``optimizer.step()``; then the model updates its own step
size and shape from the same weights. Sampling, antithetic pairing, bookkeeping, loss
validation, the VJP and ``state_dict`` live here; a subclass writes only

* ``weights(losses, counts) -> [G, n]``: one weight per sample, positive for bad samples (the
  weight of each sample in the estimate of the gradient of the expected loss), and sets
* ``natural = True`` if its signal is ``sum_i w_i (x_i - mu)`` (CEM's regression onto its
  elites) rather than the likelihood-ratio gradient ``sum_i w_i grad_mu log p(x_i)``.

Three modes, chosen by how the solver is used:

* no input: ``ask() -> [n, d]``, ``tell(losses[n])`` (one group);
* a batch of inputs: ``ask(inputs[B, ...]) -> [B, n, d]``, ``tell(losses[B, n])``; the n
  samples of one input form a group (ranking, baselines and antithetic pairs stay inside it);
* a batch with ``allocation=`` (`bbopt.allocation`): the per-step budget ``B * n`` goes
  unevenly across the inputs; ``ask(inputs) -> [N, d]`` flat, input after input, with
  ``solver.groups[N]`` the input of each row, ``tell(losses[N])``. An allocator that needs a
  pilot makes a step two rounds (``solver.pending`` between them): ask and tell the pilot, then
  ask (same inputs) and tell the rest;
* episodes (``episodes=N``): ``ask(observations[m, ...], episode_ids=[m])`` once per time
  step for the m live episodes, one sample each; ``tell(losses[N])`` attributes each episode's
  loss to all its steps (`bbopt.episodes`): one batched forward and one VJP.

The gradient sent back is that of the mean over groups of the expected loss, like
``loss.mean()`` over a batch in backprop.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bbopt.allocation import Allocation, Pilot
from bbopt.checks import check_bool, check_choice, check_float, check_int
from bbopt.distributed import shard_of
from bbopt.episodes import AR1Sequences, EpisodeRecord
from bbopt.noise import Noise, NoiseModel, Scaled
from bbopt.noise.model import odd_weights
from bbopt.sigma import SigmaRule, SigmaValue
from bbopt.validation import as_losses, check_state, indices, loss_stats

__all__ = ["Solver", "make_noise_model"]

_NAN_POLICIES = ("raise", "worst")
MAX_HALVINGS = 10  # max_kl's line search: past 2**-10 of the update, the update is undone


def make_noise_model(noise: str | Noise | NoiseModel, sigma: SigmaValue | SigmaRule | None, df: float) -> NoiseModel:
    """The model a solver uses: ``noise`` as is if it is a model (``sigma`` must then be
    None: the model holds its rule), else `bbopt.noise.Scaled` with ``sigma`` (default 0.1)."""
    if isinstance(noise, NoiseModel):
        if sigma is not None:
            raise ValueError("Invalid sigma: the noise model holds its own step-size rule; pass sigma to the model")
        return noise
    return Scaled(0.1 if sigma is None else sigma, family=noise, df=df)


@dataclass
class _Asked:
    """What one group-mode ``ask`` left for ``tell``: mu with its graph, and the noise."""

    mu: torch.Tensor  # [G, d], attached to the policy's graph
    noise: torch.Tensor  # [G, n, width]; with paired, [G, n/2, width]: the first of each pair (eps, -eps)
    batched: bool  # ask(inputs) rather than ask()
    paired: bool = False
    refused: bool = False  # a tell of these candidates was refused: ask() may replace them
    spent: bool = False  # ... after the VJP had run: only ask() can follow
    total: int | None = None  # under DDP: the groups of the whole batch (else mu's)


@dataclass
class _Allocated:
    """One allocated batch step (`bbopt.allocation`): mu with its graph, the inputs, and per
    round the rows asked: their input (``groups``), noise and, once told, losses."""

    mu: torch.Tensor  # [B, d], attached to the policy's graph
    inputs: torch.Tensor
    groups: torch.Tensor  # [R] input of each asked row of the current round
    noise: torch.Tensor  # [R, width]
    sizes: torch.Tensor  # [B] rows per input in the current round
    pilot: tuple | None = None  # (groups, noise, losses[B, k]) of a told pilot
    summary: Pilot | None = None  # what the told pilot says to the allocator
    piloting: bool = False  # the current round is the pilot
    pending: bool = False  # the pilot was told; the rest of the budget is to be asked
    batched = False  # refusals name indices of the flat losses
    refused: bool = False
    spent: bool = False


class Solver:
    """Base class of the output-space solvers (`bbopt.OVLR`, `bbopt.ES`, `bbopt.CEM`).

    Args:
        policy: any ``torch.nn.Module``. Called as ``policy()`` (no input, returns ``[d]``) or
            ``policy(inputs)`` (returns ``[B, d]``).
        optimizer: a ``torch.optim.Optimizer`` over the policy's parameters.
        sigma: the step size of the default model: a positive float, a 1-D ``[d]`` sequence
            (one per output dimension) or a `bbopt.sigma.SigmaRule`. Leave it unset when
            ``noise`` is a model (the model holds its rule).
        noise: a noise model (`bbopt.noise.FullCovariance`, ...), or the family of the
            default model `bbopt.noise.Scaled`: ``"gaussian" | "laplace" | "student_t"`` or a
            `bbopt.noise.Noise`.
        df: degrees of freedom of Student-t noise (> 2).
        samples: candidates per input, ``n`` (group modes; default 16).
        episodes: population size ``N``; switches on episode mode (one sample per episode).
        antithetic: sample pairs ``(eps, -eps)`` inside each group (episode mode: whole
            episodes ``i`` and ``i + N/2`` with negated noise; give both episodes of a pair
            the same environment seed, so their loss difference measures the noise); needs an
            even ``n``/``N``.
        normalize: divide each group's weights by their total absolute value (``sum_i |w_i| =
            1``): a group's update keeps its direction and no longer scales with the losses
            (ARS's reward scaling, Mania et al. 2018). With several groups each then counts
            equally, which is no longer the gradient of the mean loss.
        natural: send ``v = sum_i w_i (x_i - mu)``, the likelihood-ratio gradient preconditioned
            by the noise covariance (its natural gradient for Gaussian noise), instead of the
            gradient itself. With SGD on a learned vector the mean then moves by the weighted
            perturbations, as an evolution strategy's mean does, which is what the step-size
            and rank-one path updates of the noise models assume (the fixed-problem presets).
            Default: the solver's (CEM: always).
        seed, generator: the solver's only source of randomness (give at most one).
        nan_policy: ``"raise"`` refuses non-finite losses, naming their indices; ``"worst"``
            replaces them by the worst finite loss of their group.
        maximize: ``tell`` receives rewards to maximize instead of losses.
        allocation: batch mode only: a `bbopt.allocation` allocator (``Equal()``,
            ``Optimal()``, ``Gaussian()``, ``Bernoulli(p=...)``) that spreads the step's ``B *
            samples`` candidates unevenly across the inputs (flat ``[N, d]`` candidates and
            ``solver.groups``; see the module). None (default): ``samples`` per input, ``[B, n, d]``.
        qmc: draw the noise from scrambled Sobol points mapped through the family's inverse
            CDF (`bbopt.noise.qmc`: quasi-Monte Carlo, lower variance at small n, still
            unbiased) instead of independently; sets the noise model's sampler (None: leave
            the model as it is, by default independent draws).
        correlation: episode mode only: time-correlated exploration, each episode's noise an
            AR(1) sequence over its steps, ``eps_t = phi eps_{t-1} + sqrt(1 - phi^2) xi_t``
            (stationary: every ``eps_t`` is still N(0, I); antithetic partners stay negations).
            The gradient signal then uses the sequence's score, the precision matrix times the
            noise (`bbopt.episodes.ar1_score`), per-step credit included; with ``reuse`` each
            step's weight acts on the score of its own factor, the density of its action given the
            episode's earlier ones (`bbopt.episodes.AR1Sequences.factor_score`). Unbiased either
            way. Gaussian noise with a fixed or scheduled step size only. Default 0: independent steps.
        reuse: episode mode only: optimizer steps per tell on the same recorded steps (sample
            reuse). The first is the plain estimate; each further pass re-runs the policy on the
            recorded observations and weights every recorded action by the likelihood ratio
            ``r = p_new(a | s) / p_old(a | s)`` of the current to the behaviour density, clipped
            as PPO's surrogate is (Schulman et al. 2017: a step whose ratio left ``[1 - clip,
            1 + clip]`` in the direction its weight pushes gets no gradient). Per-step ratios
            make the later passes biased (PPO's approximation); they extract more from each
            population. Gaussian noise, a sigma that does not learn (fixed, or `bbopt.sigma.Scheduled`:
            it advances once per tell, after the passes). With ``correlation`` the ratio, the clip
            and the KL are those of each step's AR(1) factor (the density given the episode's
            earlier steps: the same formulas in the innovations), the likelihood-ratio signal only
            (not ``natural``) and no ``minibatches``. Default 1: no reuse.
        clip: the ratio clip of ``reuse`` (default 0.2).
        minibatches: with ``reuse``: each later pass takes this many optimizer steps, one per
            part of a random split of the recorded steps (drawn from the solver's generator),
            each part's weights scaled by the number of parts so that its step has the whole
            batch's scale (PPO's minibatches: more steps for the same compute; at most one part
            per recorded step). Default 1: one step on
            all recorded steps per pass. The first pass is the plain estimate whatever this is.
        target_kl: with ``reuse``: stop a population's later passes once the mean KL divergence of
            the current policy's action density from the behaviour density over the recorded
            steps, ``mean_t |mu_new(s_t) - mu_old(s_t)|^2 / (2 sigma^2)`` (exact for Gaussian
            noise at one sigma; under AR(1) noise the factors', the same in the innovations),
            exceeds it, checked before each later step (PPO implementations' early stop). The
            passes then adapt to how far each population moves the policy. Default None: always
            ``reuse`` passes.
        max_kl: with ``reuse``: after a tell's passes, while that mean KL of the updated policy
            from the behaviour density exceeds it, halve the update's change of the parameters
            (a backtracking line search along the update, as TRPO's; at most `MAX_HALVINGS`
            times, then the change is undone). ``target_kl`` checks before each later pass,
            so the first pass, or the last one taken, can still land far past it: this bounds the
            whole update, the first of a run included (whose Adam step is about ``lr`` in every
            parameter). The estimate is unchanged; only the step's length depends on the batch.
            The tell's stats give ``update_kl`` (before the search) and ``step_scale`` (the share of
            the change kept, 0 where undone). Default None: no search.
    """

    natural = False  # default signal: sum_i w_i (x_i - mu) instead of the likelihood-ratio gradient
    step_credit = True  # whether weights() makes sense per ask call (tell(step_losses=...))

    def __init__(
        self,
        policy: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        sigma: SigmaValue | SigmaRule | None = None,
        noise: str | Noise | NoiseModel = "gaussian",
        df: float = 5.0,
        samples: int | None = None,
        episodes: int | None = None,
        antithetic: bool = False,
        normalize: bool = False,
        natural: bool | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nan_policy: str = "raise",
        maximize: bool = False,
        qmc: bool | None = None,
        allocation: Allocation | None = None,
        correlation: float = 0.0,
        reuse: int = 1,
        clip: float = 0.2,
        minibatches: int = 1,
        target_kl: float | None = None,
        max_kl: float | None = None,
    ):
        if not isinstance(policy, nn.Module):
            raise ValueError(f"Invalid policy: {type(policy).__name__} (expected a torch.nn.Module)")
        parameters = [p for p in policy.parameters() if p.requires_grad]
        if not parameters:
            raise ValueError("Invalid policy: it has no parameters that require grad (nothing to train)")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"Invalid optimizer: {type(optimizer).__name__} (expected a torch.optim.Optimizer)")
        if episodes is not None and samples is not None:
            raise ValueError(
                "Invalid samples: episode mode (episodes=N) takes one sample per episode; leave samples unset"
            )
        if episodes is not None:
            check_int(episodes, "episodes", minimum=2)
        samples = 16 if samples is None and episodes is None else samples
        if samples is not None:
            check_int(samples, "samples", minimum=1)
        antithetic = check_bool(antithetic, "antithetic")
        normalize = check_bool(normalize, "normalize")
        maximize = check_bool(maximize, "maximize")
        natural = type(self).natural if natural is None else check_bool(natural, "natural")
        group_size = episodes if episodes is not None else samples
        if antithetic and group_size % 2:
            name = "episodes" if episodes is not None else "samples"
            raise ValueError(
                f"Invalid {name}: {group_size} with antithetic=True (pairs (eps, -eps) need an even "
                f"number; use {group_size + 1} or antithetic=False)"
            )
        check_choice(nan_policy, "nan_policy", _NAN_POLICIES)
        if seed is not None and generator is not None:
            raise ValueError("Invalid seed/generator: give at most one of them")
        if seed is not None:
            check_int(seed, "seed")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"Invalid generator: {type(generator).__name__} (expected a torch.Generator)")
        check_float(df, "df", above=2.0)
        if allocation is not None:
            _check_allocation(allocation, episodes, samples, antithetic)
        shard = shard_of(policy)  # a DDP-wrapped policy: this rank's place (bbopt.distributed)
        if shard is not None and (episodes is not None or allocation is not None):
            raise ValueError(
                "Invalid policy: DistributedDataParallel is for batch mode (episode mode runs on Ray pools; "
                "allocation= needs every input's pilot in one process)"
            )

        self.policy = policy
        self.optimizer = optimizer
        self.noise = make_noise_model(noise, sigma, df)
        if qmc is not None:
            self.noise.use_qmc(check_bool(qmc, "qmc"))
        self.correlation = check_float(correlation, "correlation", at_least=0.0, below=1.0)
        if self.correlation:
            _check_correlation(self.noise, episodes)
        self.reuse = check_int(reuse, "reuse", minimum=1)
        self.clip = check_float(clip, "clip", above=0.0)
        self.minibatches = check_int(minibatches, "minibatches", minimum=1)
        if self.reuse > 1:
            _check_reuse(self.noise, episodes, self.correlation, natural=natural, minibatches=self.minibatches)
        self.target_kl = None if target_kl is None else check_float(target_kl, "target_kl", above=0.0)
        self.max_kl = None if max_kl is None else check_float(max_kl, "max_kl", above=0.0)
        needs_reuse = {"minibatches": ("they split the passes of reuse", self.minibatches > 1),
                       "target_kl": ("it stops the later passes of reuse", self.target_kl is not None),
                       "max_kl": ("it bounds the update of reuse's passes", self.max_kl is not None)}  # fmt: skip
        for name, (role, given) in needs_reuse.items():
            if given and self.reuse == 1:
                remedy = _reuse_remedy(self.noise, episodes, self.correlation, natural=natural,
                                       minibatches=self.minibatches)  # fmt: skip
                raise ValueError(f"Invalid {name}: {role} ({remedy})")
        self.samples = samples
        self.episodes = episodes
        self.group_size = int(group_size)
        self.antithetic = antithetic
        self.normalize = normalize
        self.natural = natural
        self.nan_policy = nan_policy
        self.maximize = maximize
        self.allocation = allocation
        self.groups: torch.Tensor | None = None  # allocated asks: the input of each candidate row
        self.device = parameters[0].device
        self.dtype = parameters[0].dtype
        fresh = seed is None and generator is None
        if generator is None:
            generator = torch.Generator(device=self.device)
            if seed is None:
                generator.seed()  # fresh entropy, without touching the global RNG
            else:
                generator.manual_seed(int(seed))
        if shard is not None:  # every rank draws the whole batch's noise: one generator state everywhere
            shard.common_generator(generator, fresh=fresh)
        self.generator = generator
        self._shard = shard
        self.steps = 0  # completed tells
        self.evaluations = 0  # candidates told
        self._asked: _Asked | None = None
        self._record = EpisodeRecord(episodes) if episodes is not None else None
        self._refused = False  # episode mode: the last tell was refused (the next ask starts over)

    @property
    def pending(self) -> bool:
        """An allocated step's pilot was told: ``ask`` the same inputs for the rest of the budget."""
        return isinstance(self._asked, _Allocated) and self._asked.pending

    @property
    def sigma(self) -> SigmaRule:
        """The noise model's step-size rule."""
        return self.noise.sigma

    def setup(self, dimension: int) -> None:
        """Called at the first ``ask`` with the policy's output dimension d (and on
        ``load_state_dict``); sets the noise model up for d and the group size. A subclass
        that needs d (e.g. for learning rates) extends it."""
        self.noise.setup(dimension, self.group_size)

    # ------------------------------------------------------------------ the subclass's maths
    def weights(self, losses: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One weight per sample, ``[G, n]``, from losses ``[G, n]`` (float64); positive for
        bad samples. ``counts[G, n]`` is the number of recorded steps of each sample (1 outside
        episode mode)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ ask/tell
    def ask(self, inputs=None, *, episode_ids=None) -> torch.Tensor:
        """Candidates: ``[n, d]`` without inputs, ``[B, n, d]`` for ``inputs[B, ...]``.

        In episode mode: ``ask(observations[m, ...], episode_ids=[m])`` returns ``[m, d]``
        actions, one per live episode (``episode_ids`` defaults to all ``N`` episodes).
        One policy forward per call.
        """
        if self._record is not None:
            return self._ask_episodes(inputs, episode_ids)
        if episode_ids is not None:
            raise ValueError("Invalid episode_ids: only episode mode (episodes=N) takes them")
        if self.allocation is not None:
            return self._ask_allocated(inputs)
        if self._asked is not None and not self._asked.refused:
            raise RuntimeError("ask() called twice without tell(): tell the losses of the last candidates first")
        if inputs is None and self._shard is not None:
            raise ValueError("Invalid inputs: under DistributedDataParallel each rank asks for its shard: ask(inputs)")
        with torch.enable_grad():
            if inputs is None:
                mu = self.policy()
                if not isinstance(mu, torch.Tensor) or mu.dim() != 1:
                    raise ValueError(f"Invalid policy output: {_shape_of(mu)} from policy() (expected [d])")
                mu = mu[None]
            else:
                inputs = self._as_inputs(inputs)
                mu = self._forward(inputs)
        self._ensure_setup(mu.shape[1])
        # Antithetic pairs of a Gaussian-like model: only their first halves are drawn and kept
        # (the same draws as cat([eps, -eps]), half the memory); candidates mu +- p.
        paired = self.antithetic and self.noise.paired
        count = mu.shape[0]
        offset, total = (0, count) if self._shard is None else self._shard.layout(count)  # the whole batch's rows
        noise = self.noise.draw(total, self.samples // 2 if paired else self.samples, generator=self.generator,
                                dtype=mu.dtype, antithetic=self.antithetic and not paired)  # fmt: skip
        noise = (noise if total == count else noise[offset : offset + count]).to(mu.device)
        make = self.noise.paired_candidates if paired else self.noise.candidates
        candidates = make(mu.detach(), noise)
        self._asked = _Asked(mu=mu, noise=noise, batched=inputs is not None, paired=paired, total=total)
        return candidates if inputs is not None else candidates[0]

    def tell(self, losses, *, step_losses=None, autograd_loss=None) -> dict[str, float]:
        """Update the policy from one loss per candidate; returns a small stats dict.

        ``losses``: ``[n]`` after ``ask()``, ``[B, n]`` after ``ask(inputs)``, ``[N]`` (one per
        episode) in episode mode. One VJP, one optimizer step.

        ``autograd_loss``: a scalar tensor on the policy's graph (a KL term, a regulariser, an
        imitation loss): the part of the objective known in closed form. Its gradient, by
        autograd, is added to the estimated one in the same backward call and the same
        optimizer step, so the step minimises ``E[loss] + autograd_loss``. A VAE's KL term next
        to a black-box reconstruction loss is the example (`bbopt.generative`).

        Episode mode only, ``step_losses``: per-step credit. One tensor per ``ask`` call since
        the last tell, ``step_losses[k][j]`` the loss still to come (cost-to-go, from that step
        to the end of the episode) of the j-th episode asked in call k. Each recorded step
        is then weighted by its own cost-to-go against the other episodes' cost-to-go at the
        same call (episodes not asked there count 0: nothing more comes to them), instead of
        by the whole episode's loss. The noise of a step is independent of the costs before
        it, so the estimate stays unbiased and loses the variance of those past costs.
        ``losses`` still gives the stats.
        """
        _check_autograd_loss(autograd_loss)
        if self._record is not None:
            return self._tell_episodes(losses, step_losses, autograd_loss)
        if step_losses is not None:
            raise ValueError("Invalid step_losses: per-step credit is for episode mode (episodes=N)")
        if self._asked is None or self.pending:
            raise RuntimeError("tell() called before ask(): ask for candidates first")
        if isinstance(self._asked, _Allocated):
            return self._tell_allocated(losses, autograd_loss)
        asked = self._asked
        if asked.spent:
            raise RuntimeError("tell() after a refused update of these candidates: ask for new candidates first")
        groups, samples = asked.mu.shape[0], self.samples
        expected = (groups, samples) if asked.batched else (samples,)
        if self._shard is not None:
            self._shard.agreed = False  # this tell's agreement is still to come (a re-tell after a refusal too)
        try:
            losses = self._as_losses(losses, expected).reshape(groups, samples)
            stats = self._update(mu=asked.mu, losses=losses, counts=torch.ones_like(losses), noise=asked.noise,
                                 paired=asked.paired, autograd_loss=autograd_loss)  # fmt: skip
        except ValueError as error:
            asked.refused = True  # nothing changed: tell corrected losses, or ask again
            if self._shard is not None and not self._shard.agreed:
                self._shard.agree(str(error))  # the other ranks wait for this one before their backward
            raise
        self._asked = None
        self.evaluations += groups * samples
        return stats

    def discard(self) -> None:
        """Episode mode: drop the episodes recorded since the last tell, without an update. The
        policy, its optimizer, the noise model and the counters stay as they are; the next ask
        starts a new population (fresh AR(1) sequences too). A Trainer's critic warm-up uses
        it: the episodes train the critic while the policy stays put."""
        if self._record is None:
            raise RuntimeError("discard() is for episode mode (episodes=N): there, tell or discard each population")
        self._record.clear()
        self._refused = False

    # ------------------------------------------------------------------- allocated batches
    def _ask_allocated(self, inputs) -> torch.Tensor:
        if inputs is None:
            raise ValueError("Invalid inputs: allocation= is for batch mode: ask(inputs[B, ...])")
        inputs = self._as_inputs(inputs)
        asked = self._asked
        if asked is not None and asked.pending:
            if inputs.shape != asked.inputs.shape or not torch.equal(inputs, asked.inputs):
                raise ValueError(
                    "Invalid inputs: the pilot of another batch was told; ask(inputs) with the same batch to finish "
                    "its step"
                )
            return self._ask_rest(asked)
        if asked is not None and not asked.refused:
            raise RuntimeError("ask() called twice without tell(): tell the losses of the last candidates first")
        with torch.enable_grad():
            mu = self._forward(inputs)
        self._ensure_setup(mu.shape[1])
        count, pilot = mu.shape[0], self.allocation.pilot
        piloting = bool(pilot) and count > 1  # one input: nothing to allocate, no pilot
        self._asked = _Allocated(mu=mu, inputs=inputs, groups=torch.empty(0), noise=torch.empty(0),
                                 sizes=torch.empty(0), piloting=piloting)  # fmt: skip
        if piloting:
            return self._ask_rows(self._asked, torch.full((count,), pilot))
        return self._ask_rest(self._asked)

    def _ask_rest(self, asked: _Allocated) -> torch.Tensor:
        """The allocated rest of the budget after a told pilot."""
        count, unit = asked.mu.shape[0], 2 if self.antithetic else 1
        pilot = asked.summary
        spent = 0 if asked.pilot is None else self.allocation.pilot
        total = count * (self.samples - spent) // unit
        if pilot is None and self.allocation.pilot:  # one input: it gets the whole budget
            sizes = torch.full((count,), total)
        else:
            sizes = self.allocation.sizes(count, total, 2 // unit, pilot, self.generator)
        sizes = _checked_sizes(sizes, count, total, 2 // unit, self.allocation) * unit
        asked.pending = False
        return self._ask_rows(asked, sizes)

    def _ask_rows(self, asked: _Allocated, sizes: torch.Tensor) -> torch.Tensor:
        """Draw ``sizes[j]`` samples for each input j (one draw per distinct size, so that equal
        sizes draw exactly what the unallocated path draws); rows input after input."""
        mu = asked.mu.detach()
        starts = torch.cumsum(sizes, 0) - sizes
        total = int(sizes.sum())
        rows = torch.empty(total, dtype=torch.long)
        noise = candidates = None
        for size in sorted(set(sizes.tolist())):
            members = torch.nonzero(sizes == size)[:, 0]
            eps = self.noise.draw(len(members), size, generator=self.generator, dtype=mu.dtype,
                                  antithetic=self.antithetic).to(mu.device)  # fmt: skip
            block = self.noise.candidates(mu[members.to(mu.device)], eps)
            where = (starts[members, None] + torch.arange(size)).reshape(-1)
            if noise is None:
                noise = eps.new_empty((total, eps.shape[2]))
                candidates = block.new_empty((total, block.shape[2]))
            where_device = where.to(mu.device)
            noise[where_device] = eps.reshape(-1, eps.shape[2])
            candidates[where_device] = block.reshape(-1, block.shape[2])
            rows[where] = members.repeat_interleave(size)
        asked.groups, asked.noise, asked.sizes = rows.to(mu.device), noise, sizes
        asked.refused = False
        self.groups = asked.groups
        return candidates

    def _pilot_summary(self, mu: torch.Tensor, pilot: tuple) -> Pilot:
        """Per input: the mean squared norm of the per-sample output signal, the mean loss, mu."""
        groups, noise, losses = pilot
        samples = losses.shape[1]
        weights = self._group_weights(losses, torch.ones_like(losses)) * samples  # one sample's estimate
        mu = mu.detach()
        rows = noise.reshape(-1, 1, noise.shape[-1])
        per_sample = self.noise.signal(mu[groups], weights.reshape(-1, 1).to(mu.device, mu.dtype), rows,
                                       natural=self.natural)  # fmt: skip
        traces = per_sample.to(torch.float64).square().sum(dim=1).reshape(-1, samples).mean(dim=1).cpu()
        return Pilot(traces=traces, losses=losses.mean(dim=1), outputs=mu.to(torch.float64).cpu())

    def _tell_allocated(self, losses, autograd_loss) -> dict[str, float]:
        asked = self._asked
        if asked.spent:
            raise RuntimeError("tell() after a refused update of these candidates: ask for new candidates first")
        try:
            losses = self._as_losses(losses, (int(asked.groups.shape[0]),))
            if asked.piloting:
                if autograd_loss is not None:
                    raise ValueError("Invalid autograd_loss: the pilot round makes no update; give it with the rest")
                pilot = (asked.groups, asked.noise, losses.reshape(asked.mu.shape[0], -1))
                summary = self._pilot_summary(asked.mu, pilot)
                if not bool(torch.isfinite(summary.traces).all()):
                    raise ValueError("Invalid losses: the pilot's signal overflows float64 (scale the losses down)")
                asked.piloting, asked.pilot, asked.summary, asked.pending = False, pilot, summary, True
                self.evaluations += losses.numel()
                return {"step": float(self.steps), **loss_stats(losses), "pilot": 1.0}
            stats = self._update_allocated(asked, losses, autograd_loss)
        except ValueError:
            asked.refused = True  # nothing changed: tell corrected losses, or ask again
            raise
        self._asked = None
        self.evaluations += losses.numel()
        return stats

    def _update_allocated(self, asked: _Allocated, losses: torch.Tensor, autograd_loss) -> dict[str, float]:
        """Row weights: each size block weighted by the solver on its own (the pilot's, when
        reused, with the fixed share ``pilot / samples``); then the one update over all rows
        (main rows first, so refusals name the indices of the told losses)."""
        count = asked.mu.shape[0]
        reuse = asked.pilot is not None and self.allocation.reuse
        share = self.allocation.pilot / self.samples if reuse else 0.0
        row_weights = torch.empty_like(losses)
        starts = torch.cumsum(asked.sizes, 0) - asked.sizes
        for size in sorted(set(asked.sizes.tolist())):  # one block per distinct size, as drawn
            where = starts[torch.nonzero(asked.sizes == size)[:, 0], None] + torch.arange(size)
            block = losses[where]
            row_weights[where] = self._group_weights(block, torch.ones_like(block)) * (1.0 - share)
        groups, noise, told = [asked.groups], [asked.noise], [losses]
        if reuse:
            pilot_groups, pilot_noise, pilot_losses = asked.pilot
            pilot_weights = self._group_weights(pilot_losses, torch.ones_like(pilot_losses)) * share
            groups.append(pilot_groups)
            noise.append(pilot_noise)
            told.append(pilot_losses.reshape(-1))
            row_weights = torch.cat([row_weights, pilot_weights.reshape(-1)])
        groups, noise, told = torch.cat(groups), torch.cat(noise), torch.cat(told)
        with torch.enable_grad():
            mu_rows = asked.mu[groups]  # the backward of the gather sums the rows of each input
        return self._update(mu=mu_rows, losses=told[None], counts=None, noise=noise,
                            episode_of_record=torch.arange(len(told), device=self.device),
                            raw_weights=row_weights[None] / count, autograd_loss=autograd_loss)  # fmt: skip

    # ----------------------------------------------------------------------- episode mode
    def _ask_episodes(self, inputs, episode_ids) -> torch.Tensor:
        if inputs is None:
            raise ValueError("Invalid inputs: episode mode needs the observations of the live episodes, [m, ...]")
        inputs = self._as_inputs(inputs)
        if self._refused:  # the episodes of a refused tell are dropped; these start anew
            self._record.clear()
            self._refused = False
        episode_ids = self._record.episode_ids(episode_ids, inputs.shape[0])
        with torch.no_grad():
            mu = self._forward(inputs)
        self._ensure_setup(mu.shape[1])
        # Noise for the whole population every step, so episode i's noise does not depend on
        # which other episodes are still running; pairs (i, i + N/2) are negations.
        population = self.noise.draw(1, self.episodes, generator=self.generator, dtype=mu.dtype,
                                     antithetic=self.antithetic)[0].to(mu.device)  # fmt: skip
        if self.correlation:  # each episode's AR(1) sequence, continued for the whole population
            population = self._record.continue_sequences(population, self.correlation)
        noise = population[episode_ids.to(mu.device)]
        self._record.add(inputs, noise, episode_ids)
        return self.noise.candidates(mu, noise[:, None])[:, 0]

    def _tell_episodes(self, losses, step_losses=None, autograd_loss=None) -> dict[str, float]:
        record = self._record
        if not record:
            raise RuntimeError("tell() called before ask(): run the episodes through ask() first")
        try:
            losses = self._as_losses(losses, (self.episodes,)).reshape(1, self.episodes)
            counts = record.counts()
            record_weights = None if step_losses is None else self._step_weights(step_losses)
            episode_of_record = record.episode_of_record().to(self.device)
            inputs, noise = record.inputs(), record.noise()
            start = None if self.max_kl is None else [p.detach().clone() for p in _optimized(self.optimizer)]
            with torch.enable_grad():
                mu = self.policy(inputs)  # one batched forward
            if self.reuse > 1 and record_weights is None:  # the per-record weights, for the later passes
                record_weights = self._group_weights(losses, counts)[0, episode_of_record.cpu()]
            sequences = AR1Sequences(episode_of_record, self.correlation) if self.correlation else None
            signal, signal_weights = self._ar1_signal(sequences, noise, record_weights)
            stats = self._update(mu=mu, losses=losses, counts=counts, noise=signal,
                                 episode_of_record=episode_of_record, record_weights=signal_weights,
                                 autograd_loss=autograd_loss, noise_step=self.reuse == 1)  # fmt: skip
        except ValueError:
            self._refused = True  # the record is kept: tell corrected losses, or ask to start over
            raise
        for passes in range(1, self.reuse):  # the first step stands whatever a later pass meets
            try:
                active, stats["reuse_kl"] = self._reuse_epoch(inputs, mu.detach(), noise, losses, counts,
                                                              episode_of_record, record_weights,
                                                              sequences)  # fmt: skip
            except ValueError as error:  # an overflowing ratio-weighted gradient: stop reusing this population
                warnings.warn(f"reuse stopped after {passes} of {self.reuse} passes on this population: {error}",
                              RuntimeWarning, stacklevel=2)  # fmt: skip
                break
            if active is None:  # past target_kl: this pass took no step
                break
            stats["reuse_active"] = active
        else:
            passes = self.reuse
        if start is not None:  # the behaviour sigma still holds: the noise model advances below
            stats |= self._backtrack(start, inputs, mu.detach(), sequences)
        if self.reuse > 1:  # sigma (fixed or scheduled) advances once, after every pass used the behaviour sigma
            stats["reuse_passes"] = float(passes)  # optimizer steps taken, the first included
            self.noise.update(record_weights[None].to(device=self.device, dtype=mu.dtype), noise[None], pairs=False)
            stats["sigma"] = self.noise.mean_sigma()
        record.clear()
        self.evaluations += self.episodes
        return stats

    def _ar1_signal(self, sequences: AR1Sequences | None, noise: torch.Tensor,
                    record_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """What `_update` is given for the recorded ``noise`` and per-record weights (None: the
        episode's weight on each): as they are for independent steps and for the natural signal
        (the covariance times the score is the noise itself); under AR(1) noise the score of each
        episode's whole sequence, or with ``reuse`` the weighted score of each step's factor
        (`AR1Sequences.factor_score`) with unit weights, the estimate the later passes' ratios
        reweight. Both are unbiased; without reuse the sequence's score is kept, the lower
        variance on the tests' toy (600 draws at phi 0.8: 20-25% below the factors')."""
        if sequences is None or self.natural:
            return noise, record_weights
        if self.reuse == 1:
            return sequences.score(noise), record_weights
        score = sequences.factor_score(sequences.innovations(noise), record_weights)
        return score, torch.ones_like(record_weights)

    def _reuse_epoch(self, inputs, behaviour_mu, noise, losses, counts, episode_of_record,
                     record_weights, sequences=None) -> tuple[float | None, float]:  # fmt: skip
        """One later pass of ``reuse``: a step on all recorded steps, or with ``minibatches`` one
        step per part of a random split, each part's weights scaled up to the whole batch's.
        Returns the share of records active in the pass, or None where a part found the policy past
        ``target_kl`` (the parts before it took their steps; the rest of the population's passes
        stop), and the mean KL the last part measured."""
        if self.minibatches == 1:
            return self._reuse_pass(inputs, behaviour_mu, noise, losses, counts, episode_of_record, record_weights,
                                    sequences)  # fmt: skip
        order = torch.randperm(len(record_weights), generator=self.generator, device=self.generator.device)
        parts = order.tensor_split(min(self.minibatches, len(order)))  # no empty part when records are few
        active = 0.0
        for part in parts:
            here, weights = part.to(inputs.device), record_weights[part.to(record_weights.device)] * len(parts)
            share, divergence = self._reuse_pass(inputs[here], behaviour_mu[here], noise[here], losses, counts,
                                                 episode_of_record[here], weights)  # fmt: skip
            if share is None:
                return None, divergence
            active += len(part) * share
        return active / len(record_weights), divergence

    def _reuse_pass(self, inputs, behaviour_mu, noise, losses, counts, episode_of_record,
                    record_weights, sequences=None) -> tuple[float | None, float]:  # fmt: skip
        """One more optimizer step on the recorded steps (``reuse``): the actions ``a = mu_old + sigma
        eps`` seen from the current policy, ``eps' = (a - mu_new) / sigma``, each weighted by its
        clipped likelihood ratio ``r = exp((|eps|^2 - |eps'|^2) / 2)``. Returns the share of
        records still active (inside the clip, or outside it against their weight's push), or None
        without a step where the mean KL from the behaviour density, ``|eps' - eps|^2 / 2``, is past
        ``target_kl``; and that KL.

        Under AR(1) noise (``sequences``) each step's density is its factor, the action given the
        episode's earlier ones: the ratio, the KL and the clip are the factors', ``eps`` replaced
        by the innovations ``eta``, and the step is the clipped factors' weighted score."""
        with torch.enable_grad():
            mu = self.policy(inputs)
        sigma = self.noise.scale(mu)
        moved = (behaviour_mu - mu.detach()) / sigma
        shifted = noise + moved  # eps' of the same actions
        before, after, change = noise, shifted, moved
        if sequences is not None:  # the innovations are linear in the noise
            before, after, change = (sequences.innovations(values) for values in (noise, shifted, moved))
        divergence = _mean_kl(change)
        if self.target_kl is not None and divergence > self.target_kl:
            return None, divergence
        ratio = torch.exp(0.5 * (before.square().sum(dim=1) - after.square().sum(dim=1))).to(torch.float64).cpu()
        weights = record_weights.to(torch.float64).cpu()
        # PPO's clip in cost terms (w > 0: a bad step, the update lowers its ratio): the gradient of
        # max(r w, clip(r) w) is r w where the clipped term is not the larger, else 0
        active = torch.where(weights > 0, ratio > 1 - self.clip, ratio < 1 + self.clip)
        used = torch.where(active, ratio * weights, 0.0)
        signal, signal_weights = shifted, used
        if sequences is not None:
            signal, signal_weights = sequences.factor_score(after, used), torch.ones_like(used)
        try:
            self._update(mu=mu, losses=losses, counts=counts, noise=signal, episode_of_record=episode_of_record,
                         record_weights=signal_weights, counted=False, noise_step=False)  # fmt: skip
        except ValueError as error:  # the losses passed the first step: here the ratios are what overflowed
            largest = float(ratio[active].max()) if bool(active.any()) else 0.0
            raise ValueError(
                f"the ratio-weighted gradient overflows {str(mu.dtype).removeprefix('torch.')}: the policy has "
                f"moved far from the one that acted (mean KL {divergence:.3g}, largest likelihood ratio in use "
                f"{largest:.3g}); a smaller step, fewer passes (reuse) or target_kl stops the passes before this"
            ) from error
        return float(active.to(torch.float64).mean()), divergence

    def _backtrack(self, start: list[torch.Tensor], inputs, behaviour_mu,
                   sequences: AR1Sequences | None) -> dict[str, float]:  # fmt: skip
        """``max_kl``'s line search: the parameters ``start + scale * (now - start)`` with ``scale``
        halved from 1 until the mean KL from the behaviour density (`_reuse_pass`'s, measured by one
        forward over the recorded steps) is at most ``max_kl``; past `MAX_HALVINGS` halvings the
        parameters are put back to ``start``. Returns the KL before the search and the scale kept."""
        parameters = _optimized(self.optimizer)
        with torch.no_grad():
            change = [p - before for p, before in zip(parameters, start, strict=True)]

            def divergence() -> float:
                mu = self.policy(inputs)
                moved = (behaviour_mu - mu) / self.noise.scale(mu)
                return _mean_kl(moved if sequences is None else sequences.innovations(moved))

            update_kl = kl = divergence()
            scale = 1.0
            while not kl <= self.max_kl:  # a NaN KL backtracks too
                scale = scale / 2 if scale > 2.0**-MAX_HALVINGS else 0.0
                for p, before, delta in zip(parameters, start, change, strict=True):
                    p.copy_(before.add(delta, alpha=scale) if scale else before)
                if not scale:
                    break
                kl = divergence()
        return {"update_kl": update_kl, "step_scale": scale}

    def _step_weights(self, step_losses) -> torch.Tensor:
        if not self.step_credit:
            raise ValueError(f"Invalid step_losses: {type(self).__name__} has no per-step credit")
        return self._record.step_weights(step_losses, self._group_weights)

    # ----------------------------------------------------------------------- the one update
    def _group_weights(self, losses: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        weights = self.weights(losses, counts)
        if self.normalize:
            weights = weights / weights.abs().sum(dim=1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
        return weights

    def _update(self, *, mu, losses, counts, noise, episode_of_record=None, record_weights=None,
                paired=False, raw_weights=None, autograd_loss=None, counted=True,
                noise_step=True) -> dict[str, float]:  # fmt: skip
        """Weights -> output signal v -> one VJP -> one optimizer step -> noise model update
        (``noise_step=False``: the caller updates the noise model, as a tell with reuse does after
        its passes).

        Group mode: ``mu[G, d]``, ``noise[G, n, width]`` (``paired``: ``[G, n/2, width]``, the
        first of each antithetic pair). Episode mode: ``mu[R, d]`` and ``noise[R, width]`` for
        the R recorded steps, ``episode_of_record[R]``. Allocated batches: the same with one row
        per candidate and their ``raw_weights[1, R]`` given.

        Guarded: weights, or a gradient, that the policy's float type cannot carry through the
        optimizer refuse the update (`_refuse_overflow`) before the optimizer or the noise model
        changes.
        """
        if raw_weights is None:  # the mean over groups (under DDP: over the whole batch; DDP divides by world)
            scale = losses.shape[0] if self._shard is None else self._asked.total / self._shard.world
            raw_weights = self._group_weights(losses, counts) / scale
        limit = math.sqrt(torch.finfo(mu.dtype).max)  # the square of a larger value overflows
        if not float(raw_weights.abs().max()) <= limit:  # NaN fails too
            self._refuse_overflow(losses, mu.dtype, "their weights")
        weights = raw_weights.to(device=self.device, dtype=mu.dtype)
        if episode_of_record is None and paired:  # sum_i w_i s(eps_i) = sum_{i<h} (w_i - w_{i+h}) s(eps_i)
            by_row = (odd_weights(weights), noise)
            by_group = (weights, torch.cat([noise, -noise], dim=1) if self.noise.learns else noise)
            pairs = True
        elif episode_of_record is None:  # row g of mu is shared by the n samples of group g; the
            # signal sums over all n (the half-noise form is only for models that declare `paired`)
            by_row = by_group = (weights, noise)
            pairs = self.antithetic
        else:  # one mu row per recorded step; the population is one group
            if record_weights is None:
                record_weights = weights[0, episode_of_record]
            else:  # per-step credit (tell(step_losses=...))
                record_weights = record_weights.to(device=self.device, dtype=mu.dtype)
            by_row = (record_weights[:, None], noise[:, None])
            by_group = (record_weights[None], noise[None])
            pairs = False  # records are not index-paired; the model treats them as independent
        v = self.noise.signal(mu.detach(), *by_row, natural=self.natural)
        if self._shard is not None:  # every rank's tell passed its checks, or all refuse (before DDP's all-reduce)
            self._shard.agree(None)
        _clear_gradients(self.optimizer)
        if autograd_loss is None:
            mu.backward(v)  # the one VJP
        else:  # the one VJP and the closed-form term's gradient, summed in one backward call
            torch.autograd.backward([mu, autograd_loss.reshape(())], [v, None])
        gradient_norm = _total_norm(self.optimizer)
        if not math.isfinite(gradient_norm):  # its square overflows: Adam's state would become inf
            _clear_gradients(self.optimizer)
            if self._asked is not None:
                self._asked.spent = True  # mu's graph is used up: only a new ask can follow
            self._refuse_overflow(losses, mu.dtype, "the gradient")
        self.optimizer.step()
        if self._shard is not None and self.noise.learns:  # from the whole batch, in one process's scale
            by_group = (self._shard.gather(by_group[0]) / self._shard.world, self._shard.gather(by_group[1]))
        if noise_step:
            self.noise.update(*by_group, pairs=pairs)
        self.steps += int(counted)  # a reuse pass is part of its tell
        return {
            "step": float(self.steps),
            **loss_stats(losses),
            "grad_norm": gradient_norm,
            "sigma": self.noise.mean_sigma(),
        }

    # ------------------------------------------------------------------------------ helpers
    def _ensure_setup(self, dimension: int) -> None:
        if self.noise.dimension is None:
            self.setup(dimension)
        elif self.noise.dimension != dimension:
            raise ValueError(
                f"Invalid policy output: dimension {dimension}, but the solver was set up for {self.noise.dimension}"
            )

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        mu = self.policy(inputs)
        if not isinstance(mu, torch.Tensor) or mu.dim() != 2 or mu.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"Invalid policy output: {_shape_of(mu)} from policy(inputs[{inputs.shape[0]}, ...]) "
                f"(expected [{inputs.shape[0]}, d])"
            )
        return mu

    def _as_inputs(self, inputs) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            inputs = torch.as_tensor(np.asarray(inputs))
        if inputs.dim() == 0:
            raise ValueError("Invalid inputs: a scalar (expected a batch [B, ...])")
        if inputs.is_floating_point() and inputs.dtype != self.dtype:
            inputs = inputs.to(self.dtype)
        return inputs.to(self.device)

    def _refuse_overflow(self, losses: torch.Tensor, dtype: torch.dtype, what: str):
        """Refuse an update whose weights or gradient overflow ``dtype`` (nothing has changed yet),
        naming the outliers: the losses farthest from their group's median (those beyond the
        limit, at least the farthest)."""
        distance = (losses - losses.median(dim=1, keepdim=True).values).abs()
        culprits = (distance > math.sqrt(torch.finfo(dtype).max)) | (distance == distance.max())
        batched = self._record is None and self._asked.batched
        shape = losses.shape if batched else losses.shape[1:]
        count, where = indices(culprits.reshape(shape))
        largest = float(losses.abs().max())
        raise ValueError(
            f"Invalid losses: {what} overflow {str(dtype).removeprefix('torch.')} (the square of a gradient "
            f"entry must fit for Adam-like optimizers); largest |loss| {largest:.3g}, {count} sample(s) at "
            f"index {where}. Scale the losses down, pass normalize=True (scale-free weights), or use a "
            "rank-based solver (ES, CEM). Nothing was updated: "
            + ("ask again." if self._asked is not None and self._asked.spent else "tell corrected losses or ask again.")
        )

    def _as_losses(self, losses, expected: tuple[int, ...]) -> torch.Tensor:
        losses = as_losses(losses, expected)
        if self.maximize:
            losses = -losses
        if np.isfinite(losses.numpy()).all():  # float64 on the CPU (as_losses): numpy's check is the cheaper
            return losses
        bad = ~torch.isfinite(losses)
        if self.nan_policy == "raise":
            count, shown = indices(bad)
            raise ValueError(
                f"Invalid losses: {count} non-finite value(s) at indices {shown} "
                "(nan_policy='raise'; nan_policy='worst' replaces them by the worst finite loss of their group)"
            )
        grouped = losses.reshape(-1, expected[-1])
        finite = torch.where(bad.reshape(grouped.shape), -math.inf, grouped)
        worst = finite.max(dim=1, keepdim=True).values
        if bool((~torch.isfinite(worst)).any()):
            raise ValueError("Invalid losses: a group has no finite loss (nan_policy='worst' needs at least one)")
        return torch.where(bad.reshape(grouped.shape), worst, grouped).reshape(expected)

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Policy, optimizer, RNG, noise model (step size, shape, their optimizers) and
        counters; taken between tell and ask."""
        if self._asked is not None or self._record:
            raise RuntimeError("state_dict() between ask() and tell(): tell the pending losses first")
        return {
            "solver": type(self).__name__,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "dimension": self.noise.dimension,
            "noise": self.noise.state_dict(),
            "steps": self.steps,
            "evaluations": self.evaluations,
        } | ({} if self.allocation is None else {"allocation": self.allocation.state_dict()})

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`; the run then continues exactly as the saved one would."""
        check_state(self, state)  # everything, before anything changes
        if self.allocation is None and "allocation" in state:
            raise ValueError("Invalid state: it holds an allocator's state, this solver has none")
        if self.allocation is not None and "allocation" not in state:
            raise ValueError("Invalid state: it holds no allocator state, this solver has allocation=")
        state = copy.deepcopy(state)  # torch.optim keeps the given tensors; share nothing with the source
        if self.allocation is not None:  # the rest is checked: the allocator validates its part before it loads
            self.allocation.load_state_dict(state["allocation"])
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if state["dimension"] is not None:
            self._ensure_setup(int(state["dimension"]))
        self.noise.load_state_dict(state["noise"])
        self.steps = int(state["steps"])
        self.evaluations = int(state["evaluations"])
        self._asked = None
        if self._record is not None:
            self._record.clear()

    def __repr__(self) -> str:
        size = f"episodes={self.episodes}" if self.episodes is not None else f"samples={self.samples}"
        return f"{type(self).__name__}({size}, noise={self.noise!r}, antithetic={self.antithetic})"


def _check_allocation(allocation, episodes, samples, antithetic) -> None:
    if not isinstance(allocation, Allocation):
        raise ValueError(f"Invalid allocation: {type(allocation).__name__} (expected a bbopt.allocation allocator)")
    if episodes is not None:
        raise ValueError("Invalid allocation: it spreads a batch's budget across inputs; episode mode has none")
    pilot = allocation.pilot
    if antithetic and pilot % 2:
        raise ValueError(f"Invalid allocation: pilot {pilot} with antithetic=True (expected whole pairs: even)")
    if samples - pilot < 2:
        raise ValueError(
            f"Invalid samples: {samples} per input leaves {samples - pilot} after {allocation!r}'s pilot "
            "(expected a budget of at least 2 per input beyond it)"
        )


def _checked_sizes(sizes, count: int, total: int, minimum: int, allocation) -> torch.Tensor:
    """An allocator's sizes, refused unless ``[count]`` integers >= minimum summing to total."""
    if (not isinstance(sizes, torch.Tensor) or sizes.shape != (count,) or sizes.is_floating_point()
            or int(sizes.sum()) != total or int(sizes.min()) < minimum):  # fmt: skip
        raise RuntimeError(
            f"{allocation!r} gave sizes {sizes!r} (expected {count} integers >= {minimum} summing to {total})"
        )
    return sizes.cpu().long()


def _check_correlation(noise: NoiseModel, episodes: int | None) -> None:
    """Time-correlated noise needs episodes, Gaussian draws and a model whose update reads no noise."""
    if episodes is None:
        raise ValueError("Invalid correlation: time-correlated noise is for episode mode (episodes=N)")
    if noise.family.name != "gaussian" or not noise.takes_sequence_score or noise.learns or noise.sampler is not None:
        raise ValueError(
            "Invalid correlation: AR(1) noise needs the default model or Tiled, Gaussian noise, a fixed sigma and no "
            f"qmc (got {type(noise).__name__}, {noise.family.name}, learns={noise.learns})"
        )


def _check_reuse(noise: NoiseModel, episodes: int | None, correlation: float, *, natural: bool,
                 minibatches: int) -> None:  # fmt: skip
    """Sample reuse needs episodes and the Gaussian density of the default model with a sigma that
    does not learn (fixed or scheduled: constant within each tell); under AR(1) noise the
    likelihood-ratio signal (the factors' ratios and scores) on all records at once (a factor
    reads its step's predecessor)."""
    if episodes is None:
        raise ValueError("Invalid reuse: reusing recorded steps is for episode mode (episodes=N)")
    if noise.family.name != "gaussian" or type(noise) is not Scaled or noise.learns:
        raise ValueError(
            "Invalid reuse: the likelihood ratios need the default model with Gaussian noise and a fixed or "
            f"scheduled sigma (got {type(noise).__name__}, {noise.family.name}, learns={noise.learns})"
        )
    if correlation and (natural or minibatches > 1):
        raise ValueError(
            "Invalid reuse: under AR(1) noise (correlation) the passes weight each step's factor, the density "
            "given the episode's earlier steps, which needs the likelihood-ratio signal (natural=False) and "
            f"every record in each step (minibatches=1; got natural={natural}, minibatches={minibatches})"
        )


def _reuse_remedy(noise: NoiseModel, episodes: int | None, correlation: float, *, natural: bool,
                  minibatches: int) -> str:  # fmt: skip
    """What an option of reuse's passes given without them should say: add reuse, or, where this
    solver cannot take it (`_check_reuse`'s refusal, e.g. a sigma that learns), why not."""
    try:
        _check_reuse(noise, episodes, correlation, natural=natural, minibatches=minibatches)
    except ValueError as error:
        return f"and this solver cannot reuse: {str(error).removeprefix('Invalid reuse: ')}"
    return "add reuse=2 or more"


def _check_autograd_loss(value) -> None:
    """Refuse an ``autograd_loss`` that is not a finite scalar on a graph (before anything changes)."""
    if value is None:
        return
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
        raise ValueError(f"Invalid autograd_loss: {_shape_of(value)} (expected a floating-point scalar tensor)")
    if not value.requires_grad:
        raise ValueError("Invalid autograd_loss: it has no graph (requires_grad is False); compute it from the policy")
    if not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"Invalid autograd_loss: {float(value.detach().reshape(()))} is not finite")


def _shape_of(value) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def _optimized(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters ``optimizer`` steps, in its groups' order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def _mean_kl(change: torch.Tensor) -> float:
    """The mean KL divergence of unit-variance Gaussians whose means differ by the rows of
    ``change`` (moves in units of sigma, or their AR(1) innovations): ``mean |change|^2 / 2``."""
    return float(0.5 * change.square().sum(dim=1).mean())


def _clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``, the same loop without torch.optim's profiler
    context and grouping, unless the optimizer's class has its own ``zero_grad``. Measured side
    by side (benchmarks/ask_tell.py's setting, one thread): 17.6 -> 16.0 us per candidate at
    d 100, n 16, 3.7 -> 3.6 at d 1000, n 256."""
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


def _total_norm(optimizer: torch.optim.Optimizer) -> float:
    """The 2-norm of the gradients of the optimizer's parameters, the ones it steps (inf or nan
    when a square overflows)."""
    gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if len(gradients) == 1:  # a learned vector: one op instead of the grouping of get_total_norm
        return float(torch.linalg.vector_norm(gradients[0]))
    return float(nn.utils.get_total_norm(gradients)) if gradients else 0.0
