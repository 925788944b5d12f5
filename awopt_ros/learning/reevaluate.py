"""Offline re-evaluation: run a model on recorded episodes and compare it with what was logged.

``awopt reevaluate MODEL RUN_DIR|BAG...|--dataset-root R --dataset-id I`` is the check to run
before a model goes on the robot: it feeds every recorded step's policy image and
proprioception to the model, exactly as the live policy node would, and reports where the
model's actions differ from the logged ones.

How the model runs (the live node's classes, not a re-implementation)
---------------------------------------------------------------------
The actor is loaded by :meth:`awopt_ros.core.policy_runtime.PolicyRuntime.from_files` in mode
'actor' (the node's default) with the contract check of the node
(:func:`awopt_ros.core.onnx_policy.expected_contract` of the recorded image size and crop), no
exploration noise and thresholded discrete sub-actions (deployment settings); each step is one
:meth:`PolicyRuntime.act` call on one image (batch 1, like the node), so the same validity
check, clipping and CEM fallback (when a critic is given and the actor's output is invalid)
apply. With ``--critic-encoder/--critic-head`` the critic pair is loaded the same way
(:class:`awopt_ros.core.onnx_critic.OnnxCritic`) and scores, per step, the logged and the new
action: Q(s, a_logged) and Q(s, a_new), the critic's success probability.

Inputs per step
---------------
* From a Minari dataset (a run directory's ``datasets/``, or ``--dataset-root/--dataset-id``):
  the recorded ``/policy/image`` (the camera pipeline's output, what the logger stores) and
  the dataset's ``proprio``. The model's contract must have the dataset's image size and the
  crop of the recording (the crop of the recorded model's contract in the bag's
  ``/policy/model_info``; else ``spec.POLICY_CROP_XYWH``).
* From a bag directory (or a run directory with ``--from-bags``): every ``/policy/action`` of
  the episode (stamped after its ``start`` event, up to its ``end`` event, at most the end
  event's ``steps``: the action answering the frame the episode ended on never ran) is a
  step; its camera frame (same stamp, ``--camera-topic``) goes through
  :func:`awopt_ros.core.image_ops.crop_resize` with the MODEL's ``crop_xywh`` and
  ``image_size``, on :func:`awopt_ros.ros.convert.image_view` of the frame (what the live
  node does with ``image_source: camera``). Where the recorded ``/policy/image`` of that stamp
  has the same size, the two are compared bitwise (``policy_image_mismatches``).

Proprioception: the policy node publishes the proprio it acted on on ``/policy/proprio`` when
``publish_proprio`` is on; the logger then stores exactly that in the dataset. Without it the
dataset's proprio (and, from bags, this module's) is the forward kinematics of the latest joint
state stamped at or before the image, which in lockstep or on a loaded host can be a joint
state older than the one the policy used: actions then differ slightly although the model is
the same. Every episode reports its ``proprio_source``: 'policy' (the recorded
``/policy/proprio``: exact), 'joint_states' (approximate) or 'unknown' (a dataset without its
bags). Record with ``--set policy:publish_proprio=true`` for exact re-evaluation.

What is compared
----------------
The logged action of a step is its ``noise_free_action`` where recorded (the actor's own
action before exploration noise and discrete sampling), else the action the robot got.
Deterministic steps are the steps the actor produced (policy id 'actor') whose noise-free
action was recorded, or, in an episode that recorded no noise-free action at all (datasets
from before it existed), every actor step (assumed noise-free). Only deterministic steps
count for the divergence verdict: the same model must reproduce them; other steps (CEM,
scripted demonstrator, operator) are compared and plotted but not counted.

Per episode (``EpisodeReport``) and summed over episodes:

* per continuous action dimension (``dx, dy, dz`` m, ``dyaw`` rad): mean and max of
  ``|new - logged|`` over deterministic steps and the fraction of steps beyond ``atol``;
* discrete decisions (``open, close, terminate``): the fraction of deterministic steps on
  which the new model decides the same;
* a step diverges when one continuous dimension differs by more than ``atol`` or a decision
  differs; ``first_diverging_step`` (0-based, null when none) and ``diverging_steps``;
* with a critic: mean Q(s, a_logged), mean Q(s, a_new) and their per-step values;
* ``all_steps``: the same differences over every step, deterministic or not (e.g. a model
  against a scripted demonstrator's or CEM's episodes).

Outputs (``write_outputs``): ``summary.json`` (every number above, per-step arrays per
episode), one PNG per episode (logged vs new per action dimension, non-deterministic steps
shaded, diverging steps marked, Q when a critic is given) and a table on stdout.
"""
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from awopt_ros.core import spec
from awopt_ros.core.dataset import POLICY_IDS, load_episodes, policy_id

