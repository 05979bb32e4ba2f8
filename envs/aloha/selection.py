"""Which weights a fine-tuning run returns: a screen on validation placements, then a confirmation.

A run validates its noiseless policy about a dozen times on the same ``validation_episodes``
placements (from `VALIDATION_SEED`). The best of a dozen noisy scores is biased upward (the
winner's curse): in the README's insertion runs with 20 validation placements, the weights kept
evaluated below the start in 4 of 8 runs. So the screen only shortlists. At the end the start
and the `SHORTLIST` best screened weights run again on ``confirmation_episodes`` fresh
placements (from `CONFIRMATION_SEED`, used by nothing else), and the best there (success, then
mean stage) is kept; the start wins ties, then the earlier of the screen's order. With
``confirmation_episodes=0`` the screen's best is kept (the earlier on ties, so the start unless
something beat it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from bbopt.checks import check_int
from bbopt.envs.aloha.placements import CONFIRMATION_SEED, VALIDATION_SEED

__all__ = ["CONFIRMATION_EPISODES", "SHORTLIST", "Selection", "unselected"]
SHORTLIST = 3  # screened weights confirmed besides the start
CONFIRMATION_EPISODES = 100  # fine-tuning's default: placements each confirmed weights run


def unselected(update: int) -> dict:
    """The record of a run that validated nothing and kept the weights of ``update``."""
    return {"update": update, "validation_success": None, "start_validation_success": None, "validation_steps": 0,
            "validation_curve": []}  # fmt: skip


class Selection:
    """Screens ``policy`` (`screen`, the first call being the start) and returns the kept weights
    (`choose`). ``run(episodes, seed)`` runs the current policy noiselessly on placements
    ``seed, seed + 1, ...`` and returns `bbopt.envs.aloha.evaluation.evaluate_success`'s dict.

    ``record`` holds what the caller reports: ``update`` kept, its ``validation_success``, the
    start's, ``validation_steps`` (screen and confirmation), ``validation_curve`` (``[env_steps,
    success, mean stage]`` of every screen) and, with a confirmation, ``confirmation``
    (``[update, success, mean stage]`` of every weights confirmed) and the kept weights'
    ``confirmation_success``.
    """

    def __init__(self, policy, run: Callable[[int, int], dict], episodes: int, confirmation_episodes: int,
                 shortlist: int = SHORTLIST):  # fmt: skip
        self.policy, self.run = policy, run
        self.episodes = check_int(episodes, "validation_episodes", minimum=1)
        self.confirmation_episodes = check_int(confirmation_episodes, "confirmation_episodes", minimum=0)
        self.shortlist = check_int(shortlist, "shortlist", minimum=1)
        self.start: dict | None = None  # {"key", "update", "state"} of the first screen
        self.screened: list[dict] = []  # the best later screens, best first, at most `shortlist`
        self.record = unselected(0)

    def _evaluate(self, episodes: int, seed: int) -> tuple[float, float]:
        result = self.run(episodes, seed)
        self.record["validation_steps"] += sum(r["steps"] for r in result["records"])
        return result["success_rate"], result["mean_stage"]

    def screen(self, update: int, env_steps: int) -> tuple[float, float]:
        """Validate the current weights; returns (success rate, mean stage)."""
        key = self._evaluate(self.episodes, VALIDATION_SEED)
        self.record["validation_curve"].append([env_steps, *key])
        entry = {"key": key, "update": update, "state": copy.deepcopy(self.policy.state_dict())}
        if self.start is None:
            self.start = entry
            self.record["start_validation_success"] = key[0]
        else:  # sorted is stable: of equal keys the earlier stays ahead
            self.screened = sorted([*self.screened, entry], key=lambda e: e["key"], reverse=True)[: self.shortlist]
        return key

    def state_dict(self) -> dict:
        """The screens so far (the start's and the shortlist's weights, the record): what a run
        stopped between screens needs to go on choosing as if never stopped."""
        return copy.deepcopy({"start": self.start, "screened": self.screened, "record": self.record})

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict` (checked against this selection before anything changes)."""
        try:
            start, screened, record = state["start"], list(state["screened"]), dict(state["record"])
            entries = ([] if start is None else [start]) + screened
            fits = all(set(e) == {"key", "update", "state"} and len(e["key"]) == 2 for e in entries)
            fits = fits and len(screened) <= self.shortlist and (start is not None or not screened)
            fits = fits and set(unselected(0)) <= set(record)
        except (KeyError, TypeError) as error:
            raise ValueError(f"Invalid selection state: unreadable ({error!r})") from None
        if not fits:
            raise ValueError(f"Invalid selection state: not the screens of a shortlist of {self.shortlist}")
        self.start, self.screened, self.record = copy.deepcopy((start, screened, record))
        for entry in [self.start, *self.screened] if self.start is not None else []:
            entry["key"] = tuple(entry["key"])

    def choose(self) -> dict:
        """Load the kept weights into the policy; returns ``record``."""
        if self.start is None:
            raise RuntimeError("Selection.choose() before any screen")
        candidates = [self.start, *self.screened]
        if self.confirmation_episodes:
            self.record["confirmation"] = []
            for entry in candidates:
                self.policy.load_state_dict(entry["state"])
                entry["confirmed"] = self._evaluate(self.confirmation_episodes, CONFIRMATION_SEED)
                self.record["confirmation"].append([entry["update"], *entry["confirmed"]])
            kept = max(candidates, key=lambda e: e["confirmed"])  # max keeps the first of equals: the start
            self.record["confirmation_success"] = kept["confirmed"][0]
        else:
            kept = max(candidates, key=lambda e: e["key"])
        self.policy.load_state_dict(kept["state"])
        self.record["update"], self.record["validation_success"] = kept["update"], kept["key"][0]
        return self.record
