"""Hindsight grasp-target labels for the actor's target score map ('target' pooling).

In a successful episode the gripper closed on the object it then lifted, so the tool
position at the grasp close (the first step of the episode's last run of steps with the
gripper commanded closed, :func:`commanded_closed`; the first close step when it closed once)
is the grasp point that every earlier step was heading for. An episode of the robot's own can
miss, reopen and grasp again (about one successful episode in five of the shipped actor's, in
process); its earlier closes are misses, so the last close run is the one that lifted, and
the actor does not train on the misses' steps (:func:`miss_mask`) or trains on them relabelled
as a reopening (:func:`reopen_actions`). Projected into the policy
image (:class:`awopt_ros.core.camera.PinholeCamera` and the policy crop) it labels the
actor's score map on those steps, the way affordance maps are trained from the grasp a robot
executed (Zeng et al. 2018, "Robotic pick-and-place of novel objects in clutter"; Transporter
Networks, Zeng et al. 2020). Only logged data is needed: proprio and actions, no object poses.
The tool pose at that step also labels the grasp pose head (``ActorConfig.grasp_pose``): the
tool position and the gripper yaw it closed at.

Hindsight labels carry the demonstrator's own error: a noisy scripted policy closes a median
1.0 cm (p90 2.8 cm) from the object's centre even in its successful episodes (models/grasp_bc.md).
With ``label='expert'`` the same steps are labelled instead with the grasp pose the scripted
demonstrator aimed for without its deliberate noise, recorded per step in the dataset's
``grasp_goal`` info (object centre and yaw from the simulator: a privileged label that exists
for simulated demonstrations only; the trained actor still sees only image and proprio).
Episodes without a recorded goal at their close step keep their hindsight label.

The same recorded goal relabels the demonstrations' x, y actions (:func:`expert_actions`):
the demonstrator moves towards its goal plus a per-episode grasp-point error and per-step
noise, so near the object its logged x, y command hardly depends on where the object is (a
least-squares slope of 0.28 against goal - tool within 2 cm in runs/collect_s9); the noise-free
command is what a learner should copy, as in DART (Laskey et al. 2017: collect with injected
noise, label with the supervisor's noise-free action).
"""
import numpy as np

from awopt_ros.core import spec
from awopt_ros.core.arm import gripper_target
from awopt_ros.learning.data import episode_transitions, is_success
from awopt_ros.learning.networks import GRASP_POS_OFFSET_M, GRASP_POS_SCALE_M, GRASP_POSE_DIM


#: Grasp label sources: the tool pose at the grasp close, or the demonstrator's recorded goal.
GRASP_LABELS = ('hindsight', 'expert')
#: Actor action labels of :func:`episode_labels`.
ACTION_LABELS = ('logged', 'expert', 'hindsight')
#: What :func:`episode_labels` does with the steps of misses before the grasp close.
MISS_LABELS = ('mask', 'reopen')


def _check_label(label):
    if label not in GRASP_LABELS:
        raise ValueError(f'label must be one of {GRASP_LABELS}, got {label!r}')


def _grasp_close(episode):
    """Return (proprios (T, 6), T, :func:`_close_index` of its actions)."""
    _, proprios, actions = episode_transitions(episode)
    return proprios, actions.shape[0], _close_index(actions, _closedness(proprios))


def _closedness(proprios):
    """The measured gripper closedness (T,) each action of an episode was chosen at."""
    return np.asarray(proprios)[:, spec.PROPRIO_DIM - 1]


def commanded_closed(actions, closedness=None):
    """Return bool (T,): the gripper command in force after each of ``actions`` (T, 7) is
    "closed", as the arm executes the bits (:func:`awopt_ros.core.arm.gripper_target`: a close
    bit closes; with the open bit too it closes only when ``closedness`` (T,) (the proprio
    gripper closedness each action was chosen at; None: unknown, close wins) shows the
    fingers holding an object; an open bit alone opens, neither keeps the previous command;
    open at the start of the episode)."""
    state = np.zeros(len(actions), dtype=bool)
    closed = False
    for t, action in enumerate(actions):
        target = gripper_target(action, None if closedness is None else closedness[t])
        closed = closed if target is None else target == spec.GRIPPER_CLOSED_M
        state[t] = closed
    return state