PROG = 'awopt reevaluate'
#: Default tolerance on the continuous sub-actions (m for dx, dy, dz; rad for dyaw).
DEFAULT_ATOL = 1e-4
CAMERA_TOPIC = '/camera/color/image_raw'
ACTION_TOPIC = '/policy/action'
DECISION_TOPIC = '/policy/decision'
PROPRIO_TOPIC = '/policy/proprio'
POLICY_IMAGE_TOPIC = '/policy/image'
JOINT_STATES_TOPIC = '/joint_states'
EVENT_TOPIC = '/episode/event'
MODEL_INFO_TOPIC = '/policy/model_info'
ACTOR_ID = POLICY_IDS['actor']
#: Column indices of the continuous (dx, dy, dz, dyaw) and discrete (open, close, terminate)
#: sub-actions, and their names.
CONTINUOUS_IDX = tuple(range(spec.ACTION_DIM))[spec.CONTINUOUS]
DISCRETE_IDX = tuple(range(spec.ACTION_DIM))[spec.DISCRETE]
CONTINUOUS_NAMES = tuple(spec.ACTION_NAMES[i] for i in CONTINUOUS_IDX)
DISCRETE_NAMES = tuple(spec.ACTION_NAMES[i] for i in DISCRETE_IDX)
#: Stamps closer than this are the same stamp (ns; the stack stamps with ns precision).
_STAMP_TOLERANCE_NS = int(round(spec.STAMP_TOLERANCE_S * 1e9))


class ReevaluateError(ValueError):
    """Bad input for a re-evaluation (a model, run, bag or dataset); one-line message."""


# -- recorded episodes ----------------------------------------------------------------------


@dataclass
class RecordedEpisode:
    """One recorded episode's steps, as the policy saw them.

    Attributes:
        name: e.g. 'episode_0003' (the episode manager's number), 'episode_0003_index_7' (a
            number that several recordings into one run directory used: the dataset index
            added), 'episode_0003_1' (such a bag read without its dataset) or
            'dataset_episode_5'.
        number: the episode manager's number, or None.
        source: 'dataset' or 'bag'.
        path: the dataset root or the bag directory (str).
        image: uint8 (T, S, S, 3) policy images the actions were computed from.
        proprio: float32 (T, 6) proprioception (``spec.PROPRIO_NAMES``).
        actions: float32 (T, 7) the actions the robot got.
        noise_free: float32 (T, 7) the actor's noise-free actions, NaN rows where none.
        policy: int64 (T,) policy ids (``core.dataset.POLICY_IDS``).
        stamp_s: float64 (T,) the images' stamps (s).
        proprio_source: 'policy', 'joint_states' or 'unknown' (module docstring).
        policy_image_mismatches: bag episodes: steps whose preprocessed camera frame differs
            from the recorded ``/policy/image`` (None when none could be compared).
        policy_images_compared: how many steps were compared that way.
        notes: list of str, things a user should know about this episode's data.
        label: the operator's label ('success' | 'failure') where the dataset has one.
        discarded: the operator discarded the episode (it is still re-evaluated).
        index: the episode's dataset index (None for a bag read without its dataset).
        bag: the episode's bag directory (str) where known, else None.
    """

    name: str
    number: object
    source: str
    path: str
    image: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    noise_free: np.ndarray
    policy: np.ndarray
    stamp_s: np.ndarray
    proprio_source: str = 'unknown'
    policy_image_mismatches: object = None
    policy_images_compared: int = 0
    notes: list = field(default_factory=list)
    label: object = None
    discarded: bool = False
    index: object = None
    bag: object = None

    @property
    def steps(self):
        """Number of steps T."""
        return int(len(self.actions))

    def reference(self):
        """Return float32 (T, 7): the noise-free action where recorded, else the action."""
        has = np.all(np.isfinite(self.noise_free), axis=1)
        return np.where(has[:, None], self.noise_free, self.actions).astype(np.float32)

    def deterministic(self):
        """Return bool (T,): the steps the same model must reproduce (module docstring)."""
        actor = self.policy == ACTOR_ID
        has = np.all(np.isfinite(self.noise_free), axis=1)
        if not has.any():          # nothing recorded (older data): actor steps, no noise
            return actor
        return actor & has


def _episode_name(number, fallback):
    return f'episode_{int(number):04d}' if number is not None else fallback


def dataset_episode_name(number, index, numbers):
    """Return the name of the dataset episode at ``index`` with episode number ``number``:
    'episode_NNNN', 'episode_NNNN_index_I' when several episodes of the dataset have that number
    (``numbers``: every episode's number; two recordings into one run directory each number
    their episodes from 1, as ``awopt view`` names them), 'dataset_episode_I' without a
    number."""
    if number is None:
        return f'dataset_episode_{index}'
    name = _episode_name(number, None)
    if sum(n == number for n in numbers) > 1:
        name += f'_index_{index}'
    return name


def episode_bag(root, episode, episodes):
    """Return the bag directory (Path) of a dataset episode under ``root/bags``, or None.

    ``episode`` and ``episodes``: dicts with ``id`` (dataset index), ``episode`` (number) and
    ``seed``, as :func:`awopt_ros.core.dataset.load_episodes` returns them. The logger's rule
    (``bags/episode_NNNN``, then ``episode_NNNN_1``, ... for a number used again) is resolved
    by seed and recording order as ``awopt view`` does
    (:func:`awopt_ros.learning.view_episode.find_bag`).
    """
    from awopt_ros.learning.view_episode import find_bag
    if episode.get('episode') is None or not (Path(root) / 'bags').is_dir():
        return None
    return find_bag(Path(root), episode, episodes)[0]


