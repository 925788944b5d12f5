"""Load an exported actor (ONNX) and run it with onnxruntime, checking its contract first.

The model contract (docs/INTERFACES.md "Model contract"): inputs ``image`` uint8 (N, H, W, 3)
RGB and ``proprio`` float32 (N, 6); output ``action`` float32 (N, 7) with continuous parts
within bounds and discrete parts 0/1. The ONNX metadata key ``awopt_contract`` holds a JSON
object describing what the model was trained on; the loader compares it with what the
caller will feed it and refuses a mismatch.

State actors (tasks with no image, e.g. insertion's residual; :class:`OnnxStateActor`): input
``observation`` float32 (N, D) raw, output ``action`` float32 (N, A); their contract names the
``task`` (``core.task``) and its ``observation_names``, ``action_names``, bounds and units.

Model faults are refused with one-line errors that name the file, never a traceback from
protobuf or onnxruntime:

* a file that is not a readable ONNX model (truncated, random bytes, no graph, or one
  onnxruntime cannot load) raises :class:`ModelFileError`;
* a graph whose real inputs/outputs differ from what the contract promises (names, element
  types, ranks, fixed dimensions, a batch dimension that is not dynamic) or that does not run
  on a contract-shaped input (a warm-up run at batch 1 and 2 at load) raises
  :class:`ModelContractError`;
* an onnxruntime error while acting raises :class:`ModelRunError` (a ``RuntimeError``).

onnxruntime sessions come from :mod:`awopt_ros.core.ort_session` (telemetry off).
"""
import json
from pathlib import Path

import numpy as np

from awopt_ros.core import ort_session, spec

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


class ModelFileError(ModelContractError):
    """The file at ``path`` is not a readable ONNX model (truncated, corrupt, not ONNX, or
    onnxruntime cannot load it). A :class:`ModelContractError`, so callers that refuse a
    mismatching model refuse this one too.

    Attributes:
        path: the file (str).
        reason: short reason (one line).
    """

    def __init__(self, path, reason, what='truncated or corrupt'):
        """Build the error for ``path``: ``what`` went wrong, ``reason`` says the detail."""
        self.path = str(path)
        self.reason = str(reason)
        self.mismatches = [self.reason]
        ValueError.__init__(self, f'{self.path} is not a readable ONNX model ({what}): '
                                  f'{self.reason}')


class ModelRunError(RuntimeError):
    """onnxruntime failed while running a loaded model; the message names the file."""


def short_error(exc, limit=300):
    """Return ``'TypeName: first line of the message'`` of ``exc``, at most ``limit`` chars."""
    lines = str(exc).strip().splitlines()
    text = f'{type(exc).__name__}: {lines[0] if lines else ""}'.rstrip(': ')
    return text if len(text) <= limit else text[:limit - 3] + '...'


#: onnxruntime type strings of the element types in model graphs.
ORT_UINT8, ORT_FLOAT = 'tensor(uint8)', 'tensor(float)'


def _dims_text(dims):
    return '[' + ', '.join('N' if d is None else str(d) for d in dims) + ']'


def check_graph_io(session, inputs, outputs):
    """Return mismatch lines between a session's graph inputs/outputs and the expected ones.

    Args:
        session: onnxruntime ``InferenceSession``.
        inputs, outputs: dict name -> ``(type, dims)``: onnxruntime type string (e.g.
            :data:`ORT_FLOAT`) and a tuple of dims, the first ``None`` (a dynamic batch,
            required) and the others ints (a graph dim that is symbolic is accepted: the
            warm-up run checks it). Names missing from the graph are not reported here.

    Returns:
        list of str, one line per mismatching input or output (empty if none).
    """
    problems = []
    for kind, nodes, want in (('input', session.get_inputs(), inputs),
                              ('output', session.get_outputs(), outputs)):
        got = {node.name: node for node in nodes}
        for name, (typ, dims) in want.items():
            node = got.get(name)
            if node is None:
                continue
            shape = [d if isinstance(d, int) else None for d in (node.shape or [])]
            bad = []
            if node.type != typ:
                bad.append(f'type {node.type}, contract needs {typ}')
            if node.shape is not None and len(shape) != len(dims):
                bad.append(f'rank {len(shape)}, contract needs {len(dims)}')
            elif node.shape is not None:
                if shape and shape[0] is not None:
                    bad.append(f'batch dimension fixed at {shape[0]}, contract needs a '
                               'dynamic batch (N)')
                bad += [f'dimension {i} is {g}, contract needs {w}'
                        for i, (g, w) in enumerate(zip(shape[1:], dims[1:]), start=1)
                        if g is not None and w is not None and g != w]
            if bad:
                problems.append(f'graph {kind} {name!r} is {node.type} '
                                f'{_dims_text(shape)}, contract needs {typ} '
                                f'{_dims_text(dims)} ({"; ".join(bad)})')
    return problems


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


