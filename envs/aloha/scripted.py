"""Scripted ALOHA policies: pinch-point waypoints, solved every control step by DLS IK.

A policy plans timed waypoints (pinch position, orientation, normalized gripper) for each arm
from the objects' poses, interpolates them every control step (linear in position and gripper,
spherical in orientation) and turns the target into joint angles with `ArmIK`, warm-started
from the previous step's solution. Mid-episode it re-plans from the objects' *actual* poses
(objects settle lower in the grip than planned), and it never rotates a held object.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from bbopt.envs.aloha.env import EPISODE_STEPS, object_position
from bbopt.envs.aloha.ik import ARMS, ArmIK

__all__ = ["SCRIPTED", "InsertionScript", "ScriptedPolicy", "TransferCubeScript", "Waypoint"]

OPEN, CLOSED = 1.0, 0.0
# Orientations of the pinch frame (columns: finger direction, finger-closing axis, third axis).
RIGHT_DOWN = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]).T  # fingers down, close along y
LEFT_DOWN = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).T
LEFT_SIDE = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]).T  # fingers along +x, close along z
# The lowest safe pinch height when pointing down: fingertips ~3 mm above the table.
MIN_PINCH_Z = 0.032


@dataclass(frozen=True)
class Waypoint:
    """Pinch target of one arm at control step ``step``."""

    step: int
    position: np.ndarray
    rotation: np.ndarray
    gripper: float


class _Track:
    """Interpolates one arm's waypoints."""

    def __init__(self, waypoints: list[Waypoint]):
        self.waypoints = sorted(waypoints, key=lambda w: w.step)

    def at(self, step: int) -> tuple[np.ndarray, np.ndarray, float]:
        points = self.waypoints
        if step <= points[0].step:
            first = points[0]
            return first.position, first.rotation, first.gripper
        for before, after in itertools.pairwise(points):
            if step <= after.step:
                s = (step - before.step) / max(after.step - before.step, 1)
                position = (1 - s) * before.position + s * after.position
                rotations = Rotation.from_matrix(np.stack([before.rotation, after.rotation]))
                rotation = Slerp([0.0, 1.0], rotations)(s).as_matrix()
                return position, rotation, (1 - s) * before.gripper + s * after.gripper
        last = points[-1]
        return last.position, last.rotation, last.gripper


