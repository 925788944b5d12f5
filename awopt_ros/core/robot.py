"""Constants of the simulated/real Kuka iiwa 14 cell used by the grasping task.

All positions in ``base_link`` (robot base, z up), metres and radians.
"""
import numpy as np

#: Home joint vector (rad): ``tcp`` at (0.55, 0, 0.35) m, gripper pointing straight down,
#: fingers along the base y axis. Solved once by IK on ``urdf/iiwa14_gripper.urdf``.
HOME_Q = np.array([0.0, 0.4443, 0.0, -1.5197, 0.0, 1.1777, 0.0])
HOME_TCP_M = np.array([0.55, 0.0, 0.35])
URDF_PATH = 'urdf/iiwa14_gripper.urdf'
TCP_FRAME = 'tcp'
BIN_CENTER_M = np.array([0.6, 0.0, 0.0])   # bin floor centre
