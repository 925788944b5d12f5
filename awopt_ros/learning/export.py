"""Export a trained actor to ONNX with its contract: image actors (grasp) and state actors.

Image actor (:func:`export_actor`, the grasping task; docs/INTERFACES.md "Model contract"):
inputs ``image`` uint8 (N, H, W, 3) RGB and ``proprio`` float32 (N, 6), outputs ``action``
float32 (N, 7) and ``discrete_prob`` float32 (N, 3), dynamic batch axis N. Continuous
entries are the actor mean clipped to the bounds; discrete entries are 0/1, 1 where
``discrete_prob`` (the actor's Bernoulli probabilities of ``open, close, terminate``, which
exploration may sample from) exceeds 0.5. Metadata:
``awopt_contract`` (JSON, checked by ``awopt_ros.core.onnx_policy``; it also records the
training cell's ``camera_pose_xyz_rpy`` and ``task: 'grasp'``) and ``model_card`` (text).

State actor (:func:`export_state_actor`, a task without an image such as insertion's
residual): input ``observation`` float32 (N, D) raw (the task's
``state_names``; the normalisation is inside the graph), output ``action`` float32 (N, A),
the actor's deterministic Gaussian mean clipped to the task's bounds (discrete entries 0/1
where the logit > 0), N dynamic. Contract keys: ``task``, ``observation_names``,
``action_names``, ``action_low``, ``action_high``, ``action_units``, ``algorithm``,
``dataset``, ``version``, plus the caller's extras (insertion: ``residual_alpha_m``,
``kp``). The runtime side is ``awopt_ros.core.onnx_policy.OnnxStateActor``.
"""
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from awopt_ros.core import spec
from awopt_ros.core.camera_pose import SIM_CAMERA_POSE_XYZ_RPY, as_pose
from awopt_ros.core.onnx_policy import (CONTRACT_KEY, CONTRACT_VERSION, MODEL_CARD_KEY,
                                       STATE_INPUT, STATE_OUTPUT, expected_state_contract)
from awopt_ros.learning.networks import ActorPolicy, StateActorPolicy

OPSET = 17
PARITY_ATOL = 1e-4
#: Parity bound (max abs difference of the actions) of a state actor's export.
STATE_PARITY_ATOL = 1e-5
#: Output names of an exported actor graph, in order.
OUTPUT_NAMES = ('action', 'discrete_prob')


def make_contract(image_size, crop_xywh, algorithm='bc', dataset='', *,
                  camera_pose_xyz_rpy=SIM_CAMERA_POSE_XYZ_RPY):
    """Return the ``awopt_contract`` dict for a model taking ``image_size`` square images.

    ``camera_pose_xyz_rpy`` (6 floats, ``core.camera_pose``) is the pose of the camera in the
    cell the training data came from (default: the simulated cell's); the policy node warns
    when the deployed camera sits elsewhere.

    Raises:
        ValueError: ``crop_xywh`` is not 4 entries or the pose is not 6 finite numbers.
    """
    if len(list(crop_xywh)) != 4:
        raise ValueError(f'crop_xywh must have 4 entries, got {list(crop_xywh)}')
    pose = [float(v) for v in as_pose(camera_pose_xyz_rpy)]
    return {
        'image_size': [int(image_size), int(image_size)],
        'crop_xywh': [int(v) for v in crop_xywh],
        'source_size': list(spec.SOURCE_SIZE),
        'proprio_names': list(spec.PROPRIO_NAMES),
        'action_names': list(spec.ACTION_NAMES),
        'action_low': [float(v) for v in spec.ACTION_LOW],
        'action_high': [float(v) for v in spec.ACTION_HIGH],
        'action_units': list(spec.ACTION_UNITS),
        'algorithm': str(algorithm),
        'dataset': str(dataset),
        'camera_pose_xyz_rpy': pose,
        'version': CONTRACT_VERSION,
        'task': 'grasp',
    }


