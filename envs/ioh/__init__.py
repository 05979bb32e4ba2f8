"""IOHprofiler problems for bbopt (BBOB, PBO, GRAPH): batch objectives, Gymnasium envs,
IOHanalyzer logging, an ``ioh.Experiment`` adapter and ECDF scoring."""

from bbopt.envs.ioh.ecdf import TARGETS, ecdf, final_score
from bbopt.envs.ioh.logging import attach_analyzer
from bbopt.envs.ioh.problems import SUITES, BudgetExhausted, Objective, get_problem
from bbopt.envs.ioh.runner import DEFAULT_SETTINGS, IOHAlgorithm, SolverSettings, build, optimize, solve

__all__ = [
    "DEFAULT_SETTINGS",
    "SUITES",
    "TARGETS",
    "BudgetExhausted",
    "IOHAlgorithm",
    "Objective",
    "SolverSettings",
    "attach_analyzer",
    "build",
    "ecdf",
    "final_score",
    "get_problem",
    "optimize",
    "solve",
]