def _close_runs(actions, closedness=None):
    """Return [(first, last)] step indices of the runs of :func:`commanded_closed` steps."""
    state = commanded_closed(actions, closedness)
    edges = np.diff(np.concatenate([[0], state.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(),
                    (np.nonzero(edges == -1)[0] - 1).tolist()))


def _close_index(actions, closedness=None):
    """Index of the grasp close in actions (T, 7): the first step of the last run of
    :func:`commanded_closed` steps (the first close step when it closed once), or None. A
    close bit left out while the gripper stays closed (neither bit set, e.g. one sampled step)
    does not start a new run."""
    runs = _close_runs(actions, closedness)
    return runs[-1][0] if runs else None


def miss_mask(actions, closedness=None):
    """Return bool (T,): False on the steps of every commanded-closed run before the last.

    In an episode that missed, reopened and grasped again, the earlier runs are the misses:
    closing on nothing and lifting the empty gripper. Their actions are what the episode's
    success does not vouch for, so the actor does not regress on them (``actor_mask`` of
    :func:`episode_labels`); the reopening step after each miss and the new approach are kept.
    All True for an episode with at most one close run. ``closedness``: as in
    :func:`commanded_closed`.
    """
    mask = np.ones(len(actions), dtype=bool)
    for first, last in _close_runs(actions, closedness)[:-1]:
        mask[first:last + 1] = False
    return mask


def reopen_actions(actions, closedness=None):
    """Return float32 (T, 7): ``actions`` with the misses relabelled as what should have
    been done instead (hindsight labels for the gripper after a miss).

    For every commanded-closed run before the last (:func:`miss_mask`'s misses) the close
    step gets neither gripper bit (not closing yet: the object was not between the fingers;
    its motion is kept), and every later step of the run (the empty gripper closed or
    lifted) gets open, no close, no terminate, with dz = dyaw = 0 (stop and reopen;
    dx, dy stay as given, e.g. the hindsight steer to the grasp that later succeeded). The
    episode's success vouches for the reopening that followed, so the actor learns to reopen
    in the state where the shipped actor asks for open and close at once and stays closed
    (about 13 of its 15 failures; docs/experiments.md). Episodes with at most one close
    run are returned unchanged. ``closedness``: as in :func:`commanded_closed`.
    """
    out = np.array(actions, dtype=np.float32)
    for first, last in _close_runs(out, closedness)[:-1]:
        out[first, spec.IDX_OPEN] = out[first, spec.IDX_CLOSE] = 0.0
        out[first, spec.IDX_TERMINATE] = 0.0
        stuck = slice(first + 1, last + 1)
        out[stuck, 2:4] = 0.0
        out[stuck, spec.IDX_OPEN] = 1.0
        out[stuck, spec.IDX_CLOSE] = out[stuck, spec.IDX_TERMINATE] = 0.0
    return out


def recorded_goal(episode, step):
    """Return the ``grasp_goal`` info of ``step`` as float64 (4,) (x, y, z m, yaw rad), or None
    when the episode recorded none there (no key, or NaN).

    Reads a loaded episode's ``grasp_goal`` (:func:`awopt_ros.core.dataset.load_episodes`) or
    an in-process one's ``infos['grasp_goal']`` (:mod:`awopt_ros.sim.rollout`).
    """
    return _recorded(episode, 'grasp_goal', step, 4)


def recorded_noise_free_action(episode, step):
    """Return the ``noise_free_action`` info of ``step`` as float64 (7,) (the actor's action
    before exploration noise and discrete sampling), or None when none was recorded there (no
    key, NaN: CEM steps, scripted episodes, datasets from before it existed).

    Reads a loaded episode's ``noise_free_action`` or an in-process one's
    ``infos['noise_free_action']``.
    """
    return _recorded(episode, 'noise_free_action', step, spec.ACTION_DIM)


def _recorded(episode, key, step, size):
    values = episode.get(key)
    if values is None:
        values = (episode.get('infos') or {}).get(key)
    if values is None or isinstance(values, list) or len(values) <= step:
        return None
    value = np.asarray(values[step], dtype=np.float64).reshape(-1)
    return value if value.shape == (size,) and np.all(np.isfinite(value)) else None


def intervention_steps(episode, steps):
    """Return bool (``steps``,): the steps an operator drove (the episode's ``intervention``
    info, ``core.intervention``; an in-process episode's ``infos['intervention']``), all False
    when the episode has none (no key: recorded without interventions, or before they existed).

    Raises:
        ValueError: fewer than ``steps`` flags.
    """
    flags = episode.get('intervention')
    if flags is None:
        flags = (episode.get('infos') or {}).get('intervention')
    if flags is None:
        return np.zeros(steps, dtype=bool)
    flags = np.asarray(flags, dtype=bool).reshape(-1)
    if flags.shape[0] < steps:
        raise ValueError(f'episode {episode.get("id")}: intervention needs at least T={steps} '
                         f'flags, got {flags.shape[0]}')
    return flags[:steps].copy()


def _grasp_pose(episode, label):
    """Return (T, grasp close step or None, position (3,) m, yaw rad) of one episode's label."""
    _check_label(label)
    proprios, steps, t_close = _grasp_close(episode)
    if t_close is None:
        return steps, None, None, None
    goal = recorded_goal(episode, t_close) if label == 'expert' else None
    if goal is not None:
        return steps, t_close, goal[:3], float(goal[3])
    tool = proprios[t_close].astype(np.float64)
    return steps, t_close, tool[:3], float(np.arctan2(tool[3], tool[4]))


def grasp_targets(episode, camera, crop_xywh, label='hindsight'):
    """Return (target_xy float32 (T, 2), mask bool (T,)) for one episode.

    Args:
        episode: episode dict (``learning.data`` layout; T actions).
        camera: :class:`awopt_ros.core.camera.PinholeCamera` of the camera the policy image
            was cropped from (base frame).
        crop_xywh: the policy crop (x, y, w, h) in that camera's pixels.
        label: ``'hindsight'`` (tool position at the grasp close) or ``'expert'`` (the
            recorded ``grasp_goal`` at that step, hindsight where none was recorded).

    Returns:
        ``target_xy``: the grasp point (tool position at the grasp close, the first step of
        the last run of close-bit steps, or the goal) in [-1, 1] policy-image coordinates,
        the same for every step;
        ``mask``: True on the steps up to and including that close step. An episode without
        a close step gets zeros and an all-False mask.

    Raises:
        ValueError: inconsistent episode arrays (``data.episode_transitions``), unknown label.
    """
    steps, t_close, position, _ = _grasp_pose(episode, label)
    return _xy_mask(steps, t_close, position, camera, crop_xywh)


def _xy_mask(steps, t_close, position, camera, crop_xywh):
    xy = np.zeros((steps, 2), dtype=np.float32)
    mask = np.zeros(steps, dtype=bool)
    if t_close is not None:
        xy[:] = camera.to_policy_image(position, crop_xywh)[0]
        mask[:t_close + 1] = True
    return xy, mask


def grasp_pose_targets(episode, label='hindsight'):
    """Return the grasp-pose label float32 (T, GRASP_POSE_DIM) of one episode, same on every
    step.

    The tool pose at the grasp close step (as :func:`grasp_targets`) in the units of
    ``Actor.grasp_pose``: (tool position - GRASP_POS_OFFSET_M) / GRASP_POS_SCALE_M, then
    cos 2yaw, sin 2yaw (yaw of the tool about base z, from proprio sin/cos). Zeros without a
    close step (the mask of :func:`grasp_targets` is then all False). ``label`` as in
    :func:`grasp_targets` (``'expert'``: the recorded goal's position and yaw).
    """
    return _pose(*_grasp_pose(episode, label))


def _pose(steps, t_close, position, yaw):
    pose = np.zeros((steps, GRASP_POSE_DIM), dtype=np.float32)
    if t_close is not None:
        pos = (position - np.asarray(GRASP_POS_OFFSET_M)) / np.asarray(GRASP_POS_SCALE_M)
        pose[:] = np.concatenate([pos, [np.cos(2.0 * yaw), np.sin(2.0 * yaw)]])
    return pose


def target_arrays(episodes, camera, crop_xywh, successful_only=True, with_pose=False,
                  label='hindsight'):
    """Concatenate :func:`grasp_targets` in the order of ``data.bc_arrays`` (same filter).

    Returns:
        (target_xy float32 (N, 2), mask bool (N,)), N = the transitions ``bc_arrays`` returns
        for the same ``episodes`` and ``successful_only``; with ``with_pose`` also the
        :func:`grasp_pose_targets` float32 (N, GRASP_POSE_DIM) as a third entry. ``label``
        as in :func:`grasp_targets`.
    """
    _check_label(label)
    kept = [ep for ep in episodes if is_success(ep) or not successful_only]
    parts = []
    for ep in kept:   # one pass over each episode for both labels
        found = _grasp_pose(ep, label)
        parts.append(_xy_mask(*found[:3], camera, crop_xywh)
                     + ((_pose(*found),) if with_pose else ()))
    parts = [p for p in parts if p[0].shape[0] > 0]
    if not parts:
        empty = (np.zeros((0, 2), np.float32), np.zeros(0, bool),
                 np.zeros((0, GRASP_POSE_DIM), np.float32))
        return empty if with_pose else empty[:2]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))