def bag_topics(bag_dir):
    """Return the set of topics with at least one message in the bag at ``bag_dir`` (empty
    when it cannot be read; the logger declares channels for topics that never publish)."""
    from awopt_ros.core.bag import scan_mcap
    try:
        scan = scan_mcap(bag_dir)
    except (FileNotFoundError, OSError):
        return set()
    used = {channel_id for channel_id, _, _ in scan['messages']}
    return {channel.topic for cid, channel in scan['channels'].items() if cid in used}


def dataset_episodes(root, dataset_id, bags_dir=None):
    """Load the episodes of a Minari dataset as :class:`RecordedEpisode` (source 'dataset').

    Args:
        root: the directory holding ``datasets/`` (a run directory).
        dataset_id: e.g. 'awopt/kuka-grasp-v0'.
        bags_dir: the run's ``bags/`` (to tell the proprio source from the episode's bag:
            'policy' when it holds ``/policy/proprio``); None: 'unknown'.

    Returns:
        ``(episodes, image_size)``: list of :class:`RecordedEpisode` in dataset order, and the
        dataset's policy image side (px).

    Raises:
        ReevaluateError: no such dataset, or a dataset of a state task (no images).
    """
    try:
        loaded = load_episodes(root, dataset_id)
    except FileNotFoundError as exc:
        raise ReevaluateError(f'no dataset {dataset_id!r} under {root}/datasets') from exc
    except ValueError as exc:
        raise ReevaluateError(f'--dataset-id: {exc}') from exc
    out, size = [], None
    numbers = [ep['episode'] for ep in loaded]
    for ep in loaded:
        if 'image' not in ep:
            raise ReevaluateError(f'dataset {dataset_id} of {root} is a state task dataset '
                                  '(no policy images): awopt reevaluate runs image actors')
        t = len(ep['actions'])
        size = int(ep['image'].shape[1])
        number = ep['episode']
        name = dataset_episode_name(number, ep['id'], numbers)
        source, notes, bag = 'unknown', [], None
        if bags_dir is not None and number is not None:
            bag = episode_bag(Path(bags_dir).parent, ep, loaded)
            if bag is not None:
                source = 'policy' if PROPRIO_TOPIC in bag_topics(bag) else 'joint_states'
        out.append(RecordedEpisode(
            name=name, number=number, source='dataset', path=str(root),
            image=ep['image'][:t], proprio=ep['proprio'][:t], actions=ep['actions'],
            noise_free=ep['noise_free_action'][:t], policy=ep['policy'][:t],
            stamp_s=ep['stamp_s'][:t], proprio_source=source, notes=notes,
            label=ep.get('label'), discarded=bool(ep.get('discarded', False)),
            index=int(ep['id']), bag=None if bag is None else str(bag)))
        if out[-1].discarded:
            notes.append('discarded by the operator (re-evaluated all the same)')
    return out, size


def _stamp_ns(header):
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _lookup(table, stamp_ns):
    """Return ``table``'s value at ``stamp_ns`` (within the stamp tolerance), else None."""
    if stamp_ns in table:
        return table[stamp_ns]
    for key, value in table.items():
        if abs(key - stamp_ns) <= _STAMP_TOLERANCE_NS:
            return value
    return None


def recorded_model_contract(bag_dir):
    """Return the actor contract in the bag's first ``/policy/model_info``, or None."""
    from awopt_ros.core.bag import default_typestore, read_messages
    typestore = default_typestore()
    for topic, msgtype, _, data in read_messages(bag_dir):
        if topic == MODEL_INFO_TOPIC:
            try:
                info = json.loads(typestore.deserialize_cdr(data, msgtype).data)
            except (ValueError, AttributeError):
                return None
            contract = ((info.get('models') or {}).get('actor') or {}).get('contract')
            return contract if isinstance(contract, dict) else info.get('contract')
    return None


