"""Noise: the families of standard noise and the models of candidates around the policy's output.

* Families (`Gaussian`, `Laplace`, `StudentT`): unit-variance noise ``eps`` with score functions.
* Models (`NoiseModel`): how ``eps`` becomes candidates and how the model learns.
  `Scaled` (``mu + sigma * eps``; scalar or per-dimension sigma), `Diagonal` and
  `FullCovariance` (learned shapes; CMA-ES's rates), `LowRank` (diagonal plus rank k, for large
  d), `Bernoulli` (bits), `Tiled` (one noise vector repeated over the blocks of the output: a
  chunk policy's noise on the chunk as a whole).

A solver takes ``noise=`` a family name, a family, or a model (``sigma=`` then belongs to the
model).
"""

from bbopt.noise.bernoulli import Bernoulli
from bbopt.noise.families import Gaussian, Laplace, Noise, StudentT, make_noise
from bbopt.noise.low_rank import LowRank
from bbopt.noise.model import NoiseModel, Scaled, split_pairs
from bbopt.noise.shape import Diagonal, FullCovariance, cma_rates
from bbopt.noise.tiled import Tiled

__all__ = [
    "Bernoulli",
    "Diagonal",
    "FullCovariance",
    "Gaussian",
    "Laplace",
    "LowRank",
    "Noise",
    "NoiseModel",
    "Scaled",
    "StudentT",
    "Tiled",
    "cma_rates",
    "make_noise",
    "split_pairs",
]