def _check_file(path, train_command='awopt train'):
    """Return ``path`` as a Path; FileNotFoundError naming ``train_command`` (the command that
    makes such a model, e.g. 'awopt train-classifier' for a success classifier) if missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'ONNX model not found: {p} (train one with `{train_command}` or '
                                f'set the model_path parameter)')
    return p


def read_metadata(path):
    """Return the ONNX model's metadata as a dict of str (without loading weights into a run).

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: the file is not a readable ONNX model (message names the file).
    """
    import onnx
    p = _check_file(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except OSError as exc:
        raise ModelFileError(p, short_error(exc), 'cannot read the file') from exc
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and kin: not ONNX
        raise ModelFileError(p, short_error(exc)) from exc
    if not model.HasField('graph') or not model.graph.node:
        raise ModelFileError(p, 'the file parses but holds no ONNX graph')
    return {m.key: m.value for m in model.metadata_props}


def read_contract(path):
    """Return the ``awopt_contract`` metadata of the ONNX model at ``path`` as a dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: the file is not a readable ONNX model.
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


def require_contract(path, contract, keys, expected=None):
    """Raise :class:`ModelContractError` for model ``path`` when ``contract`` lacks one of
    ``keys`` or (with ``expected``) differs from it (:func:`check_contract`)."""
    missing = [k for k in keys if k not in contract]
    if missing:
        raise ModelContractError(path, [f'contract keys missing: {missing}'])
    if expected is not None:
        problems = check_contract(contract, expected)
        if problems:
            raise ModelContractError(path, problems)