def bag_episode(bag_dir, crop_xywh, image_size, camera_topic=CAMERA_TOPIC, name=None,
                index=None):
    """Read one episode's bag as a :class:`RecordedEpisode` (source 'bag').

    Steps: the ``/policy/action`` messages stamped after the bag's ``start`` event (the
    logger's rule: an action on a frame from before the start belongs to no episode) and at
    or before its ``end`` event, at most the end event's ``steps`` of them (the logger's rule
    too: in lockstep the policy answers the frame the episode ended on, at the end event's
    stamp, but that action is never executed); all of them when the bag has no end (e.g. cut
    by a crash).
    Each step's image is the camera frame of the action's stamp through
    ``crop_resize(image_view(frame), crop_xywh, image_size)``; its proprio the
    ``/policy/proprio`` of that stamp, else the forward kinematics of the latest joint state
    stamped at or before it (``spec.ARM_JOINTS`` + ``spec.GRIPPER_JOINT``); its policy id the
    ``/policy/decision`` source of that stamp, else the recorded ``/policy/model_info`` kind.
    Actions without a camera frame are left out (counted in ``notes``). A bag without
    ``camera_topic`` whose only ``*/color/image_raw`` topic is another is read from that one
    (said in ``notes``).

    ``name`` and ``index``: the episode's name and dataset index when the caller matched the
    bag to its dataset episode (:func:`episode_bag`, :func:`dataset_episode_name`); by default
    the name is 'episode_NNNN' of the start event's number, or the bag directory's name when
    it is that number's repeat (``episode_NNNN_1``: a second recording into the run), and the
    index None.

    Raises:
        FileNotFoundError: no ``.mcap`` in ``bag_dir``.
        ReevaluateError: no camera frame on ``camera_topic``, or no action at all.
    """
    from awopt_ros.core.bag import default_typestore, read_messages
    from awopt_ros.core.image_ops import crop_resize
    from awopt_ros.core.kinematics import proprio_from_joints
    from awopt_ros.ros import convert

    typestore = default_typestore()
    frames, images, actions, decisions, proprios, joints = {}, {}, [], {}, {}, []
    start, end, kind = None, None, None
    messages = read_messages(bag_dir)
    topics = {m[0] for m in messages}
    notes = []
    if camera_topic not in topics:      # another camera namespace (e.g. a bringup's camera_ns)
        candidates = sorted(t for t in topics if t.endswith('/color/image_raw'))
        if len(candidates) == 1:
            notes.append(f'camera frames from {candidates[0]} (no {camera_topic} in the bag)')
            camera_topic = candidates[0]
    for topic, msgtype, _, data in messages:
        if topic not in (camera_topic, ACTION_TOPIC, DECISION_TOPIC, PROPRIO_TOPIC,
                         POLICY_IMAGE_TOPIC, JOINT_STATES_TOPIC, EVENT_TOPIC, MODEL_INFO_TOPIC):
            continue
        msg = typestore.deserialize_cdr(data, msgtype)
        if topic == camera_topic:
            frames[_stamp_ns(msg.header)] = msg
        elif topic == POLICY_IMAGE_TOPIC:
            images[_stamp_ns(msg.header)] = msg
        elif topic == ACTION_TOPIC:
            actions.append((_stamp_ns(msg.header), convert.msg_to_action(msg)))
        elif topic == PROPRIO_TOPIC:
            proprios[_stamp_ns(msg.header)] = convert.msg_to_proprio(msg)
        elif topic == JOINT_STATES_TOPIC:
            joints.append((_stamp_ns(msg.header), msg))
        elif topic in (DECISION_TOPIC, EVENT_TOPIC, MODEL_INFO_TOPIC):
            try:
                payload = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(payload, dict):
                continue
            if topic == DECISION_TOPIC:
                stamp = payload.get('stamp') or {}
                ns = int(stamp.get('sec', 0)) * 1_000_000_000 + int(stamp.get('nanosec', 0))
                decisions[ns] = payload
            elif topic == MODEL_INFO_TOPIC:
                kind = payload.get('kind', kind)
            elif payload.get('event') == 'start':
                start = payload
            elif payload.get('event') == 'end':
                end = payload
    if not frames:
        raise ReevaluateError(f'bag {bag_dir} has no camera frame on {camera_topic} '
                              '(--camera-topic)')
    start_ns = _event_ns(start)
    end_ns = _event_ns(end)
    number = start.get('episode') if start else None
    limit = (end or {}).get('steps')
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    taken = 0
    actions.sort(key=lambda item: item[0])
    joints.sort(key=lambda item: item[0])
    joint_stamps = np.array([s for s, _ in joints], dtype=np.int64)
    names = list(spec.ARM_JOINTS) + [spec.GRIPPER_JOINT]
    rows = {k: [] for k in ('image', 'proprio', 'actions', 'noise_free', 'policy', 'stamp')}
    sources, no_frame, compared, mismatched = set(), 0, 0, 0
    for stamp_ns, action in actions:
        if start_ns is not None and stamp_ns <= start_ns + _STAMP_TOLERANCE_NS:
            continue
        if end_ns is not None and stamp_ns > end_ns + _STAMP_TOLERANCE_NS:
            continue
        if limit is not None and taken >= limit:
            continue                  # answered the frame the episode ended on: not executed
        taken += 1
        frame = _lookup(frames, stamp_ns)
        if frame is None:
            no_frame += 1
            continue
        image = crop_resize(convert.image_view(frame), crop_xywh, image_size)
        recorded = _lookup(images, stamp_ns)
        if recorded is not None and (int(recorded.height), int(recorded.width)) == \
                image.shape[:2]:
            compared += 1
            mismatched += int(not np.array_equal(convert.image_view(recorded), image))
        proprio = _lookup(proprios, stamp_ns)
        if proprio is not None:
            sources.add('policy')
        else:
            i = int(np.searchsorted(joint_stamps, stamp_ns + _STAMP_TOLERANCE_NS,
                                    side='right')) - 1
            if not joints:
                raise ReevaluateError(f'bag {bag_dir} has neither {PROPRIO_TOPIC} nor '
                                      f'{JOINT_STATES_TOPIC}: no proprioception')
            q = convert.joint_positions(joints[max(i, 0)][1], names)
            proprio = proprio_from_joints(q[:7], q[7])
            sources.add('joint_states')
        decision = _lookup(decisions, stamp_ns) or {}
        clean = decision.get('noise_free_action')
        rows['image'].append(image)
        rows['proprio'].append(np.asarray(proprio, np.float32))
        rows['actions'].append(np.clip(action, spec.ACTION_LOW, spec.ACTION_HIGH))
        rows['noise_free'].append(np.asarray(clean, np.float32) if clean is not None
                                  else np.full(spec.ACTION_DIM, np.nan, np.float32))
        rows['policy'].append(policy_id(decision.get('source') or kind or 'other'))
        rows['stamp'].append(stamp_ns * 1e-9)
    if not rows['actions']:
        raise ReevaluateError(f'bag {bag_dir} holds no {ACTION_TOPIC} of an episode step')
    if no_frame:
        notes.append(f'{no_frame} action(s) without a camera frame of their stamp left out')
    size = int(image_size)
    if name is None:
        name = _episode_name(number, Path(bag_dir).name)
        if number is not None and re.fullmatch(rf'{name}_\d+', Path(bag_dir).name):
            name = Path(bag_dir).name           # episode_NNNN_1: the number used again
    return RecordedEpisode(
        name=name, number=number, source='bag', path=str(bag_dir), index=index,
        bag=str(bag_dir),
        image=np.stack(rows['image']).reshape(-1, size, size, 3),
        proprio=np.stack(rows['proprio']), actions=np.stack(rows['actions']).astype(np.float32),
        noise_free=np.stack(rows['noise_free']), policy=np.asarray(rows['policy'], np.int64),
        stamp_s=np.asarray(rows['stamp'], np.float64),
        proprio_source='policy' if sources == {'policy'} else 'joint_states',
        policy_image_mismatches=mismatched if compared else None,
        policy_images_compared=compared, notes=notes)


