"""Training through Gymnasium simulators: env pools (serial, processes, Ray), the rollout
driver, a state-value critic for per-step credit, observation normalization, control policies
and atomic checkpoints."""

from bbopt.policies.normalization import ObservationNormalizer
from bbopt.rollout.checkpoint import load_checkpoint, save_checkpoint
from bbopt.rollout.critic import StateValue
from bbopt.rollout.driver import Trainer, rollout_return
from bbopt.rollout.policy import BoxSquash, control_policy, normalizer_of
from bbopt.rollout.pools import POOLS, EnvFactory, ProcessPool, RayPool, SerialPool, StepResult, make_pool

__all__ = [
    "POOLS",
    "BoxSquash",
    "EnvFactory",
    "ObservationNormalizer",
    "ProcessPool",
    "RayPool",
    "SerialPool",
    "StateValue",
    "StepResult",
    "Trainer",
    "control_policy",
    "load_checkpoint",
    "make_pool",
    "normalizer_of",
    "rollout_return",
    "save_checkpoint",
]
