"""Parameter-space baselines: search over the flattened policy parameters."""

from bbopt.baselines.parameter_es import ParameterES

__all__ = ["ParameterES"]
