"""Pinhole camera model: base-frame points -> camera pixels -> policy-image coordinates.

Used to turn a logged grasp point (the tool position where the gripper closed, base_link
frame, m) into its place in the policy image, the label of the actor's target heat map
(:mod:`awopt_ros.learning.targets`). The camera is ideal (no distortion): the simulated
camera is; a real camera's rectified image (``image_rect``) is, with ``K`` from its
``camera_info`` and the pose from the hand-eye calibration.

Conventions: optical frame x right, y down, z forward (REP 103 ``*_optical_frame``); pixel
(u, v) with the origin at the top-left pixel's corner; policy-image coordinates normalised
to [-1, 1] over the crop (x right, y down), -1 and +1 at the crop's outer edges.
"""
from dataclasses import dataclass

import numpy as np


def look_at_rotation(position_m, target_m, up=(0.0, 0.0, 1.0)):
    """Return the (3, 3) optical-frame rotation of a camera at ``position_m`` looking at
    ``target_m``: columns x (right), y (down), z (forward) in the base frame.

    Raises:
        ValueError: the view direction is parallel to ``up``.
    """
    fwd = np.asarray(target_m, dtype=float).reshape(3) - np.asarray(position_m, dtype=float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, dtype=float))
    if np.linalg.norm(right) < 1e-9:
        raise ValueError('the view direction is parallel to up')
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(fwd, right), fwd], axis=1)


@dataclass(frozen=True)
class PinholeCamera:
    """An ideal pinhole camera posed in the robot base frame.

    Attributes:
        K: (3, 3) intrinsics (px): fx, fy, cx, cy.
        position_m: (3,) optical centre in the base frame (m).
        rotation: (3, 3) columns = the optical frame's x (right), y (down), z (forward)
            axes in the base frame.
        width, height: image size (px).
    """

    K: np.ndarray
    position_m: np.ndarray
    rotation: np.ndarray
    width: int
    height: int

    @classmethod
    def look_at(cls, position_m, target_m, fovy_deg, width, height, up=(0.0, 0.0, 1.0)):
        """Return a camera at ``position_m`` looking at ``target_m`` with vertical fov.

        Square pixels, principal point at the image centre (MuJoCo's camera model).

        Raises:
            ValueError: a non-positive size or fov outside (0, 180), or the view direction
                parallel to ``up``.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f'image size must be positive, got {width}x{height}')
        if not 0.0 < fovy_deg < 180.0:
            raise ValueError(f'fovy_deg must be in (0, 180), got {fovy_deg}')
        rotation = look_at_rotation(position_m, target_m, up)
        f = 0.5 * height / np.tan(np.radians(fovy_deg) / 2.0)
        K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
        return cls(K, np.asarray(position_m, dtype=float).reshape(3), rotation, int(width),
                   int(height))

    def project(self, points_m):
        """Return pixel coordinates (N, 2) float64 (u right, v down) of base-frame points.

        Args:
            points_m: (N, 3) or (3,) points in the base frame (m).

        Raises:
            ValueError: a point at or behind the camera's optical centre plane.
        """
        p = np.asarray(points_m, dtype=float).reshape(-1, 3)
        cam = (p - self.position_m) @ self.rotation       # (N, 3) in the optical frame
        if np.any(cam[:, 2] <= 1e-6):
            raise ValueError('point(s) behind the camera cannot be projected')
        uvw = cam @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3]

    def to_policy_image(self, points_m, crop_xywh):
        """Return (N, 2) float32 coordinates in [-1, 1] of ``points_m`` in the policy image.

        The policy image is the ``crop_xywh`` crop (x, y, w, h in this camera's pixels)
        resized to a square (``core.image_ops.crop_resize``); a point outside the crop gets
        values outside [-1, 1].
        """
        x, y, w, h = (float(v) for v in crop_xywh)
        uv = self.project(points_m)
        return np.stack([(uv[:, 0] - x) / w * 2.0 - 1.0,
                         (uv[:, 1] - y) / h * 2.0 - 1.0], axis=1).astype(np.float32)
