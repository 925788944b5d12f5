"""Load an exported actor (ONNX) and run it with onnxruntime, checking its contract first.

The model contract (docs/INTERFACES.md "Model contract"): inputs ``image`` uint8 (N, H, W, 3)
RGB and ``proprio`` float32 (N, 6); output ``action`` float32 (N, 7) with continuous parts
within bounds and discrete parts 0/1. The ONNX metadata key ``awopt_contract`` holds a JSON
object describing what the model was trained on; the loader compares it with what the
caller will feed it and refuses a mismatch.
"""
import json
from pathlib import Path

import numpy as np

from awopt_ros.core import spec

CONTRACT_KEY = 'awopt_contract'
MODEL_CARD_KEY = 'model_card'
CONTRACT_VERSION = 1
#: Contract fields compared by :func:`check_contract`; floats compared with ``atol=1e-6``.
CHECKED_FIELDS = ('image_size', 'crop_xywh', 'proprio_names', 'action_names', 'action_low',
                  'action_high')


class ModelContractError(ValueError):
    """The model's ``awopt_contract`` does not match what the caller expects.

    ``mismatches`` lists one human-readable line per mismatching field.
    """

    def __init__(self, path, mismatches):
        """Build the error for model ``path`` with the list of mismatch lines."""
        self.path = str(path)
        self.mismatches = list(mismatches)
        super().__init__(f'model {self.path} does not match the expected contract: '
                         + '; '.join(self.mismatches))


def expected_contract(image_size, crop_xywh):
    """Return the contract fields a caller checks, built from ``core.spec``.

    Args:
        image_size: side of the square policy image (px).
        crop_xywh: (x, y, w, h) crop in source pixels.

    Returns:
        dict with ``image_size`` [H, W], ``crop_xywh``, ``proprio_names``, ``action_names``,
        ``action_low``, ``action_high`` (lists).
    """
    return {
        'image_size': [int(image_size), int(image_size)],
        'crop_xywh': [int(v) for v in crop_xywh],
        'proprio_names': list(spec.PROPRIO_NAMES),
        'action_names': list(spec.ACTION_NAMES),
        'action_low': [float(v) for v in spec.ACTION_LOW],
        'action_high': [float(v) for v in spec.ACTION_HIGH],
    }


def _check_file(path):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'ONNX model not found: {p} (train one with `awopt train` or '
                                f'set the model_path parameter)')
    return p