class ScriptedPolicy:
    """Base of the scripted policies: ``reset(obs)``, then ``action = policy(obs)`` each step.

    Subclasses implement ``plan(obs)`` (waypoints for both arms at the start) and may implement
    ``replan(step, obs)`` (return new waypoints or None) to correct from the actual object poses.
    """

    def __init__(self, model, *, damping: float = 0.2):
        self.ik = {arm: ArmIK(model, arm, damping=damping) for arm in ARMS}
        self.tracks: dict[str, _Track] = {}
        self.q: dict[str, np.ndarray] = {}
        self.step = 0

    @staticmethod
    def arm_joints(obs: np.ndarray, arm: str) -> np.ndarray:
        return obs[0:6] if arm == "left" else obs[7:13]

    def pinch(self, obs: np.ndarray, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """Pinch position and rotation of ``arm`` in the observed joint state."""
        return self.ik[arm].forward(self.arm_joints(obs, arm))

    def reset(self, obs: np.ndarray) -> None:
        self.step = 0
        self.q = {arm: self.arm_joints(obs, arm).copy() for arm in ARMS}
        self.tracks = {arm: _Track(points) for arm, points in self.plan(obs).items()}

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if not self.tracks:
            raise RuntimeError("Call reset(obs) before asking a scripted policy for actions")
        update = self.replan(self.step, obs)
        if update:
            self.tracks.update({arm: _Track(points) for arm, points in update.items()})
        action = []
        for arm in ARMS:
            position, rotation, gripper = self.tracks[arm].at(self.step)
            self.q[arm] = self.ik[arm].solve(self.q[arm], position, rotation)
            action += [self.q[arm], [gripper]]
        self.step += 1
        return np.concatenate(action)

    def start(self, obs: np.ndarray, arm: str) -> Waypoint:
        position, rotation = self.pinch(obs, arm)
        return Waypoint(0, position, rotation, OPEN)

    def hold(self, step: int, arm: str) -> list[Waypoint]:
        """Keep ``arm``'s current planned target from ``step`` on."""
        position, rotation, gripper = self.tracks[arm].at(step)
        return [Waypoint(step, position, rotation, gripper)]

    def pick(self, obs: np.ndarray, arm: str, grasp: np.ndarray, rotation: np.ndarray,
             carry_to: np.ndarray) -> list[Waypoint]:  # fmt: skip
        """From the start pose: 10 cm above ``grasp`` by step 40, down by 70, gripper closed by 85,
        carried (never rotated) to ``carry_to`` by 130, held there."""
        return [
            self.start(obs, arm),
            Waypoint(40, grasp + np.array([0, 0, 0.10]), rotation, OPEN),
            Waypoint(70, grasp, rotation, OPEN),
            Waypoint(85, grasp, rotation, CLOSED),
            Waypoint(130, carry_to, rotation, CLOSED),
            Waypoint(EPISODE_STEPS, carry_to, rotation, CLOSED),
        ]

    def plan(self, obs: np.ndarray) -> dict[str, list[Waypoint]]:
        raise NotImplementedError

    def replan(self, step: int, obs: np.ndarray) -> dict[str, list[Waypoint]] | None:
        return None


class TransferCubeScript(ScriptedPolicy):
    """Right arm picks the cube from above and lifts it to the meeting point; the left arm
    comes from the side, pinches the cube's top and bottom faces, the right arm lets go."""

    MEET = np.array([0.0, 0.5, 0.25])

    def plan(self, obs):
        cube = object_position(obs, 0)
        grasp = np.array([cube[0], cube[1], max(cube[2] + 0.012, MIN_PINCH_Z)])
        right = self.pick(obs, "right", grasp, RIGHT_DOWN, carry_to=self.MEET)
        left = [
            self.start(obs, "left"),
            Waypoint(100, self.MEET + np.array([-0.12, 0, 0]), LEFT_SIDE, OPEN),
            Waypoint(EPISODE_STEPS, self.MEET + np.array([-0.12, 0, 0]), LEFT_SIDE, OPEN),
        ]
        return {"right": right, "left": left}

    def replan(self, step, obs):
        if step != 135:
            return None
        cube = object_position(obs, 0)  # where the cube actually hangs in the right gripper
        meet = cube + np.array([-0.008, 0, 0])
        right_position, _, _ = self.tracks["right"].at(step)
        left = [
            *self.hold(step, "left"),
            Waypoint(165, meet, LEFT_SIDE, OPEN),
            Waypoint(180, meet, LEFT_SIDE, CLOSED),
            Waypoint(EPISODE_STEPS, meet, LEFT_SIDE, CLOSED),
        ]
        right = [
            Waypoint(180, right_position, RIGHT_DOWN, CLOSED),
            Waypoint(195, right_position, RIGHT_DOWN, OPEN),
            Waypoint(230, right_position + np.array([0.05, 0, 0.08]), RIGHT_DOWN, OPEN),
        ]
        return {"left": left, "right": right}


class InsertionScript(ScriptedPolicy):
    """Left arm picks the socket, right arm the peg (both from above, near their outer ends);
    both lift, then the peg is aligned with the socket's actual axis and pushed in."""

    MEET_SOCKET = np.array([-0.07, 0.5, 0.20])
    GRIP_SOCKET, GRIP_PEG = -0.03, 0.03  # pinch along x from the object's center: the outer ends

    def plan(self, obs):
        peg, socket = object_position(obs, 0), object_position(obs, 1)
        peg_grasp = np.array([peg[0] + self.GRIP_PEG, peg[1], MIN_PINCH_Z])
        socket_grasp = np.array([socket[0] + self.GRIP_SOCKET, socket[1], MIN_PINCH_Z])
        left_meet = self.MEET_SOCKET + np.array([self.GRIP_SOCKET, 0, 0.01])
        right_meet = self.MEET_SOCKET + np.array([0.16 + self.GRIP_PEG, 0, 0.01])
        return {
            "left": self.pick(obs, "left", socket_grasp, LEFT_DOWN, carry_to=left_meet),
            "right": self.pick(obs, "right", peg_grasp, RIGHT_DOWN, carry_to=right_meet),
        }

    def replan(self, step, obs):
        # Twice from the actual poses: to line the peg up in front of the socket, then again once
        # the arms have settled there (the first reading is taken while the peg still swings).
        if step not in (140, 185):
            return None
        peg, socket = object_position(obs, 0), object_position(obs, 1)
        right_position, _, _ = self.tracks["right"].at(step)
        to_peg = right_position - peg  # pinch target relative to the peg, kept while carrying it
        if step == 140:
            right = [Waypoint(175, socket + np.array([0.15, 0, 0]) + to_peg, RIGHT_DOWN, CLOSED)]
        else:
            right = [
                Waypoint(195, socket + np.array([0.15, 0, 0]) + to_peg, RIGHT_DOWN, CLOSED),
                Waypoint(240, socket + np.array([0.085, 0, 0]) + to_peg, RIGHT_DOWN, CLOSED),
            ]
        return {"right": [*self.hold(step, "right"), *right]}


SCRIPTED = {"transfer_cube": TransferCubeScript, "insertion": InsertionScript}