def episode_labels(episode, camera, crop_xywh, grasp_label='hindsight', with_pose=False,
                   action_label='logged', miss_label='mask'):
    """Return the per-transition actor labels of one episode for a replay buffer.

    Args:
        episode: episode dict (``learning.data`` layout; T actions).
        camera, crop_xywh, grasp_label: as in :func:`grasp_targets`; ``grasp_label=None``
            gives no grasp-target labels (camera and crop unused).
        with_pose: add the :func:`grasp_pose_targets` labels.
        action_label: ``'logged'`` (no ``actor_action`` entry: the actor regresses on the
            executed actions), ``'expert'`` (:func:`expert_actions`) or ``'hindsight'``
            (:func:`expert_actions` with ``hindsight_goal=True`` and ``noise_free=True``:
            episodes without a recorded goal steer to where they closed, and their z, yaw
            are the actor's recorded noise-free action where there is one). Steps an
            operator drove (:func:`intervention_steps`) keep their logged action, the
            operator's, with either label (also with ``miss_label='reopen'``; their misses
            stay masked).
        miss_label: with expert or hindsight action labels, what the steps of misses
            before the grasp close become: ``'mask'`` (left out of the actor's batches,
            ``actor_mask`` False, :func:`miss_mask`) or ``'reopen'`` (relabelled by
            :func:`reopen_actions` and trained on).

    Returns:
        dict of arrays with T rows: with a ``grasp_label`` ``target_xy`` float32 (T, 2),
        ``target_mask`` bool (T,) and, with ``with_pose``, ``target_pose`` float32 (T,
        GRASP_POSE_DIM); with expert or hindsight action labels ``actor_action`` float32
        (T, 7) and ``actor_mask`` bool (T,) (:func:`miss_mask`: False on the steps of closes
        before the last, which the actor does not train on; all True with ``miss_label``
        'reopen'); the keys that
        ``learning.awopt.ReplayBuffer.add_episode`` takes as ``labels``.

    Raises:
        ValueError: inconsistent episode arrays, unknown label.
    """
    if action_label not in ACTION_LABELS:
        raise ValueError(f'action_label must be one of {ACTION_LABELS}, got {action_label!r}')
    if miss_label not in MISS_LABELS:
        raise ValueError(f'miss_label must be one of {MISS_LABELS}, got {miss_label!r}')
    labels = {}
    if grasp_label is not None:
        found = _grasp_pose(episode, grasp_label)
        labels['target_xy'], labels['target_mask'] = _xy_mask(*found[:3], camera, crop_xywh)
        if with_pose:
            labels['target_pose'] = _pose(*found)
    if action_label != 'logged':
        own = action_label == 'hindsight'
        labels['actor_action'] = expert_actions(episode, hindsight_goal=own,
                                                noise_free=own)[0]
        _, proprios, logged = episode_transitions(episode)
        closedness = _closedness(proprios)
        labels['actor_mask'] = miss_mask(labels['actor_action'], closedness)  # bits as logged
        if miss_label == 'reopen':
            operator = intervention_steps(episode, len(logged))
            missed = ~labels['actor_mask']
            labels['actor_action'] = reopen_actions(labels['actor_action'], closedness)
            labels['actor_mask'][:] = True
            # the operator's steps keep the operator's action; their misses stay masked
            labels['actor_action'][operator] = logged[operator]
            labels['actor_mask'][operator & missed] = False
    return labels