def read_metadata(path):
    """Return the ONNX model's metadata as a dict of str (without loading weights into a run).

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    import onnx
    p = _check_file(path)
    model = onnx.load(str(p), load_external_data=False)
    return {m.key: m.value for m in model.metadata_props}


def read_contract(path):
    """Return the ``awopt_contract`` metadata of the ONNX model at ``path`` as a dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelContractError: the metadata key is missing or not a JSON object.
    """
    meta = read_metadata(path)
    if CONTRACT_KEY not in meta:
        raise ModelContractError(path, [f'metadata key {CONTRACT_KEY!r} missing'])
    try:
        contract = json.loads(meta[CONTRACT_KEY])
    except json.JSONDecodeError as exc:
        raise ModelContractError(path, [f'{CONTRACT_KEY} is not valid JSON: {exc}']) from exc
    if not isinstance(contract, dict):
        raise ModelContractError(path, [f'{CONTRACT_KEY} is not a JSON object'])
    return contract


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return False
        return all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return abs(float(a) - float(b)) <= 1e-6
    except (TypeError, ValueError):
        return a == b


def check_contract(contract, expected):
    """Return a list of mismatch lines between ``contract`` and ``expected`` (empty if none).

    Every key of ``expected`` is compared (lists element-wise, numbers with ``atol=1e-6``).
    """
    problems = []
    for key, want in expected.items():
        if key not in contract:
            problems.append(f'{key}: missing in model (expected {want})')
            continue
        got = contract[key]
        if not _same(got, want):
            problems.append(f'{key}: model has {got}, expected {want}')
    return problems


class OnnxActor:
    """An exported actor run by onnxruntime (CPU).

    Args:
        path: ONNX file.
        expected: contract fields the caller relies on (see :func:`expected_contract`);
            ``None`` skips the check.
        intra_op_threads: onnxruntime intra-op threads (>= 1).

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelContractError: metadata missing or differing from ``expected`` (every mismatching
            field is named), or the graph's inputs/outputs are not ``image``/``proprio`` ->
            ``action`` (and optionally ``discrete_prob``).

    Attributes:
        has_discrete_prob: the graph also outputs ``discrete_prob`` float32 (N, 3), the
            actor's Bernoulli probabilities of ``open, close, terminate`` (exports since
            session 12; :meth:`act_with_prob`).
    """

    def __init__(self, path, expected=None, intra_op_threads=1):
        """Load and check the model; see the class docstring."""
        import onnxruntime as ort
        self.path = str(_check_file(path))
        self.contract = read_contract(self.path)
        if expected is not None:
            problems = check_contract(self.contract, expected)
            if problems:
                raise ModelContractError(self.path, problems)
        if int(intra_op_threads) < 1:
            raise ValueError(f'intra_op_threads must be >= 1, got {intra_op_threads}')
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self.path, sess_options=opts,
                                             providers=['CPUExecutionProvider'])
        inputs = sorted(i.name for i in self._session.get_inputs())
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != ['image', 'proprio'] or outputs not in (['action'],
                                                             ['action', 'discrete_prob']):
            raise ModelContractError(self.path, [
                f'graph io: model has inputs {inputs} outputs {outputs}, expected inputs '
                f"['image', 'proprio'] and outputs ['action'] or ['action', 'discrete_prob']"])
        self.has_discrete_prob = outputs == ['action', 'discrete_prob']
        size = self.contract.get('image_size', [None, None])
        self.image_hw = (int(size[0]), int(size[1])) if None not in size else None

    def act(self, image, proprio):
        """Return the action for one observation or a batch.

        Args:
            image: uint8 (H, W, 3) or (N, H, W, 3) RGB, H, W = the contract's ``image_size``.
            proprio: float32 (6,) or (N, 6), ``spec.PROPRIO_NAMES``.

        Returns:
            float32 (7,) for a single observation, (N, 7) for a batch.

        Raises:
            ValueError: bad dtype/shape, batch sizes differ, or the model output has
                non-finite entries.
        """
        return self._run(image, proprio, False)[0]

    def act_with_prob(self, image, proprio):
        """Return ``(action, discrete_prob)``: :meth:`act`'s action and, from a graph that has
        it (``has_discrete_prob``), the probabilities float32 (3,) or (N, 3) of ``open,
        close, terminate`` (None otherwise), from one run.

        Raises:
            ValueError: as :meth:`act`; also for non-finite probabilities.
        """
        return self._run(image, proprio, self.has_discrete_prob)

    def _run(self, image, proprio, with_prob):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f'image must be uint8, got {image.dtype}')
        single = image.ndim == 3
        if single:
            image = image[None]
        if image.ndim != 4 or image.shape[3] != 3:
            raise ValueError(f'image must be (H, W, 3) or (N, H, W, 3), got {image.shape}')
        if self.image_hw is not None and tuple(image.shape[1:3]) != self.image_hw:
            raise ValueError(f'image is {image.shape[1]}x{image.shape[2]}, model expects '
                             f'{self.image_hw[0]}x{self.image_hw[1]}')
        proprio = np.asarray(proprio, dtype=np.float32)
        if proprio.ndim == 1:
            proprio = proprio[None]
        if proprio.shape != (image.shape[0], spec.PROPRIO_DIM):
            raise ValueError(f'proprio must be ({spec.PROPRIO_DIM},) or (N, '
                             f'{spec.PROPRIO_DIM}) matching {image.shape[0]} images, '
                             f'got {proprio.shape}')
        names = ['action', 'discrete_prob'] if with_prob else ['action']
        outs = self._session.run(names, {'image': np.ascontiguousarray(image),
                                         'proprio': np.ascontiguousarray(proprio)})
        out = np.asarray(outs[0], dtype=np.float32)
        if not np.all(np.isfinite(out)):
            raise ValueError(f'model {self.path} produced non-finite actions')
        prob = None
        if with_prob:
            prob = np.asarray(outs[1], dtype=np.float32)
            if not np.all(np.isfinite(prob)):
                raise ValueError(f'model {self.path} produced non-finite discrete_prob')
            prob = prob[0] if single else prob
        return (out[0] if single else out), prob