def _export_bytes(policy, image, proprio):
    buf = io.BytesIO()
    kwargs = dict(input_names=['image', 'proprio'], output_names=list(OUTPUT_NAMES),
                  dynamic_axes={name: {0: 'N'} for name in ('image', 'proprio')
                                + OUTPUT_NAMES},
                  opset_version=OPSET)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(policy, (image, proprio), buf, dynamo=False, **kwargs)
    return buf.getvalue()


def save_with_metadata(raw, path, contract, model_card=''):
    """Write the serialized ONNX model ``raw`` to ``path`` with its contract and model card.

    The metadata keys are ``awopt_contract`` (``contract`` as JSON) and ``model_card`` (text);
    the model is checked with ``onnx.checker`` first. Returns the path (``Path``).
    """
    import onnx
    model = onnx.load_from_string(raw)
    del model.metadata_props[:]
    for key, value in ((CONTRACT_KEY, json.dumps(contract)), (MODEL_CARD_KEY, model_card)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = 'awopt_ros'
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def parity_check(policy, onnx_path, image_size, batch_sizes=(1, 64), seed=0):
    """Compare torch and onnxruntime outputs on random inputs; return the max abs difference.

    ``policy`` is the exported ``ActorPolicy`` (with or without ``discrete_prob``); the
    probabilities are compared too when both have them.

    Returns:
        dict {batch size: (max abs diff of the continuous parts and the probabilities,
        number of differing discrete entries)}.

    Raises:
        ValueError: a difference exceeds ``PARITY_ATOL`` at any batch size.
    """
    from awopt_ros.core.ort_session import session
    sess = session(onnx_path)
    rng = np.random.default_rng(seed)
    out = {}
    for n in batch_sizes:
        img = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
        pro = rng.normal(0.0, 0.3, (n, spec.PROPRIO_DIM)).astype(np.float32)
        with torch.no_grad():
            ref = policy(torch.from_numpy(img), torch.from_numpy(pro))
        names = [o.name for o in sess.get_outputs()]
        outs = sess.run(names, {'image': img, 'proprio': pro})
        got = outs[0]
        ref_prob = ref[1].numpy() if isinstance(ref, tuple) else None
        ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
        if got.shape != (n, spec.ACTION_DIM) or got.dtype != np.float32:
            raise ValueError(f'ONNX output has shape {got.shape} dtype {got.dtype}, expected '
                             f'({n}, {spec.ACTION_DIM}) float32')
        diff = float(np.max(np.abs(ref[:, :4] - got[:, :4])))
        if ref_prob is not None and 'discrete_prob' in names:
            diff = max(diff, float(np.max(np.abs(ref_prob - outs[names.index(
                'discrete_prob')]))))
        flips = int(np.sum(ref[:, 4:] != got[:, 4:]))
        if diff > PARITY_ATOL:
            raise ValueError(f'ONNX/torch parity failed at batch {n}: max abs diff {diff:.3g} '
                             f'> {PARITY_ATOL}')
        out[n] = (diff, flips)
    return out


def export_actor(actor, out_path, crop_xywh, dataset='', algorithm='bc', model_card='',
                 check_parity=True, camera_pose_xyz_rpy=SIM_CAMERA_POSE_XYZ_RPY):
    """Write ``actor`` as an ONNX file at ``out_path`` with contract metadata.

    Args:
        actor: trained :class:`Actor` (its ``config.image_size`` sets the input size).
        out_path: destination ``.onnx`` path (parent directories are created).
        crop_xywh: (x, y, w, h) crop of the camera frame the model was trained on.
        dataset: dataset id recorded in the contract.
        algorithm: training algorithm recorded in the contract.
        model_card: free text stored under the ``model_card`` metadata key.
        check_parity: compare torch vs onnxruntime at batch 1 and 64.
        camera_pose_xyz_rpy: camera pose (x y z m, roll pitch yaw rad; base_link ->
            camera_link) of the cell the training data came from, recorded in the contract;
            default the simulated cell's.

    Returns:
        dict: ``contract`` and ``parity`` ({batch: (max abs diff, discrete flips)} or {}).

    Raises:
        ValueError: parity fails (the file is still written, for inspection), or a bad
            camera pose.
    """
    actor = actor.eval()
    policy = ActorPolicy(actor, discrete_prob=True).eval()
    size = int(actor.config.image_size)
    contract = make_contract(size, crop_xywh, algorithm=algorithm, dataset=dataset,
                             camera_pose_xyz_rpy=camera_pose_xyz_rpy)
    dummy_img = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    dummy_pro = torch.zeros((2, spec.PROPRIO_DIM), dtype=torch.float32)
    out_path = save_with_metadata(_export_bytes(policy, dummy_img, dummy_pro), out_path,
                                  contract, model_card)
    parity = parity_check(policy, out_path, size) if check_parity else {}
    return {'contract': contract, 'parity': parity}


# ---------------------------------------------------------------------------------------------
# State actors (tasks without an image)
# ---------------------------------------------------------------------------------------------

#: Contract keys a state actor's contract always has, in order (contract 23 section 4).
STATE_CONTRACT_KEYS = ('task', 'observation_names', 'action_names', 'action_low',
                       'action_high', 'action_units', 'algorithm', 'dataset', 'version')


def make_state_contract(task, algorithm, dataset='', extra=None):
    """Return the ``awopt_contract`` of a state actor for ``task``.

    Args:
        task: ``core.task.Task`` or its name; must have no image.
        algorithm: training algorithm (e.g. the learner preset 'awac', 'awopt').
        dataset: dataset id the actor was trained on.
        extra: optional dict of further JSON-serialisable keys (insertion:
            ``residual_alpha_m`` (m per step), ``kp`` (3 gains)); they may not replace the
            standard keys.

    Returns:
        dict with :data:`STATE_CONTRACT_KEYS` (lists of names, float bounds) and the extras.

    Raises:
        ValueError: unknown task, a task with an image, extras that are not a dict, replace
            a standard key, or are not JSON-serialisable.
    """
    from awopt_ros.core.task import get_task
    t = get_task(task)
    if t.has_image:
        raise ValueError(f'task {t.name!r} takes an image: export it with export_actor')
    contract = {
        **expected_state_contract(t.name),
        'algorithm': str(algorithm),
        'dataset': str(dataset),
        'version': CONTRACT_VERSION,
    }
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise ValueError(f'extra must be a dict, got {type(extra).__name__}')
    clash = sorted(set(extra) & set(contract))
    if clash:
        raise ValueError(f'extra may not replace the contract keys {clash}')
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'extra is not JSON-serialisable: {exc}') from None
    contract.update(extra)
    return contract


