"""Hindsight grasp-target labels for the actor's target score map ('target' pooling).

In a successful episode the gripper closed on the object it then lifted, so the tool
position at the first step with the close bit set is the grasp point that every earlier step
was heading for. Projected into the policy image (:class:`awopt_ros.core.camera.PinholeCamera`
and the policy crop) it labels the actor's score map on those steps, the way affordance maps
are trained from the grasp a robot executed (Zeng et al. 2018, "Robotic pick-and-place of
novel objects in clutter"; Transporter Networks, Zeng et al. 2020). Only logged data is
needed: proprio and actions, no object poses. The tool pose at that step also labels the
grasp pose head (``ActorConfig.grasp_pose``): the tool position and the gripper yaw it closed at.
"""
import numpy as np

from awopt_ros.core import spec
from awopt_ros.learning.data import episode_transitions, is_success
from awopt_ros.learning.networks import GRASP_POS_OFFSET_M, GRASP_POS_SCALE_M, GRASP_POSE_DIM


def _first_close(episode):
    """Return (proprios (T, 6), T, index of the first step whose close bit is set or None)."""
    _, proprios, actions = episode_transitions(episode)
    closing = np.nonzero(actions[:, spec.IDX_CLOSE] > 0.5)[0]
    return proprios, actions.shape[0], (int(closing[0]) if len(closing) else None)


def grasp_targets(episode, camera, crop_xywh):
    """Return (target_xy float32 (T, 2), mask bool (T,)) for one episode.

    Args:
        episode: episode dict (``learning.data`` layout; T actions).
        camera: :class:`awopt_ros.core.camera.PinholeCamera` of the camera the policy image
            was cropped from (base frame).
        crop_xywh: the policy crop (x, y, w, h) in that camera's pixels.

    Returns:
        ``target_xy``: the grasp point (tool position at the first step whose close bit is
        set) in [-1, 1] policy-image coordinates, the same for every step; ``mask``: True on
        the steps up to and including that close step. An episode without a close step gets
        zeros and an all-False mask.

    Raises:
        ValueError: inconsistent episode arrays (``data.episode_transitions``).
    """
    proprios, steps, t_close = _first_close(episode)
    xy = np.zeros((steps, 2), dtype=np.float32)
    mask = np.zeros(steps, dtype=bool)
    if t_close is None:
        return xy, mask
    xy[:] = camera.to_policy_image(proprios[t_close, :3], crop_xywh)[0]
    mask[:t_close + 1] = True
    return xy, mask


def grasp_pose_targets(episode):
    """Return the grasp-pose label float32 (T, GRASP_POSE_DIM) of one episode, same on every
    step.

    The tool pose at the first close step (as :func:`grasp_targets`) in the units of
    ``Actor.grasp_pose``: (tool position - GRASP_POS_OFFSET_M) / GRASP_POS_SCALE_M, then
    cos 2yaw, sin 2yaw (yaw of the tool about base z, from proprio sin/cos). Zeros without a
    close step (the mask of :func:`grasp_targets` is then all False).
    """
    proprios, steps, t_close = _first_close(episode)
    pose = np.zeros((steps, GRASP_POSE_DIM), dtype=np.float32)
    if t_close is not None:
        tool = proprios[t_close].astype(np.float64)
        yaw2 = 2.0 * np.arctan2(tool[3], tool[4])
        pos = (tool[:3] - np.asarray(GRASP_POS_OFFSET_M)) / np.asarray(GRASP_POS_SCALE_M)
        pose[:] = np.concatenate([pos, [np.cos(yaw2), np.sin(yaw2)]])
    return pose


def target_arrays(episodes, camera, crop_xywh, successful_only=True, with_pose=False):
    """Concatenate :func:`grasp_targets` in the order of ``data.bc_arrays`` (same filter).

    Returns:
        (target_xy float32 (N, 2), mask bool (N,)), N = the transitions ``bc_arrays`` returns
        for the same ``episodes`` and ``successful_only``; with ``with_pose`` also the
        :func:`grasp_pose_targets` float32 (N, GRASP_POSE_DIM) as a third entry.
    """
    kept = [ep for ep in episodes if is_success(ep) or not successful_only]
    parts = [grasp_targets(ep, camera, crop_xywh)
             + ((grasp_pose_targets(ep),) if with_pose else ()) for ep in kept]
    parts = [p for p in parts if p[0].shape[0] > 0]
    if not parts:
        empty = (np.zeros((0, 2), np.float32), np.zeros(0, bool),
                 np.zeros((0, GRASP_POSE_DIM), np.float32))
        return empty if with_pose else empty[:2]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))
