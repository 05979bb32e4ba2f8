"""IOHprofiler problems for bbopt (BBOB, PBO, GRAPH): batch objectives, Gymnasium envs,
IOHanalyzer logging, an ``ioh.Experiment`` adapter and ECDF scoring."""

from bbopt.envs.ioh.ecdf import TARGETS, ecdf, final_score
from bbopt.envs.ioh.logging import attach_analyzer
from bbopt.envs.ioh.problems import SUITES, BudgetExhausted, Objective, get_problem
from bbopt.envs.ioh.runner import BOX_SIGMA, IOHAlgorithm, preset_for, solve

__all__ = [
    "BOX_SIGMA",
    "SUITES",
    "TARGETS",
    "BudgetExhausted",
    "IOHAlgorithm",
    "Objective",
    "attach_analyzer",
    "ecdf",
    "final_score",
    "get_problem",
    "preset_for",
    "solve",
]
