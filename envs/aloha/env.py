"""State-observation ALOHA bimanual tasks on gym-aloha's scenes and reward.

gym-aloha renders three 480x640 cameras every step (about 3 steps/s on a CPU). These envs reuse
its scene XML, its joint-space task (action mapping, reset, staged reward) and its
object-placement sampler, but build the dm_control environment without rendering: about a
thousand steps per second. A seeded episode here and ``gym_aloha/Aloha*-v0`` reset with
``seed=info["placement_seed"]`` start from the same state and step identically.

Observation (float64): ``qpos`` (14: per arm 6 joint angles + the normalized gripper),
``qvel`` (14), the objects' poses (7 for the cube; 14 for peg and socket) and the episode's
progress ``step / 300`` (the tasks have a fixed 300-step horizon; a time-aware observation keeps
the scripted schedule's waiting phases apart). Episodes truncate after 300 steps.
Action: 14 absolute joint targets (6 per arm + a normalized gripper); the Box is the actuators'
true range (a gripper target g moves the fingers to 0.01844 + 0.03956 g m, clamped by the
actuator to [0.021, 0.057] m, so g is bounded to [0.0647, 0.9747]).
Reward: gym-aloha's stage 0..4 (4 = success; the episode then terminates).

``snapshot()`` records the simulation mid-episode (MuJoCo's full integration state, the step
count, the placement) and ``reset(options={"snapshot": s})`` starts an episode from it: the
episode goes on from step ``s.steps`` as it would have (`bbopt.envs.aloha.starts` starts
fine-tuning episodes from demonstrations' states this way).
"""

from __future__ import annotations

import ctypes.util
import os
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "EPISODE_STEPS",
    "TASKS",
    "AlohaStateEnv",
    "Snapshot",
    "import_gym_aloha",
    "object_position",
    "observation_size",
    "policy_features",
]

TASKS = ("transfer_cube", "insertion")
OBJECTS_AT = 28  # observation layout: qpos [0, 14), qvel [14, 28), object poses (7 each), progress
OBJECT_COUNT = {"transfer_cube": 1, "insertion": 2}  # the cube; the peg, then the socket
EPISODE_STEPS = 300
_GRIPPER_OFFSET, _GRIPPER_SCALE = 0.01844, 0.05800 - 0.01844


@dataclass(frozen=True, eq=False)
class Snapshot:
    """An episode's state at a step: ``physics`` is MuJoCo's full integration state
    (``mj_getState(..., mjSTATE_INTEGRATION)``: time, qpos, qvel, actuation, warm start, controls)."""

    task: str
    placement_seed: int
    steps: int
    physics: np.ndarray

    def __eq__(self, other) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        same = (self.task, self.placement_seed, self.steps) == (other.task, other.placement_seed, other.steps)
        return same and np.array_equal(self.physics, other.physics)

    __hash__ = None  # mutable array inside: not a dict key


def observation_size(task: str) -> int:
    """Length of the task's observation vector."""
    if task not in TASKS:
        raise ValueError(f"Invalid task {task!r}: expected one of {TASKS}")
    return OBJECTS_AT + 7 * OBJECT_COUNT[task] + 1


def object_position(obs: np.ndarray, index: int) -> np.ndarray:
    """Position (x, y, z) of object ``index`` in an observation."""
    start = OBJECTS_AT + 7 * index
    return obs[start : start + 3]


def policy_features(task: str) -> list[int]:
    """Observation entries a learned policy sees: joint positions, objects, progress; not the
    joint velocities. Cloned policies that see ``qvel`` learn to continue their own motion
    (measured on transfer-cube, BC by backprop, 200 demos: 12-16% success with qvel, 100%
    without)."""
    return [*range(0, 14), *range(OBJECTS_AT, observation_size(task))]


