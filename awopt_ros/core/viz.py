"""Geometry of the rviz markers on ``/awopt/markers`` (ROS-free): the tcp workspace box, the
commanded action as an arrow, and the success probability as text. All in ``base_link``, m.
"""
import numpy as np

from awopt_ros.core import spec

#: The 12 edges of a box as pairs of corner indices; corner i has x = max if bit 0 of i is
#: set, y = max if bit 1, z = max if bit 2.
_BOX_EDGES = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7),
              (0, 4), (1, 5), (2, 6), (3, 7))


def _vec3(values, what):
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise ValueError(f'{what} must be 3 finite numbers, got {values!r}')
    return v


def box_edges(low_m, high_m):
    """Return the 24 end points (24, 3) of the 12 edges of the axis-aligned box ``low_m`` ..
    ``high_m`` (3,) each, two consecutive points per edge (an rviz LINE_LIST).

    Raises:
        ValueError: not 3 finite numbers each, or ``low_m`` not below ``high_m`` on every axis.
    """
    lo, hi = _vec3(low_m, 'workspace_min_m'), _vec3(high_m, 'workspace_max_m')
    if not np.all(lo < hi):
        raise ValueError(f'workspace_min_m {lo.tolist()} must be below workspace_max_m '
                         f'{hi.tolist()} on every axis')
    corners = np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1],
                         hi[2] if i & 4 else lo[2]] for i in range(8)])
    return corners[np.array(_BOX_EDGES).reshape(-1)]


def action_arrow(tcp_m, action, scale=1.0):
    """Return ``(start (3,), end (3,))`` of the arrow that shows an action's translation:
    from the tcp along (dx, dy, dz) times ``scale`` (actions move at most 3 cm per step; a
    scale of 5 makes them visible).

    Raises:
        ValueError: a tcp that is not 3 finite numbers, an action that is not
            ``spec.ACTION_DIM`` finite numbers, or ``scale`` <= 0.
    """
    tcp = _vec3(tcp_m, 'tcp position')
    a = spec.validate_action(action)
    if not scale > 0.0:
        raise ValueError(f'scale must be > 0, got {scale}')
    return tcp, tcp + scale * a[:3].astype(np.float64)


def action_text(action):
    """Return a short label of an action's discrete bits ('open', 'close', 'terminate', or
    '' when none is set)."""
    a = spec.validate_action(action)
    bits = [name for name, idx in (('open', spec.IDX_OPEN), ('close', spec.IDX_CLOSE),
                                   ('terminate', spec.IDX_TERMINATE)) if spec.is_set(a[idx])]
    return ' '.join(bits)


def success_text(probability):
    """Return the text marker's label for a success probability (e.g. 'P(success) 0.87'),
    'P(success) ?' when it is None or not finite."""
    if probability is None or not np.isfinite(probability):
        return 'P(success) ?'
    return f'P(success) {float(probability):.2f}'


def success_colour(probability):
    """Return an RGBA (4,) colour for the success text: red at 0 through yellow to green at 1
    (grey when unknown)."""
    if probability is None or not np.isfinite(probability):
        return (0.7, 0.7, 0.7, 1.0)
    p = float(np.clip(probability, 0.0, 1.0))
    return (min(1.0, 2.0 * (1.0 - p)), min(1.0, 2.0 * p), 0.1, 1.0)