def _state_export_bytes(policy, state_dim):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(policy, (torch.zeros((2, state_dim), dtype=torch.float32),), buf,
                          dynamo=False, input_names=[STATE_INPUT], output_names=[STATE_OUTPUT],
                          dynamic_axes={STATE_INPUT: {0: 'N'}, STATE_OUTPUT: {0: 'N'}},
                          opset_version=OPSET)
    return buf.getvalue()


def check_state_graph(onnx_path, contract):
    """Check an exported state actor's graph io against its contract.

    The graph must have exactly the input ``observation`` float32 (N, D) and the output
    ``action`` float32 (N, A), N dynamic, D and A the lengths of the contract's
    ``observation_names`` and ``action_names``.

    Raises:
        ValueError: a mismatch (every one named).
    """
    from awopt_ros.core.onnx_policy import ORT_FLOAT, check_graph_io
    from awopt_ros.core.ort_session import session
    sess = session(onnx_path)
    d, a = len(contract['observation_names']), len(contract['action_names'])
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    problems = []
    if inputs != [STATE_INPUT] or outputs != [STATE_OUTPUT]:
        problems.append(f'graph has inputs {inputs} outputs {outputs}, the contract needs '
                        f'[{STATE_INPUT!r}] -> [{STATE_OUTPUT!r}]')
    problems += check_graph_io(sess, {STATE_INPUT: (ORT_FLOAT, (None, d))},
                               {STATE_OUTPUT: (ORT_FLOAT, (None, a))})
    if problems:
        raise ValueError(f'{onnx_path}: ' + '; '.join(problems))