class OnnxActor:
    """An exported actor run by onnxruntime (CPU).

    Args:
        path: ONNX file.
        expected: contract fields the caller relies on (see :func:`expected_contract`);
            ``None`` skips the check.
        intra_op_threads: onnxruntime intra-op threads (>= 1).

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: the file is not a readable ONNX model, or onnxruntime cannot load it.
        ModelContractError: metadata missing or differing from ``expected`` (every mismatching
            field is named), the graph's inputs/outputs are not ``image``/``proprio`` ->
            ``action`` (and optionally ``discrete_prob``), their types or shapes differ from
            the contract (uint8 (N, H, W, 3), float32 (N, 6) -> float32 (N, 7) and (N, 3),
            N dynamic), or the graph fails a warm-up run on zero inputs of batch 1 and 2.

    Attributes:
        has_discrete_prob: the graph also outputs ``discrete_prob`` float32 (N, 3), the
            actor's Bernoulli probabilities of ``open, close, terminate`` (exports since
            2026-12-02; :meth:`act_with_prob`).
    """

    def __init__(self, path, expected=None, intra_op_threads=1):
        """Load and check the model; see the class docstring."""
        self.path = str(_check_file(path))
        self.contract = read_contract(self.path)
        if expected is not None:
            problems = check_contract(self.contract, expected)
            if problems:
                raise ModelContractError(self.path, problems)
        if int(intra_op_threads) < 1:
            raise ValueError(f'intra_op_threads must be >= 1, got {intra_op_threads}')
        try:
            self._session = ort_session.session(self.path, intra_op_threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors
            raise ModelFileError(self.path, short_error(exc),
                                 'onnxruntime cannot load it') from exc
        inputs = sorted(i.name for i in self._session.get_inputs())
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != ['image', 'proprio'] or outputs not in (['action'],
                                                             ['action', 'discrete_prob']):
            raise ModelContractError(self.path, [
                f'graph io: model has inputs {inputs} outputs {outputs}, expected inputs '
                f"['image', 'proprio'] and outputs ['action'] or ['action', 'discrete_prob']"])
        self.has_discrete_prob = outputs == ['action', 'discrete_prob']
        size = self.contract.get('image_size', [None, None])
        try:
            self.image_hw = (int(size[0]), int(size[1]))
        except (TypeError, ValueError, IndexError):
            self.image_hw = None
        self._check_graph()

    def _check_graph(self):
        """Check the graph's io types/shapes against the contract, then run it once at batch
        1 and 2 on zero inputs; ModelContractError names what differs."""
        h, w = self.image_hw if self.image_hw is not None else (None, None)
        outputs = {'action': (ORT_FLOAT, (None, spec.ACTION_DIM))}
        if self.has_discrete_prob:
            outputs['discrete_prob'] = (ORT_FLOAT, (None, 3))   # open, close, terminate
        problems = check_graph_io(
            self._session, {'image': (ORT_UINT8, (None, h, w, 3)),
                            'proprio': (ORT_FLOAT, (None, spec.PROPRIO_DIM))}, outputs)
        if problems:
            raise ModelContractError(self.path, problems)
        if self.image_hw is None:
            return
        for n in (1, 2):
            feed = {'image': np.zeros((n, h, w, 3), np.uint8),
                    'proprio': np.zeros((n, spec.PROPRIO_DIM), np.float32)}
            try:
                outs = self._session.run(list(outputs), feed)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's run errors
                raise ModelContractError(self.path, [
                    f'graph does not run on contract-shaped inputs (image uint8 '
                    f'[{n}, {h}, {w}, 3], proprio float32 [{n}, {spec.PROPRIO_DIM}]): '
                    f'{short_error(exc)}']) from exc
            for name, out in zip(outputs, outs):
                want = (n, outputs[name][1][1])
                out = np.asarray(out)
                if out.shape != want or out.dtype != np.float32:
                    raise ModelContractError(self.path, [
                        f'graph output {name!r} is {out.dtype} {list(out.shape)} for a batch '
                        f'of {n}, contract needs float32 {list(want)}'])

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
            ModelRunError: onnxruntime failed running the graph (message names the file).
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
        try:
            outs = self._session.run(names, {'image': np.ascontiguousarray(image),
                                             'proprio': np.ascontiguousarray(proprio)})
        except Exception as exc:  # noqa: BLE001 - onnxruntime errors are not RuntimeErrors
            raise ModelRunError(f'model {self.path} failed in onnxruntime: '
                                f'{short_error(exc)}') from exc
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


# -- state actors (tasks without an image, e.g. insertion's residual) ----------------------

#: Graph input and output names of a state actor (contract 23 section 4).
STATE_INPUT, STATE_OUTPUT = 'observation', 'action'
#: Contract keys every state actor carries.
STATE_CONTRACT_KEYS = ('task', 'observation_names', 'action_names', 'action_low',
                       'action_high', 'action_units', 'algorithm', 'dataset', 'version')
#: Extra contract keys per task: the residual's bound (m per step) and the P gains it was
#: trained with.
TASK_CONTRACT_KEYS = {'insertion': ('residual_alpha_m', 'kp')}


def expected_state_contract(task):
    """Return the contract fields a state actor for ``task`` must have.

    Args:
        task: a ``core.task.Task`` or its name.

    Returns:
        dict with ``task``, ``observation_names``, ``action_names``, ``action_low``,
        ``action_high``, ``action_units`` (lists), compared by :func:`check_contract`.

    Raises:
        ValueError: unknown task name.
    """
    from awopt_ros.core.task import get_task
    t = get_task(task)
    return {
        'task': t.name,
        'observation_names': list(t.state_names),
        'action_names': list(t.action_names),
        'action_low': [float(v) for v in t.action_low],
        'action_high': [float(v) for v in t.action_high],
        'action_units': list(t.action_units),
    }


class OnnxStateActor:
    """An exported state actor (no image) run by onnxruntime (CPU).

    The graph takes ``observation`` float32 (N, D) raw (normalisation is inside the graph)
    and returns ``action`` float32 (N, A) within the contract's bounds, N dynamic; D and A are
    the lengths of the contract's ``observation_names`` and ``action_names``. Other graph
    outputs are ignored.

    Args:
        path: ONNX file.
        expected_task: a ``core.task.Task`` or task name whose state and action the model
            must have (:func:`expected_state_contract`), or None to accept any task.
        threads: onnxruntime intra-op threads (>= 1).

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: the file is not a readable ONNX model, or onnxruntime cannot load it.
        ModelContractError: metadata missing; an image actor's contract (``image_size`` or
            ``proprio_names``: load it with :class:`OnnxActor`); contract keys missing (each
            named); a task other
            than ``expected_task`` or names/bounds/units differing from it (every field
            named); inconsistent lengths; graph inputs/outputs other than ``observation``
            -> ``action``, or their types/shapes differing from float32 (N, D) -> (N, A);
            or a failing warm-up run on zeros at batch 1 and 2.
        ValueError: unknown ``expected_task`` name or ``threads`` < 1.

    Attributes:
        path: the file (str).
        contract: the ``awopt_contract`` dict.
        task_name: the contract's ``task``.
        observation_names, action_names: tuples of str (D and A entries).
        action_low, action_high: float32 (A,) bounds.
        observation_dim, action_dim: D and A.
    """

    def __init__(self, path, expected_task=None, threads=1):
        """Load and check the model; see the class docstring."""
        self.path = str(_check_file(path))
        expected = None if expected_task is None else expected_state_contract(expected_task)
        if int(threads) < 1:
            raise ValueError(f'threads must be >= 1, got {threads}')
        self.contract = c = read_contract(self.path)
        task_name = c.get('task')
        if 'image_size' in c or 'proprio_names' in c:
            # image actors' contracts (task 'grasp'; older files have no task key)
            raise ModelContractError(self.path, [
                f"an image actor's contract (task {task_name or 'grasp'!r}, image_size "
                f"{c.get('image_size')}), not a state actor's: load it with OnnxActor"])
        require_contract(self.path, c,
                         STATE_CONTRACT_KEYS + TASK_CONTRACT_KEYS.get(task_name, ()), expected)
        self.task_name = str(task_name)
        self.observation_names = tuple(str(v) for v in c['observation_names'])
        self.action_names = tuple(str(v) for v in c['action_names'])
        try:
            self.action_low = np.asarray(c['action_low'], dtype=np.float32).reshape(-1)
            self.action_high = np.asarray(c['action_high'], dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ModelContractError(self.path, [f'action bounds are not numbers: '
                                                 f'{short_error(exc)}']) from exc
        self.observation_dim, self.action_dim = len(self.observation_names), len(
            self.action_names)
        a = self.action_dim
        if (self.observation_dim < 1 or a < 1 or self.action_low.shape != (a,)
                or self.action_high.shape != (a,) or len(c['action_units']) != a
                or not np.all(self.action_low <= self.action_high)):
            raise ModelContractError(self.path, [
                f'contract inconsistent: {self.observation_dim} observation names, {a} action '
                f'names, {self.action_low.size} action_low, {self.action_high.size} '
                f'action_high, {len(c["action_units"])} action_units (need D >= 1, A >= 1, '
                f'A bounds and units each, low <= high)'])
        try:
            self._session = ort_session.session(self.path, threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors
            raise ModelFileError(self.path, short_error(exc),
                                 'onnxruntime cannot load it') from exc
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [STATE_INPUT] or STATE_OUTPUT not in outputs:
            raise ModelContractError(self.path, [
                f'graph io: model has inputs {inputs} outputs {outputs}, a state actor needs '
                f'the input [{STATE_INPUT!r}] and the output {STATE_OUTPUT!r}'])
        self._check_graph()

    def _check_graph(self):
        """Check io types/shapes, then run zeros at batch 1 and 2 (ModelContractError)."""
        d, a = self.observation_dim, self.action_dim
        problems = check_graph_io(self._session, {STATE_INPUT: (ORT_FLOAT, (None, d))},
                                  {STATE_OUTPUT: (ORT_FLOAT, (None, a))})
        if problems:
            raise ModelContractError(self.path, problems)
        for n in (1, 2):
            try:
                out = self._session.run([STATE_OUTPUT],
                                        {STATE_INPUT: np.zeros((n, d), np.float32)})[0]
            except Exception as exc:  # noqa: BLE001 - onnxruntime's run errors
                raise ModelContractError(self.path, [
                    f'graph does not run on a contract-shaped input (observation float32 '
                    f'[{n}, {d}]): {short_error(exc)}']) from exc
            out = np.asarray(out)
            if out.shape != (n, a) or out.dtype != np.float32:
                raise ModelContractError(self.path, [
                    f'graph output {STATE_OUTPUT!r} is {out.dtype} {list(out.shape)} for a '
                    f'batch of {n}, contract needs float32 [{n}, {a}]'])

    def act(self, observation):
        """Return the action for one observation or a batch.

        Args:
            observation: float32 (D,) or (N, D), raw, in ``observation_names`` order.

        Returns:
            float32 (A,) for one observation, (N, A) for a batch, clipped to
            ``[action_low, action_high]`` (the contract promises the bounds; the clip keeps a
            slightly overshooting graph from leaving them).

        Raises:
            ValueError: wrong shape, non-finite observation entries, or non-finite outputs.
            ModelRunError: onnxruntime failed running the graph (message names the file).
        """
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.ndim == 1
        if single:
            obs = obs[None]
        if obs.ndim != 2 or obs.shape[1] != self.observation_dim:
            raise ValueError(f'observation must be ({self.observation_dim},) or (N, '
                             f'{self.observation_dim}) {self.observation_names}, got '
                             f'{np.shape(observation)}')
        if not np.all(np.isfinite(obs)):
            raise ValueError(f'observation has non-finite entries: {obs.tolist()}')
        try:
            out = self._session.run([STATE_OUTPUT],
                                    {STATE_INPUT: np.ascontiguousarray(obs)})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime errors are not RuntimeErrors
            raise ModelRunError(f'model {self.path} failed in onnxruntime: '
                                f'{short_error(exc)}') from exc
        out = np.asarray(out, dtype=np.float32)
        if not np.all(np.isfinite(out)):
            raise ValueError(f'model {self.path} produced non-finite actions')
        out = np.clip(out, self.action_low, self.action_high)
        return out[0] if single else out
