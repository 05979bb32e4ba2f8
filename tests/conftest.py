import os

import pytest
import torch

from bbopt.policies import MLP, LearnedVector
from bbopt.sigma import Fixed


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers on the two cores) each worker computes with
    one torch thread: two workers with a thread per core each would contend (OpenMP threads spin while
    they wait). Tests that need another count set it themselves."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


class RecordingSigma(Fixed):
    """A `bbopt.sigma.Fixed` that keeps every log-sigma gradient (`bbopt.sigma.Feedback`) it is handed."""

    learns = True  # receive the solver's estimate, but keep sigma fixed

    def __init__(self, value):
        super().__init__(value)
        self.gradients = []

    def step(self, feedback):
        super().step(feedback)
        self.gradients.append(feedback.log_sigma_gradient.detach().clone())


@pytest.fixture
def recording_sigma():
    return RecordingSigma


def vector_policy(dimension=10, value=3.0):
    return LearnedVector(dimension, init=torch.full((dimension,), value))


def mlp_policy(in_features=3, out_features=4, seed=0):
    return MLP(in_features, out_features, hidden=(8,), seed=seed)
