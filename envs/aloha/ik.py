"""Damped-least-squares inverse kinematics for the ALOHA arms on the joint-space model.

Each arm controls a *pinch point* between its fingertips, ``PINCH_OFFSET`` along the
``gripper_link`` body's x axis (the direction the fingers point), in position and orientation.
The solver works on its own ``MjData`` (kinematics only), so it never disturbs the simulation.
"""

from __future__ import annotations

import mujoco
import numpy as np

__all__ = ["ARMS", "PINCH_OFFSET", "ArmIK", "orientation_error", "pinch_point"]

ARMS = ("left", "right")
PINCH_OFFSET = np.array([0.125, 0.0, 0.0])
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")


def pinch_point(position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """World position of the pinch point of a ``gripper_link`` at ``position`` / ``rotation``."""
    return position + rotation @ PINCH_OFFSET


def orientation_error(rotation: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rotation vector (world frame, radians) that turns ``rotation`` into ``target``."""
    delta = target @ rotation.T
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, delta.reshape(-1))
    if quat[0] < 0:
        quat = -quat
    vector = np.empty(3)
    mujoco.mju_quat2Vel(vector, quat, 1.0)
    return vector


class ArmIK:
    """DLS IK for one arm: ``solve(q, position, rotation)`` returns the 6 joint angles.

    ``damping`` is lambda in ``dq = J^T (J J^T + lambda^2 I)^-1 e``; about 0.2 keeps the steps
    bounded near the start pose's singularity (0.05 jumps there, 0.01 fails) and is exact enough
    when warm-started every control step. Results are clipped to the joint ranges.
    """

    def __init__(self, model: mujoco.MjModel, arm: str, *, damping: float = 0.2, iterations: int = 20,
                 tolerance: float = 1e-4):  # fmt: skip
        if arm not in ARMS:
            raise ValueError(f"Invalid arm {arm!r}: expected one of {ARMS}")
        if damping <= 0:
            raise ValueError(f"Invalid damping {damping}: expected > 0")
        self.model, self.data = model, mujoco.MjData(model)
        self.damping, self.iterations, self.tolerance = damping, iterations, tolerance
        joints = [model.joint(f"vx300s_{arm}/{name}") for name in ARM_JOINTS]
        self.qpos_index = np.array([int(j.qposadr[0]) for j in joints])
        self.dof_index = np.array([int(j.dofadr[0]) for j in joints])
        self.low = np.array([j.range[0] for j in joints])
        self.high = np.array([j.range[1] for j in joints])
        self.body = model.body(f"vx300s_{arm}/gripper_link").id
        self._jacp, self._jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pinch-point position and rotation matrix (world frame) at arm joints ``q``."""
        self.data.qpos[self.qpos_index] = q
        mujoco.mj_kinematics(self.model, self.data)
        rotation = self.data.xmat[self.body].reshape(3, 3).copy()
        return pinch_point(self.data.xpos[self.body], rotation), rotation

    def solve(self, q: np.ndarray, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """Joint angles (6) that bring the pinch point to ``position`` with ``rotation``,
        starting from ``q`` (warm start)."""
        q = np.clip(np.asarray(q, dtype=np.float64).copy(), self.low, self.high)
        for _ in range(self.iterations):
            here, frame = self.forward(q)
            error = np.concatenate([position - here, orientation_error(frame, rotation)])
            if np.linalg.norm(error) < self.tolerance:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jac(self.model, self.data, self._jacp, self._jacr, here, self.body)
            jacobian = np.concatenate([self._jacp[:, self.dof_index], self._jacr[:, self.dof_index]])
            step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + self.damping**2 * np.eye(6), error)
            q = np.clip(q + step, self.low, self.high)
        return q
