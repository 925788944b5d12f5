"""Export a trained :class:`~awopt_ros.learning.networks.Actor` to ONNX with its contract.

The graph (docs/INTERFACES.md "Model contract"): inputs ``image`` uint8 (N, H, W, 3) RGB and
``proprio`` float32 (N, 6), outputs ``action`` float32 (N, 7) and ``discrete_prob`` float32
(N, 3), dynamic batch axis N. Continuous entries are the actor mean clipped to the bounds;
discrete entries are 0/1, 1 where ``discrete_prob`` (the actor's Bernoulli probabilities of
``open, close, terminate``, which exploration may sample from) exceeds 0.5. Metadata:
``awopt_contract`` (JSON, checked by ``awopt_ros.core.onnx_policy``; it also records the
training cell's ``camera_pose_xyz_rpy``) and ``model_card`` (text).
"""
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from awopt_ros.core import spec
from awopt_ros.core.camera_pose import SIM_CAMERA_POSE_XYZ_RPY, as_pose
from awopt_ros.core.onnx_policy import CONTRACT_KEY, CONTRACT_VERSION, MODEL_CARD_KEY
from awopt_ros.learning.networks import ActorPolicy

OPSET = 17
PARITY_ATOL = 1e-4
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