def state_parity_check(policy, onnx_path, batch_sizes=(1, 64), seed=0):
    """Compare torch and onnxruntime actions of a state actor on random raw states.

    States are ``offset + scale * N(0, 1)`` per entry (the task's normalisation), so they
    span the scales the actor sees.

    Args:
        policy: the exported :class:`~awopt_ros.learning.networks.StateActorPolicy`.
        onnx_path: the exported file.

    Returns:
        dict {batch size: max abs difference of the actions}.

    Raises:
        ValueError: an output of the wrong shape or dtype, or a difference above
            :data:`STATE_PARITY_ATOL` (1e-5) at any batch size.
    """
    from awopt_ros.core.ort_session import session
    sess = session(onnx_path)
    task = policy.actor.task
    offset = np.asarray(task.state_offset, np.float32)
    scale = np.asarray(task.state_scale, np.float32)
    rng = np.random.default_rng(seed)
    out = {}
    for n in batch_sizes:
        obs = (offset + scale * rng.standard_normal((n, task.state_dim))).astype(np.float32)
        with torch.no_grad():
            ref = policy(torch.from_numpy(obs)).numpy()
        got = sess.run([STATE_OUTPUT], {STATE_INPUT: obs})[0]
        if got.shape != (n, task.action_dim) or got.dtype != np.float32:
            raise ValueError(f'ONNX action has shape {got.shape} dtype {got.dtype}, expected '
                             f'({n}, {task.action_dim}) float32')
        diff = float(np.max(np.abs(ref - got)))
        if not diff <= STATE_PARITY_ATOL:
            raise ValueError(f'state actor ONNX/torch parity failed at batch {n}: max abs '
                             f'diff {diff:.3g} > {STATE_PARITY_ATOL}')
        out[n] = diff
    return out


def export_state_actor(actor, out_path, algorithm, dataset='', extra=None, model_card='',
                       check_parity=True):
    """Write a state actor as an ONNX file at ``out_path`` with its contract metadata.

    Graph: ``observation`` float32 (N, D) raw -> ``action`` float32 (N, A), the actor's
    deterministic mean clipped to the task's bounds (opset 17, dynamic N); see the module
    docstring. For insertion: D = 15 (``core.task.INSERTION_STATE_NAMES``), A = 3 residual
    entries in [-1, 1] (fraction of ``residual_alpha_m``).

    Args:
        actor: a trained :class:`~awopt_ros.learning.networks.StateActor` (e.g.
            ``learner.deployed_actor``); its ``task`` names the contract's task.
        out_path: destination ``.onnx`` path (parent directories are created).
        algorithm: training algorithm recorded in the contract (e.g. 'awac', 'awopt').
        dataset: dataset id recorded in the contract.
        extra: further contract keys (insertion: ``{'residual_alpha_m': 0.002, 'kp': [1.0,
            1.0, 0.3]}``), see :func:`make_state_contract`.
        model_card: free text stored under the ``model_card`` metadata key.
        check_parity: compare torch and onnxruntime at batch 1 and 64 (max abs diff <= 1e-5).

    Returns:
        dict: ``contract`` and ``parity`` ({batch: max abs diff}, {} when skipped).

    Raises:
        ValueError: not a state actor, a bad contract (see :func:`make_state_contract`),
            graph io that differs from the contract, or failed parity (the file is still
            written, for inspection).
    """
    from awopt_ros.learning.networks import StateActor
    if not isinstance(actor, StateActor):
        raise ValueError(f'export_state_actor needs a StateActor, got {type(actor).__name__}'
                         f' (image actors: export_actor)')
    contract = make_state_contract(actor.task, algorithm, dataset, extra)
    was_training = actor.training
    policy = StateActorPolicy(actor.eval()).eval()
    try:
        out_path = save_with_metadata(_state_export_bytes(policy, actor.task.state_dim),
                                      out_path, contract, model_card)
        check_state_graph(out_path, contract)
        parity = state_parity_check(policy, out_path) if check_parity else {}
    finally:
        actor.train(was_training)
    return {'contract': contract, 'parity': parity}