def _event_ns(event):
    stamp = (event or {}).get('stamp_s')
    if not isinstance(stamp, (int, float)):
        return None
    return int(round(float(stamp) * 1e9))


# -- the model -------------------------------------------------------------------------------


def check_model_kind(path, option='MODEL'):
    """Return the ``awopt_contract`` of the image actor at ``path``.

    Raises:
        ReevaluateError: missing or unreadable file, no contract, or a model that is not an
            image actor of the grasp task (a state actor such as insertion's residual, a
            critic file, a success classifier); the message names ``option`` and the file.
    """
    from awopt_ros.core.onnx_policy import ModelContractError, read_contract
    try:
        contract = read_contract(path)
    except FileNotFoundError:
        raise ReevaluateError(f'{option}: model not found: {path}') from None
    except ModelContractError as exc:
        raise ReevaluateError(f'{option}: {exc}') from None
    task = contract.get('task', 'grasp')
    role = contract.get('role') or contract.get('kind')
    if role:
        raise ReevaluateError(f'{option}: {path} is a {role} (contract role/kind {role!r}), '
                              'not an actor: give the actor ONNX as MODEL')
    if task != 'grasp' or 'image_size' not in contract:
        raise ReevaluateError(f'{option}: {path} is an actor of task {task!r} (contract without '
                              'image_size: a state actor); awopt reevaluate runs the image '
                              'actors of the grasp task')
    return contract


def model_geometry(contract):
    """Return ``(image_size, crop_xywh)`` of an image actor's contract (ints)."""
    size = contract['image_size']
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    return size, [int(v) for v in contract.get('crop_xywh', spec.POLICY_CROP_XYWH)]


class Reevaluator:
    """The model under test, run as the live policy node runs it.

    Args:
        model: actor ONNX path.
        image_size, crop_xywh: the policy image the recorded data has (the node's
            ``image_size`` and ``crop_xywh`` parameters); the model's contract must match.
        critic_encoder, critic_head: optional critic pair (both or neither).
        seed: seed of the runtime (CEM fallback sampling only; no noise is added).

    Raises:
        ReevaluateError: a file missing, or a contract mismatch (one line naming the file
            and the fields).
    """

    def __init__(self, model, image_size, crop_xywh, critic_encoder=None, critic_head=None,
                 seed=0):
        from awopt_ros.core.onnx_policy import ModelContractError, expected_contract
        from awopt_ros.core.policy_runtime import ModelPaths, PolicyRuntime
        if bool(critic_encoder) != bool(critic_head):
            raise ReevaluateError('--critic-encoder and --critic-head go together')
        self.expected = expected_contract(image_size, crop_xywh)
        paths = ModelPaths(actor=str(model), critic_encoder=str(critic_encoder or ''),
                           critic_head=str(critic_head or ''))
        try:
            self.runtime = PolicyRuntime.from_files('actor', paths, self.expected, seed=seed,
                                                    actor_noise_std=0.0,
                                                    actor_sample_discrete=False)
        except (FileNotFoundError, ModelContractError) as exc:
            what = 'MODEL' if getattr(exc, 'model_group', '') == 'actor' else \
                '--critic-encoder/--critic-head'
            raise ReevaluateError(f'{what}: {exc}') from None
        self.critic = self.runtime.models.critic

    def run(self, episode):
        """Run the model on every step of ``episode`` (a :class:`RecordedEpisode`).

        Returns:
            dict: ``new`` float32 (T, 7) (NaN rows where no policy could act), ``source``
            list of T str ('actor', 'cem' or 'none'), ``q_logged`` / ``q_new`` float32 (T,)
            (None without a critic).
        """
        from awopt_ros.core.policy_runtime import NoPolicyError
        t = episode.steps
        new = np.full((t, spec.ACTION_DIM), np.nan, np.float32)
        sources = []
        reference = episode.reference()
        q_logged = q_new = None
        if self.critic is not None:
            q_logged = np.full(t, np.nan, np.float32)
            q_new = np.full(t, np.nan, np.float32)
        for i in range(t):
            try:
                action, source, _ = self.runtime.act(episode.image[i], episode.proprio[i])
            except NoPolicyError:
                sources.append('none')
                continue
            new[i] = action
            sources.append(source)
            if self.critic is not None:
                features = self.critic.encode(episode.image[i][None])
                q = self.critic.q(np.repeat(features, 2, axis=0),
                                  np.repeat(episode.proprio[i][None], 2, axis=0),
                                  np.stack([reference[i], action]).astype(np.float32))
                q_logged[i], q_new[i] = q[0], q[1]
        return {'new': new, 'source': sources, 'q_logged': q_logged, 'q_new': q_new}


