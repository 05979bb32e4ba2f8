"""Problems for bbopt solvers (installed as ``bbopt.envs``)."""

from bbopt.envs.functions import FUNCTIONS, rastrigin, rosenbrock, sphere

__all__ = ["FUNCTIONS", "rastrigin", "rosenbrock", "sphere"]