def import_gym_aloha():
    """Import gym-aloha's modules, with an install hint when it is missing.

    gym-aloha builds its envs with dm_control, which picks its OpenGL backend from ``MUJOCO_GL``
    when first imported (and fails to import when the named backend is missing). Unset, it is
    set here to the first library found: ``egl``, else ``osmesa``, else ``disabled`` (state-only
    simulation never renders; ``render()`` then raises dm_control's "no rendering backend").
    """
    if "MUJOCO_GL" not in os.environ:
        found = {name: ctypes.util.find_library(lib) for name, lib in (("egl", "EGL"), ("osmesa", "OSMesa"))}
        os.environ["MUJOCO_GL"] = next((name for name, path in found.items() if path), "disabled")
    try:
        from dm_control import mujoco as dm_mujoco
        from dm_control.rl import control
        from gym_aloha import constants, utils
        from gym_aloha.tasks import sim
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "The ALOHA envs need gym-aloha: pip install -e '.[aloha]' (mujoco<3.9, dm-control<1.1)"
        ) from error
    return dm_mujoco, control, constants, utils, sim


def _state_task(base):
    """gym-aloha's task class with an observation that renders nothing."""

    class StateTask(base):
        def get_observation(self, physics):
            return {
                "qpos": self.get_qpos(physics),
                "qvel": self.get_qvel(physics),
                "env_state": self.get_env_state(physics),
            }

    StateTask.__name__ = f"State{base.__name__}"
    return StateTask