# -- metrics ---------------------------------------------------------------------------------


def _num(value):
    """JSON-safe float (None for NaN/inf)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _step_stats(idx, diff, new, ref, atol):
    """Return ``(continuous, decisions)`` over the steps ``idx``: per continuous dimension
    ``mean_abs``, ``max_abs`` of ``diff`` (T, 7) and ``beyond_atol`` (a step without a new
    action counts as beyond), per decision the agreement of ``new`` and ``ref`` (None when
    ``idx`` is empty)."""
    continuous = {}
    for j, name in zip(CONTINUOUS_IDX, CONTINUOUS_NAMES):
        d = diff[idx, j]
        d = d[np.isfinite(d)]
        continuous[name] = {
            'mean_abs': _num(d.mean()) if d.size else None,
            'max_abs': _num(d.max()) if d.size else None,
            'beyond_atol': _num(np.mean(~(diff[idx, j] <= atol))) if idx.size else None}
    decisions = {}
    for j, name in zip(DISCRETE_IDX, DISCRETE_NAMES):
        decisions[name] = (_num(np.mean(np.round(new[idx, j]) == np.round(ref[idx, j])))
                           if idx.size else None)
    return continuous, decisions


def compare(episode, result, atol=DEFAULT_ATOL):
    """Return the per-episode report (a JSON-able dict) of ``result`` (:meth:`Reevaluator.run`)
    against ``episode``'s logged actions; see the module docstring for the fields.

    Keys: ``name``, ``episode``, ``index`` (the dataset index; None for a bag read without its
    dataset), ``source``, ``path``, ``steps``, ``deterministic_steps``,
    ``proprio_source``, ``policy_image_mismatches``, ``policy_images_compared``, ``notes``,
    ``continuous`` {dim: {mean_abs, max_abs, beyond_atol}}, ``decisions`` {dim: agreement},
    ``label``, ``discarded`` (the operator's, where recorded),
    ``diverging_steps``, ``first_diverging_step``, ``diverged`` (bool), ``new_sources``
    (counts), ``all_steps`` (``continuous``, ``decisions`` and ``diverging_steps`` over every
    step, deterministic or not: e.g. a model against a scripted demonstrator's episodes),
    ``q_logged_mean``, ``q_new_mean``, and ``per_step`` (lists: ``logged``,
    ``new``, ``deterministic``, ``diverging``, ``policy``, ``q_logged``, ``q_new``).
    """
    ref = episode.reference()
    new = result['new']
    det = episode.deterministic()
    cont, disc = spec.CONTINUOUS, spec.DISCRETE
    diff = np.abs(new - ref)                       # NaN rows: no action
    acted = np.all(np.isfinite(new), axis=1)
    cont_bad = np.any(diff[:, cont] > atol, axis=1)
    disc_bad = np.any(np.round(new[:, disc]) != np.round(ref[:, disc]), axis=1)
    diverging = (~acted) | cont_bad | disc_bad
    det_div = det & diverging
    continuous, decisions = _step_stats(np.flatnonzero(det), diff, new, ref, atol)
    all_continuous, all_decisions = _step_stats(np.arange(len(det)), diff, new, ref, atol)
    first = np.flatnonzero(det_div)
    sources = {}
    for s in result['source']:
        sources[s] = sources.get(s, 0) + 1

    def listed(a):
        return None if a is None else [_num(v) for v in a]

    q_logged, q_new = result['q_logged'], result['q_new']
    return {
        'name': episode.name, 'episode': episode.number, 'index': episode.index,
        'source': episode.source,
        'path': episode.path, 'steps': episode.steps, 'deterministic_steps': int(det.sum()),
        'proprio_source': episode.proprio_source, 'label': episode.label,
        'discarded': episode.discarded,
        'policy_image_mismatches': episode.policy_image_mismatches,
        'policy_images_compared': episode.policy_images_compared, 'notes': list(episode.notes),
        'continuous': continuous, 'decisions': decisions,
        'diverging_steps': int(det_div.sum()),
        'first_diverging_step': int(first[0]) if first.size else None,
        'diverged': bool(det_div.any()), 'new_sources': sources,
        'all_steps': {'continuous': all_continuous, 'decisions': all_decisions,
                      'diverging_steps': int(diverging.sum())},
        'q_logged_mean': None if q_logged is None else _num(np.nanmean(q_logged)),
        'q_new_mean': None if q_new is None else _num(np.nanmean(q_new)),
        'per_step': {
            'logged': [[_num(v) for v in row] for row in ref],
            'new': [[_num(v) for v in row] for row in new],
            'deterministic': [bool(v) for v in det],
            'diverging': [bool(v) for v in diverging],
            'policy': [int(v) for v in episode.policy],
            'q_logged': listed(q_logged), 'q_new': listed(q_new)},
    }


def summarize(reports, atol):
    """Return the summary over per-episode reports (:func:`compare`): totals, per-dimension
    max and step-weighted mean, decision agreement, diverged episodes and a ``verdict``
    ('identical': no deterministic step diverges; 'diverges'; 'no deterministic steps')."""
    det = sum(r['deterministic_steps'] for r in reports)
    div = sum(r['diverging_steps'] for r in reports)
    continuous = {}
    for name in CONTINUOUS_NAMES:
        maxes = [r['continuous'][name]['max_abs'] for r in reports
                 if r['continuous'][name]['max_abs'] is not None]
        weighted = [(r['continuous'][name]['mean_abs'], r['deterministic_steps'])
                    for r in reports if r['continuous'][name]['mean_abs'] is not None]
        beyond = [(r['continuous'][name]['beyond_atol'], r['deterministic_steps'])
                  for r in reports if r['continuous'][name]['beyond_atol'] is not None]
        n = sum(w for _, w in weighted)
        continuous[name] = {
            'mean_abs': sum(v * w for v, w in weighted) / n if n else None,
            'max_abs': max(maxes) if maxes else None,
            'beyond_atol': (sum(v * w for v, w in beyond) / sum(w for _, w in beyond)
                            if beyond and sum(w for _, w in beyond) else None)}
    decisions = {}
    for name in DISCRETE_NAMES:
        vals = [(r['decisions'][name], r['deterministic_steps']) for r in reports
                if r['decisions'][name] is not None]
        n = sum(w for _, w in vals)
        decisions[name] = sum(v * w for v, w in vals) / n if n else None
    q = [(r['q_logged_mean'], r['q_new_mean']) for r in reports if r['q_logged_mean'] is not None]
    verdict = 'no deterministic steps' if det == 0 else ('diverges' if div else 'identical')
    return {
        'episodes': len(reports), 'steps': sum(r['steps'] for r in reports),
        'deterministic_steps': det, 'diverging_steps': div,
        'diverging_fraction': div / det if det else None,
        'diverged_episodes': [r['name'] for r in reports if r['diverged']],
        'continuous': continuous, 'decisions': decisions, 'atol': float(atol),
        'proprio_sources': sorted({r['proprio_source'] for r in reports}),
        'q_logged_mean': float(np.mean([a for a, _ in q])) if q else None,
        'q_new_mean': float(np.mean([b for _, b in q])) if q else None,
        'verdict': verdict}


# -- outputs ---------------------------------------------------------------------------------


def plot_report(report, out_path, title='', atol=DEFAULT_ATOL):
    """Draw one episode's report (:func:`compare`) into a PNG at ``out_path``; return it.

    One row per continuous dimension (logged vs new), one for the discrete decisions (logged
    and new bits, offset per decision) and, with a critic, one for Q(s, a_logged) and
    Q(s, a_new). Non-deterministic steps are shaded grey; on deterministic steps a red cross
    marks each dimension that differs by more than ``atol`` and a red line the first
    diverging step.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    steps = report['per_step']
    logged = np.array(steps['logged'], dtype=np.float64)
    new = np.array(steps['new'], dtype=np.float64)
    det = np.array(steps['deterministic'], dtype=bool)
    t = np.arange(len(det))
    has_q = steps['q_logged'] is not None
    rows = len(CONTINUOUS_NAMES) + 1 + int(has_q)
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.7 * rows + 0.8), sharex=True)
    units = {'dx': 'm', 'dy': 'm', 'dz': 'm', 'dyaw': 'rad'}

    def decorate(ax):
        for i in np.flatnonzero(~det):
            ax.axvspan(i - 0.5, i + 0.5, color='0.85', lw=0)
        if report['first_diverging_step'] is not None:
            ax.axvline(report['first_diverging_step'], color='red', lw=0.8, ls='--')

    for k, (j, name) in enumerate(zip(CONTINUOUS_IDX, CONTINUOUS_NAMES)):
        ax = axes[k]
        decorate(ax)
        ax.plot(t, logged[:, j], 'o-', ms=3, label='logged', color='tab:blue')
        ax.plot(t, new[:, j], 's--', ms=3, label='new', color='tab:orange')
        off = det & ~(np.abs(new[:, j] - logged[:, j]) <= atol)
        ax.plot(t[off], new[off, j], 'x', color='red', ms=7, label=f'|new - logged| > {atol:g}')
        ax.set_ylabel(f'{name} ({units.get(name, "")})')
        if k == 0:
            ax.legend(loc='upper right', fontsize=7, ncol=3)
    ax = axes[len(CONTINUOUS_NAMES)]
    decorate(ax)
    for k, (j, name) in enumerate(zip(DISCRETE_IDX, DISCRETE_NAMES)):
        ax.step(t, logged[:, j] * 0.8 + 1.2 * k, where='mid', color='tab:blue')
        ax.step(t, new[:, j] * 0.8 + 1.2 * k, where='mid', color='tab:orange', ls='--')
    ax.set_yticks([0.4 + 1.2 * k for k in range(len(DISCRETE_NAMES))], DISCRETE_NAMES)
    ax.set_ylabel('decisions')
    if has_q:
        ax = axes[-1]
        decorate(ax)
        ql = np.array([np.nan if v is None else v for v in steps['q_logged']])
        qn = np.array([np.nan if v is None else v for v in steps['q_new']])
        ax.plot(t, ql, 'o-', ms=3, color='tab:blue', label='Q(s, a_logged)')
        ax.plot(t, qn, 's--', ms=3, color='tab:orange', label='Q(s, a_new)')
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel('Q')
        ax.legend(loc='upper right', fontsize=7, ncol=2)
    axes[-1].set_xlabel('step (grey: not deterministic, not counted)')
    fig.suptitle(title or report['name'], fontsize=9)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def _fmt(value, spec_='.2g'):
    return '-' if value is None else format(value, spec_)


