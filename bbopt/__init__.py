"""bbopt: black-box optimization as a loss on a neural policy's output.

solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=1e-2), sigma=0.5,
                    samples=64, seed=0)          # or bbopt.CEM(...), bbopt.ES(...)
for _ in range(steps):
    x = solver.ask()          # candidates: the policy's output plus noise
    solver.tell(f(x))         # one loss per candidate -> one VJP -> optimizer.step()
"""

from bbopt import checks, data, losses, noise, presets, restarts, sigma, tracking
from bbopt.baselines import ParameterES  # registered as "param_es"
from bbopt.cem import CEM
from bbopt.es import ES
from bbopt.minimize import MinimizeResult, minimize
from bbopt.ovlr import OVLR
from bbopt.registry import SOLVERS, make_solver, register_solver
from bbopt.solver import Solver
from bbopt.training import evaluate, fit, train

__all__ = [
    "CEM",
    "ES",
    "OVLR",
    "SOLVERS",
    "MinimizeResult",
    "ParameterES",
    "Solver",
    "checks",
    "data",
    "evaluate",
    "fit",
    "losses",
    "make_solver",
    "minimize",
    "noise",
    "presets",
    "register_solver",
    "restarts",
    "sigma",
    "tracking",
    "train",
]
__version__ = "0.1.0"