class AlohaStateEnv(gym.Env):
    """One ALOHA task (``"transfer_cube"`` or ``"insertion"``) with state observations.

    ``reset(seed=s)`` places the objects as gym-aloha does for seed ``s``; a reset without a seed
    draws the placement seed from the env's seeded generator, so a run is reproducible from its
    first seed. ``info["placement_seed"]`` names the placement, ``info["is_success"]`` says whether
    the stage reached 4, ``info["stage"]`` is the stage now.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task: str = "transfer_cube", render_mode: str | None = None, width: int = 640,
                 height: int = 480, camera: str = "top"):  # fmt: skip
        if task not in TASKS:
            raise ValueError(f"Invalid task {task!r}: expected one of {TASKS}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"Invalid render_mode {render_mode!r}: expected None or 'rgb_array'")
        dm_mujoco, control, constants, utils, sim = import_gym_aloha()
        self.task, self.render_mode, self.width, self.height, self.camera = task, render_mode, width, height, camera
        self._sim, self._utils = sim, utils
        xml = "bimanual_viperx_transfer_cube.xml" if task == "transfer_cube" else "bimanual_viperx_insertion.xml"
        physics = dm_mujoco.Physics.from_xml_path(str(constants.ASSETS_DIR / xml))
        base = sim.TransferCubeTask if task == "transfer_cube" else sim.InsertionTask
        task_object = _state_task(base)()
        self._env = control.Environment(physics, task_object, time_limit=float("inf"), control_timestep=constants.DT,
                                        n_sub_steps=None, flat_observation=False)  # fmt: skip
        self.physics = physics
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(observation_size(task),), dtype=np.float64)
        ctrl = physics.model.actuator_ctrlrange
        grip_low, grip_high = (ctrl[6] - _GRIPPER_OFFSET) / _GRIPPER_SCALE
        low = np.concatenate([ctrl[0:6, 0], [grip_low], ctrl[8:14, 0], [grip_low]])
        high = np.concatenate([ctrl[0:6, 1], [grip_high], ctrl[8:14, 1], [grip_high]])
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.placement_seed: int | None = None
        self.stage = self.steps = 0
        self._ended, self._last_observation = True, None
        self._physics_error = control.PhysicsError
        import mujoco  # dm_control's own dependency: present once gym-aloha imported

        self._mujoco = mujoco

    def _observation(self, raw) -> np.ndarray:
        return np.concatenate([raw["qpos"], raw["qvel"], raw["env_state"], [self.steps / EPISODE_STEPS]])

    def placement(self, seed: int) -> np.ndarray:
        """The objects' start poses for a placement seed, exactly as gym-aloha samples them."""
        if self.task == "transfer_cube":
            return self._utils.sample_box_pose(seed)
        return np.concatenate(self._utils.sample_insertion_pose(seed))

    def snapshot(self) -> Snapshot:
        """The episode's state now (see `Snapshot`); refused before the first reset."""
        if self._last_observation is None:
            raise RuntimeError("No episode to snapshot: call reset() first")
        mujoco, spec = self._mujoco, self._mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.physics.model.ptr, spec))
        mujoco.mj_getState(self.physics.model.ptr, self.physics.data.ptr, state, spec)
        return Snapshot(self.task, int(self.placement_seed), int(self.steps), state)

    def _check_snapshot(self, snapshot) -> None:
        if not isinstance(snapshot, Snapshot) or snapshot.task != self.task:
            raise ValueError(f"Invalid snapshot: expected a Snapshot of a {self.task!r} episode, got {snapshot!r:.80}")
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool)
                   for v in (snapshot.steps, snapshot.placement_seed)) or snapshot.placement_seed < 0:  # fmt: skip
            raise ValueError(f"Invalid snapshot: step {snapshot.steps!r} and placement {snapshot.placement_seed!r} "
                             "must be integers, the placement >= 0")  # fmt: skip
        if not 0 <= snapshot.steps < EPISODE_STEPS:
            raise ValueError(f"Invalid snapshot: step {snapshot.steps} (expected 0 <= step < {EPISODE_STEPS})")
        size = self._mujoco.mj_stateSize(self.physics.model.ptr, self._mujoco.mjtState.mjSTATE_INTEGRATION)
        physics = np.asarray(snapshot.physics)
        if physics.shape != (size,) or not np.all(np.isfinite(physics)):
            raise ValueError(f"Invalid snapshot: physics state of shape {physics.shape} (expected ({size},), finite)")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new episode: placement from ``seed`` (or ``options["placement_seed"]``), or, with
        ``options["snapshot"]``, the recorded episode's state at its step (checked before
        anything changes)."""
        snapshot = (options or {}).get("snapshot")
        if snapshot is not None:
            self._check_snapshot(snapshot)
        super().reset(seed=seed)
        placement_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        if options and "placement_seed" in options:
            placement_seed = int(options["placement_seed"])
        if snapshot is not None:
            placement_seed = snapshot.placement_seed
        self.placement_seed = placement_seed
        self._env.task.random.seed(placement_seed)
        # gym-aloha's task reads the start pose from this module-level list on reset.
        self._sim.BOX_POSE[0] = self.placement(placement_seed)
        raw = self._env.reset()
        self.stage = self.steps = 0
        observation = raw.observation
        if snapshot is not None:
            self._mujoco.mj_setState(self.physics.model.ptr, self.physics.data.ptr, np.asarray(snapshot.physics),
                                     self._mujoco.mjtState.mjSTATE_INTEGRATION)  # fmt: skip
            self.physics.forward()  # positions, contacts and sensors of the restored state
            self.steps = snapshot.steps
            observation = self._env.task.get_observation(self.physics)
            self.stage = int(self._env.task.get_reward(self.physics))
        self._ended = False
        self._last_observation = self._observation(observation)
        info = {"is_success": False, "stage": self.stage, "placement_seed": placement_seed}
        return self._last_observation.copy(), info | ({"start_step": self.steps} if snapshot is not None else {})

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"Invalid action shape {action.shape}: expected {self.action_space.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("Invalid action: it contains NaN or inf")
        if self.steps >= EPISODE_STEPS or self._ended:
            raise RuntimeError("The episode has ended: call reset()")
        self.steps += 1
        try:
            time_step = self._env.step(action)
        except self._physics_error as error:
            # Wild joint targets can make MuJoCo diverge; the episode then ends as a failure.
            self._ended = True
            info = {"is_success": False, "stage": self.stage, "placement_seed": self.placement_seed,
                    "physics_error": str(error)}  # fmt: skip
            return self._last_observation.copy(), 0.0, False, True, info
        self.stage = int(time_step.reward)
        success = self.stage == 4
        info = {"is_success": success, "stage": self.stage, "placement_seed": self.placement_seed}
        truncated = self.steps >= EPISODE_STEPS and not success
        self._ended = success or truncated
        self._last_observation = self._observation(time_step.observation)
        return self._last_observation.copy(), float(self.stage), success, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            raise RuntimeError("render() needs render_mode='rgb_array' (and MUJOCO_GL=egl or osmesa)")
        return self.physics.render(height=self.height, width=self.width, camera_id=self.camera)

    def close(self):
        self._env = None