def table(reports, summary):
    """Return the printed table (str): one row per episode and a total row."""
    width = max([16] + [len(r['name']) + 2 for r in reports])
    head = (f'{"episode":<{width}}{"steps":>6}{"det":>5}{"div":>5}{"first":>6}  '
            + ''.join(f'{"max|" + n + "|":>12}' for n in CONTINUOUS_NAMES)
            + ''.join(f'{n[:5]:>7}' for n in DISCRETE_NAMES) + f'{"Q log":>7}{"Q new":>7}'
            + '  proprio')
    lines = [head, '-' * len(head)]

    def row(label, steps, det, div, first, cont, dec, ql, qn, proprio):
        return (f'{label:<{width}}{steps:>6}{det:>5}{div:>5}{_fmt(first, "d"):>6}  '
                + ''.join(f'{_fmt(cont[n]["max_abs"], ".2e"):>12}' for n in CONTINUOUS_NAMES)
                + ''.join(f'{_fmt(dec[n], ".0%"):>7}' for n in DISCRETE_NAMES)
                + f'{_fmt(ql, ".2f"):>7}{_fmt(qn, ".2f"):>7}  {proprio}')

    for r in reports:
        lines.append(row(r['name'], r['steps'], r['deterministic_steps'], r['diverging_steps'],
                         r['first_diverging_step'], r['continuous'], r['decisions'],
                         r['q_logged_mean'], r['q_new_mean'], r['proprio_source']))
    lines.append('-' * len(head))
    lines.append(row('all', summary['steps'], summary['deterministic_steps'],
                     summary['diverging_steps'], None, summary['continuous'],
                     summary['decisions'], summary['q_logged_mean'], summary['q_new_mean'],
                     ','.join(summary['proprio_sources'])))
    return '\n'.join(lines)