def expert_label_count(episodes, successful_only=True):
    """Return (episodes with a recorded goal at their grasp close, episodes with a close) among
    ``episodes`` (the successful ones by default): how many ``label='expert'`` relabels."""
    kept = [ep for ep in episodes if is_success(ep) or not successful_only]
    closes = [(ep, _grasp_close(ep)[2]) for ep in kept]
    closes = [(ep, t) for ep, t in closes if t is not None]
    return sum(recorded_goal(ep, t) is not None for ep, t in closes), len(closes)


def expert_actions(episode, hindsight_goal=False, noise_free=False):
    """Return (actions float32 (T, 7), relabelled steps) of one episode with the x, y commands
    of the noise-free demonstrator where it recorded its goal.

    Before the grasp close (:func:`grasp_targets`) the x, y command becomes
    ``clip(goal_xy - tool_xy)`` to the action bounds (the demonstrator's approach and descent
    without its grasp-point error and motion noise); from the grasp close on it becomes 0 (its
    close and lift move only in z).
    z, yaw and the discrete bits stay as logged; steps without a recorded ``grasp_goal`` (see
    :func:`recorded_goal`) too, unless ``hindsight_goal``: then the goal of such a step is the
    tool's x, y at the episode's grasp close (hindsight relabelling, as for the grasp-target
    label: for a successful episode of the robot's own, exploration noise included, the
    labels steer straight to where its grasp closed). An episode that never closes keeps
    its logged actions.

    With ``noise_free``, the z and yaw commands of steps with a recorded noise-free action
    (:func:`recorded_noise_free_action`: the robot's own actor steps) become that action's:
    the actor's command without its exploration noise, as DART labels a noisy rollout with
    the noise-free policy (Laskey et al. 2017). Copying the noisy logged z, yaw instead pulled
    the online success down by 3-9 points in 600-1,000 episodes (docs/experiments.md);
    x, y keep the goal relabel above, and the discrete bits stay as executed (they decide
    where the grasp closed and, sampled, are the exploration of the gripper).

    Steps an operator drove (:func:`intervention_steps`: the episode's ``intervention`` info)
    keep their logged action, the operator's correction, unchanged and are not counted: the
    recorded goal and noise-free action there are the demonstrator's or actor's, not what was
    executed, and ``intervention_weight`` up-weights these labels.

    Raises:
        ValueError: inconsistent episode arrays (``data.episode_transitions``).
    """
    _, proprios, logged = episode_transitions(episode)
    actions = np.array(logged, dtype=np.float32)
    t_close = _close_index(actions, _closedness(proprios))
    hindsight = proprios[t_close, :2] if hindsight_goal and t_close is not None else None
    high = spec.ACTION_HIGH[:2]
    operator = intervention_steps(episode, len(actions))
    count = 0
    for t in range(len(actions)):
        if operator[t]:     # the operator's correction is the label
            continue
        clean = recorded_noise_free_action(episode, t) if noise_free else None
        if clean is not None:
            actions[t, 2:4] = clean[2:4]
        goal = recorded_goal(episode, t)
        goal = goal[:2] if goal is not None else hindsight
        if goal is None:
            continue
        closed = t_close is not None and t >= t_close
        xy = np.zeros(2) if closed else np.clip(goal - proprios[t, :2], -high, high)
        actions[t, :2] = xy
        count += 1
    return actions, count


def expert_action_arrays(episodes, successful_only=True):
    """Concatenate :func:`expert_actions` in the order of ``data.bc_arrays`` (same filter).

    Returns:
        (actions float32 (N, 7), relabelled steps): N as ``bc_arrays`` returns for the same
        ``episodes`` and ``successful_only``.
    """
    kept = [ep for ep in episodes if is_success(ep) or not successful_only]
    parts = [expert_actions(ep) for ep in kept]
    actions = [a for a, _ in parts if a.shape[0] > 0]
    if not actions:
        return np.zeros((0, spec.ACTION_DIM), np.float32), 0
    return np.concatenate(actions), sum(n for _, n in parts)