def write_outputs(out_dir, model, inputs, reports, summary, critic=None, progress=None):
    """Write ``summary.json`` and one ``<episode name>.png`` per report into ``out_dir``.

    Reports that share a name (the same episode of two inputs) get ``_2``, ``_3``, ... in the
    PNG's name, so that no plot replaces another; each report's ``plot`` is its PNG's name.

    Returns:
        dict with ``summary`` (Path) and ``plots`` (list of Path).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots, used = [], set()
    for r in reports:
        stem, k = r['name'], 2
        while stem in used:
            stem, k = f'{r["name"]}_{k}', k + 1
        used.add(stem)
        r['plot'] = f'{stem}.png'
    for r in (progress(reports) if progress else reports):
        title = (f'{Path(model).name} on {r["name"]} ({r["source"]}): {r["diverging_steps"]} '
                 f'of {r["deterministic_steps"]} deterministic steps diverge (atol '
                 f'{summary["atol"]:g}), proprio from {r["proprio_source"]}')
        plots.append(plot_report(r, out_dir / r['plot'], title, summary['atol']))
    doc = {'model': str(model), 'critic': critic, 'inputs': [str(p) for p in inputs],
           'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'summary': summary,
           'episodes': reports, 'plots': [p.name for p in plots]}
    path = out_dir / 'summary.json'
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return {'summary': path, 'plots': plots}


__all__ = ['DEFAULT_ATOL', 'RecordedEpisode', 'ReevaluateError', 'Reevaluator', 'bag_episode',
           'bag_topics', 'check_model_kind', 'compare', 'dataset_episode_name',
           'dataset_episodes', 'episode_bag', 'model_geometry',
           'plot_report', 'recorded_model_contract', 'summarize', 'table', 'write_outputs']
