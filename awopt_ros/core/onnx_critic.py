"""Run an exported QT-Opt-style critic (encoder + Q head ONNX pair) with onnxruntime.

numpy + onnxruntime only (no torch, no rclpy). The pair is written by
``awopt_ros.learning.critic.export_critic``:

* encoder: ``image`` uint8 (N, H, W, 3) RGB -> ``features`` float32 (N, F, h, w);
* head: ``features`` (N, F, h, w), ``proprio`` float32 (N, 6), ``action`` float32 (N, 7)
  (m, m, m, rad, then 0/1) -> ``q`` float32 (N,), the success probability in [0, 1].

Both carry an ``awopt_contract`` with ``role`` ('critic_encoder' / 'critic_head'),
``feature_shape`` [F, h, w] and ``pair_id`` (weights hash). The split follows QT-Opt
(Kalashnikov et al. 2018) as used by AW-Opt (Lu et al. 2021): CEM encodes the image once per
state and scores all candidate actions of an iteration with ONE head run of B*K rows
(:meth:`OnnxCritic.score`, :meth:`OnnxCritic.cem_action`).
"""
import math
import threading

import numpy as np

from awopt_ros.core import ort_session, spec
from awopt_ros.core.onnx_policy import (ORT_FLOAT, ORT_UINT8, ModelContractError,
                                        ModelFileError, ModelRunError, _check_file,
                                        check_contract, check_graph_io, read_contract,
                                        short_error)

ROLE_ENCODER = 'critic_encoder'
ROLE_HEAD = 'critic_head'
#: Fields that the encoder and head contracts of one pair must agree on.
PAIR_FIELDS = ('image_size', 'crop_xywh', 'proprio_names', 'action_names', 'action_low',
               'action_high', 'feature_shape', 'pair_id')


def _session(path, threads):
    """Return the onnxruntime session of ``path``; ModelFileError if it cannot load it."""
    try:
        return ort_session.session(path, threads)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors
        raise ModelFileError(path, short_error(exc), 'onnxruntime cannot load it') from exc


class OnnxCritic:
    """An exported critic pair run by onnxruntime (CPU): Q(s, a) = head(encoder(image), ...).

    Args:
        encoder_path: encoder ONNX file (role 'critic_encoder').
        head_path: head ONNX file (role 'critic_head') from the same export.
        expected: contract fields the caller relies on (``onnx_policy.expected_contract``),
            checked against BOTH files; ``None`` skips that check (roles, pairing and graph
            inputs/outputs are always checked).
        intra_op_threads: onnxruntime intra-op threads per session (>= 1).

    Attributes:
        feature_shape: (F, h, w) per-sample feature shape (F feature channels).
        image_hw: (H, W) input image size (px).
        stats: dict of counters ``encoder_runs``, ``encoder_rows``, ``head_runs``,
            ``head_rows`` (session runs and batch rows fed), for profiling and tests.

    Raises:
        FileNotFoundError: a file is missing.
        ModelFileError: a file is not a readable ONNX model, or onnxruntime cannot load it.
        ModelContractError: metadata missing or differing from ``expected`` (every mismatch
            line names the file role and the field), wrong ``role``, encoder and head
            disagreeing (``feature_shape``, ``pair_id``, ``image_size``, ...), graph
            inputs/outputs other than ``image -> features`` and
            ``features, proprio, action -> q``, their types or shapes differing from the
            contract (uint8 (N, H, W, 3) -> float32 (N, F, h, w); float32 (N, F, h, w),
            (N, 6), (N, 7) -> (N,), N dynamic), or a graph failing a warm-up run on zero
            inputs (encoder batch 1 and 2, head 2 rows).
        ValueError: ``intra_op_threads`` < 1.
    """

    def __init__(self, encoder_path, head_path, expected=None, intra_op_threads=1):
        """Load and check both graphs; see the class docstring."""
        self.encoder_path = str(_check_file(encoder_path))
        self.head_path = str(_check_file(head_path))
        label = f'{self.encoder_path} + {self.head_path}'
        self.encoder_contract = read_contract(self.encoder_path)
        self.head_contract = read_contract(self.head_path)
        problems = []
        for name, contract, role in (('encoder', self.encoder_contract, ROLE_ENCODER),
                                     ('head', self.head_contract, ROLE_HEAD)):
            if contract.get('role') != role:
                problems.append(f"{name} role: model has {contract.get('role')!r}, "
                                f'expected {role!r}')
            if expected is not None:
                problems += [f'{name} {line}' for line in check_contract(contract, expected)]
        for key in PAIR_FIELDS:
            enc, head = self.encoder_contract.get(key), self.head_contract.get(key)
            if enc is None or head is None:
                if key in ('feature_shape', 'image_size'):
                    problems.append(f'{key}: missing in encoder or head contract')
            elif check_contract({key: head}, {key: enc}):
                problems.append(f'{key}: encoder has {enc}, head has {head} (not one pair)')
        if problems:
            raise ModelContractError(label, problems)
        if int(intra_op_threads) < 1:
            raise ValueError(f'intra_op_threads must be >= 1, got {intra_op_threads}')

        self.encoder_session = _session(self.encoder_path, intra_op_threads)
        self.head_session = _session(self.head_path, intra_op_threads)
        self._check_io(label)
        self.feature_shape = tuple(int(v) for v in self.encoder_contract['feature_shape'])
        size = self.encoder_contract['image_size']
        self.image_hw = (int(size[0]), int(size[1]))
        self.stats = {'encoder_runs': 0, 'encoder_rows': 0, 'head_runs': 0, 'head_rows': 0}
        self._bindings = {}     # CEM rows -> (encoder binding, head binding, numpy buffers)
        self._cem_lock = threading.Lock()   # the bound buffers serve one cem_action at a time
        self._check_shapes()

    def _check_io(self, label):
        """Refuse graphs whose input/output names are not the contract's (ModelContractError
        naming both files); their types and shapes are checked by :meth:`_check_shapes`."""
        enc_in = [i.name for i in self.encoder_session.get_inputs()]
        enc_out = [o.name for o in self.encoder_session.get_outputs()]
        head_in = sorted(i.name for i in self.head_session.get_inputs())
        head_out = [o.name for o in self.head_session.get_outputs()]
        problems = []
        if enc_in != ['image'] or enc_out != ['features']:
            problems.append(f"encoder graph io: inputs {enc_in} outputs {enc_out}, expected "
                            f"['image'] -> ['features']")
        if head_in != ['action', 'features', 'proprio'] or head_out != ['q']:
            problems.append(f"head graph io: inputs {head_in} outputs {head_out}, expected "
                            f"['action', 'features', 'proprio'] -> ['q']")
        if problems:
            raise ModelContractError(label, problems)

    def _check_shapes(self):
        """Check both graphs' io types/shapes against the contract, then run them once on
        zero inputs; ModelContractError names the file and what differs."""
        (h, w), feat = self.image_hw, self.feature_shape
        for path, session, inputs, outputs in (
                (self.encoder_path, self.encoder_session,
                 {'image': (ORT_UINT8, (None, h, w, 3))},
                 {'features': (ORT_FLOAT, (None,) + feat)}),
                (self.head_path, self.head_session,
                 {'features': (ORT_FLOAT, (None,) + feat),
                  'proprio': (ORT_FLOAT, (None, spec.PROPRIO_DIM)),
                  'action': (ORT_FLOAT, (None, spec.ACTION_DIM))},
                 {'q': (ORT_FLOAT, (None,))})):
            problems = check_graph_io(session, inputs, outputs)
            if problems:
                raise ModelContractError(path, problems)
        for n in (1, 2):
            try:
                features = self.encode(np.zeros((n, h, w, 3), np.uint8))
            except (ModelRunError, ValueError) as exc:
                raise ModelContractError(self.encoder_path, [
                    f'graph does not run on a contract-shaped input (image uint8 '
                    f'[{n}, {h}, {w}, 3]): {exc}']) from exc
            if features.shape != (n,) + feat:
                raise ModelContractError(self.encoder_path, [
                    f'graph output features is {list(features.shape)} for a batch of {n}, '
                    f'contract needs {[n, *feat]}'])
        try:
            q = self.head_session.run(['q'], {
                'features': np.zeros((2,) + feat, np.float32),
                'proprio': np.zeros((2, spec.PROPRIO_DIM), np.float32),
                'action': np.zeros((2, spec.ACTION_DIM), np.float32)})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's run errors
            raise ModelContractError(self.head_path, [
                f'graph does not run on contract-shaped inputs (2 rows): '
                f'{short_error(exc)}']) from exc
        if np.shape(q) != (2,):
            raise ModelContractError(self.head_path, [
                f'graph output q is {list(np.shape(q))} for 2 rows, contract needs [2]'])
        self.stats = dict.fromkeys(self.stats, 0)   # the warm-up runs are not counted

    # -- validation helpers -------------------------------------------------------------------

    def _features(self, features, rows=None):
        f = np.asarray(features)
        if f.dtype != np.float32:
            raise ValueError(f'features must be float32, got {f.dtype}')
        if f.ndim != 4 or tuple(f.shape[1:]) != self.feature_shape:
            raise ValueError(f'features must be (N, {", ".join(map(str, self.feature_shape))})'
                             f', got {f.shape}')
        if rows is not None and f.shape[0] != rows:
            raise ValueError(f'features has {f.shape[0]} rows, expected {rows}')
        return np.ascontiguousarray(f)

    @staticmethod
    def _rows(name, value, rows, dim):
        a = np.asarray(value)
        if a.dtype.kind != 'f':
            raise ValueError(f'{name} must be a float array, got {a.dtype}')
        a = a.astype(np.float32, copy=False)
        if a.shape != (rows, dim):
            raise ValueError(f'{name} must have shape ({rows}, {dim}), got {a.shape}')
        if not math.isfinite(np.add.reduce(a, axis=None, dtype=np.float64)):  # NaN/inf sum
            raise ValueError(f'{name} has {int(np.sum(~np.isfinite(a)))} non-finite entries')
        return np.ascontiguousarray(a)

    def _check_images(self, image):
        """Return ``image`` as a uint8 array (N, H, W, 3) at ``image_hw``, else ValueError."""
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f'image must be uint8, got {image.dtype}')
        if image.ndim != 4 or image.shape[3] != 3:
            raise ValueError(f'image must be (N, H, W, 3), got {image.shape}')
        if tuple(image.shape[1:3]) != self.image_hw:
            raise ValueError(f'image is {image.shape[1]}x{image.shape[2]}, critic expects '
                             f'{self.image_hw[0]}x{self.image_hw[1]}')
        return image

    # -- inference ----------------------------------------------------------------------------

    def encode(self, image):
        """Return float32 features (N, F, h, w) for uint8 RGB images (N, H, W, 3).

        Raises:
            ValueError: not uint8, not 4-D with 3 channels, or H, W other than the contract's
                ``image_size``.
        """
        image = self._check_images(image)
        try:
            out = self.encoder_session.run(['features'],
                                           {'image': np.ascontiguousarray(image)})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime errors are not RuntimeErrors
            raise ModelRunError(f'critic encoder {self.encoder_path} failed in onnxruntime: '
                                f'{short_error(exc)}') from exc
        self.stats['encoder_runs'] += 1
        self.stats['encoder_rows'] += image.shape[0]
        return np.asarray(out, dtype=np.float32)

    def q(self, features, proprio, actions):
        """Return Q float32 (N,) in [0, 1] (one head run).

        Args:
            features: float32 (N, F, h, w) from :meth:`encode`.
            proprio: float (N, 6), ``spec.PROPRIO_NAMES``.
            actions: float (N, 7), ``spec.ACTION_NAMES`` in physical units (m, rad, 0/1).

        Raises:
            ValueError: wrong dtype/shape or non-finite inputs, or non-finite output.
        """
        f = self._features(features)
        n = f.shape[0]
        pro = self._rows('proprio', proprio, n, spec.PROPRIO_DIM)
        act = self._rows('actions', actions, n, spec.ACTION_DIM)
        return self._run_head(f, pro, act)

    def _run_head(self, features, proprio, actions):
        """One head run on checked float32 inputs (N, F, h, w), (N, 6), (N, 7) -> q (N,)."""
        n = features.shape[0]
        try:
            out = self.head_session.run(['q'], {'features': features, 'proprio': proprio,
                                                'action': actions})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime errors are not RuntimeErrors
            raise ModelRunError(f'critic head {self.head_path} failed in onnxruntime: '
                                f'{short_error(exc)}') from exc
        self.stats['head_runs'] += 1
        self.stats['head_rows'] += n
        out = np.asarray(out, dtype=np.float32).reshape(n)
        if not np.isfinite(out).all():
            raise ValueError(f'critic head {self.head_path} produced non-finite q')
        return out

    def score(self, features, proprio, candidates):
        """Return Q float32 (B, K) for K candidate actions per state, ONE head run of B*K rows.

        Args:
            features: float32 (B, F, h, w), encoded once per state.
            proprio: float (B, 6).
            candidates: float (B, K, 7) actions in physical units (m, rad, 0/1).

        Raises:
            ValueError: wrong dtype/shape or non-finite inputs.
        """
        c = np.asarray(candidates)
        if c.ndim != 3 or c.shape[2] != spec.ACTION_DIM:
            raise ValueError(f'candidates must have shape (B, K, {spec.ACTION_DIM}), '
                             f'got {c.shape}')
        b, k = c.shape[0], c.shape[1]
        f = self._features(features, rows=b)
        pro = self._rows('proprio', proprio, b, spec.PROPRIO_DIM)
        act = self._rows('candidates', c.reshape(b * k, spec.ACTION_DIM), b * k,
                         spec.ACTION_DIM)
        return self._run_head(np.repeat(f, k, axis=0), np.repeat(pro, k, axis=0),
                              act).reshape(b, k)

    def cem_action(self, image, proprio, cem, extra_candidates=None, init_mean=None):
        """Return the CEM-maximised action of one state: ``(action float32 (7,), q float)``.

        The image is encoded once; each CEM iteration scores its K + E candidates with one
        head run of K + E rows (QT-Opt's CEM policy; AW-Opt passes the actor's action as an
        extra candidate). The features and proprio are tiled to K + E rows once per call.

        Args:
            image: uint8 (H, W, 3) RGB at the contract's ``image_size``.
            proprio: float (6,).
            cem: a ``core.cem.CEM`` (its config sets iterations/samples/elites).
            extra_candidates: optional float (7,), (E, 7) or (1, E, 7) fixed candidates
                (physical units), scored in every iteration.
            init_mean: optional (7,) initial CEM mean (continuous, physical units) and
                discrete probabilities.

        Returns:
            tuple: action float32 (7,) inside the CEM bounds, and its Q (float in [0, 1]).

        Raises:
            ValueError: bad shapes/dtypes (see :meth:`encode`, :meth:`score`, ``CEM``).
            ModelRunError: onnxruntime failed running a graph (message names the file).
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != self.image_hw + (3,):
            if image.ndim != 3:
                raise ValueError(f'image must be one (H, W, 3) frame, got {image.shape}')
            self._check_images(image[None])              # raises, naming what is wrong
        pro = np.asarray(proprio)
        if pro.shape != (spec.PROPRIO_DIM,):
            raise ValueError(f'proprio must have shape ({spec.PROPRIO_DIM},), got {pro.shape}')
        if pro.dtype.kind != 'f' or not math.isfinite(pro.sum(dtype=np.float64)):
            self._rows('proprio', pro[None], 1, spec.PROPRIO_DIM)   # raises with the reason
        extra = None
        if extra_candidates is not None:
            extra = np.asarray(extra_candidates, dtype=np.float32)
            if extra.ndim == 1:
                extra = extra[None, None]
            elif extra.ndim == 2:
                extra = extra[None]
            if extra.ndim != 3 or extra.shape[0] != 1 or extra.shape[2] != spec.ACTION_DIM:
                raise ValueError(f'extra_candidates must be (7,), (E, 7) or (1, E, 7), got '
                                 f'{np.asarray(extra_candidates).shape}')
        mean = None if init_mean is None else np.asarray(init_mean, dtype=np.float64).reshape(
            1, -1)
        rows = cem.config.samples + (0 if extra is None else extra.shape[1])
        with self._cem_lock:
            # The encoder and head run on buffers bound to their sessions (onnxruntime
            # IOBinding: no input or output conversion per run). Every iteration feeds the
            # same K + E rows: the features and proprio are tiled once per call; per
            # iteration only the candidates are copied in. They come from ``cem`` (float32,
            # finite, inside the bounds) and ``cem.maximise`` rejects non-finite scores, so
            # the per-row input checks of :meth:`score` are not repeated.
            try:
                encoder, head, buf = self._cem_bindings(rows)
                np.copyto(buf['image'][0], image)
                self.encoder_session.run_with_iobinding(encoder)
            except Exception as exc:  # noqa: BLE001 - onnxruntime errors
                raise ModelRunError(f'critic encoder {self.encoder_path} failed in '
                                    f'onnxruntime: {short_error(exc)}') from exc
            self.stats['encoder_runs'] += 1
            self.stats['encoder_rows'] += 1
            buf['features'][...] = buf['features1']                           # (1, F, h, w)
            buf['proprio'][...] = pro
            action, q_out = buf['action'], buf['q']
            run, stats = self.head_session.run_with_iobinding, self.stats

            def score_fn(candidates):
                np.copyto(action, candidates.reshape(rows, spec.ACTION_DIM))   # (K+E, 7)
                try:
                    run(head)
                except Exception as exc:  # noqa: BLE001 - onnxruntime errors
                    raise ModelRunError(f'critic head {self.head_path} failed in '
                                        f'onnxruntime: {short_error(exc)}') from exc
                stats['head_runs'] += 1
                stats['head_rows'] += rows
                return q_out.reshape(1, rows)

            result = cem.maximise(score_fn, 1, extra_candidates=extra, init_mean=mean)
        return result.actions[0].astype(np.float32), float(result.scores[0])

    def _cem_bindings(self, rows):
        """Return ``(encoder, head, buffers)``: IOBindings for CEM over ``rows`` candidates.

        ``encoder`` binds ``image`` uint8 (1, H, W, 3) -> ``features1`` float32
        (1, F, h, w); ``head`` binds ``features`` (rows, F, h, w), ``proprio`` (rows, 6),
        ``action`` (rows, 7) -> ``q`` (rows,), all float32. The buffers stay bound for the
        sessions' life; callers fill them in place and run ``run_with_iobinding`` (under
        ``_cem_lock``).
        """
        cached = self._bindings.get(rows)
        if cached is None:
            head, buf = _bind(self.head_session, {'features': (rows,) + self.feature_shape,
                                                  'proprio': (rows, spec.PROPRIO_DIM),
                                                  'action': (rows, spec.ACTION_DIM)},
                              {'q': (rows,)})
            encoder, enc_buf = _bind(self.encoder_session,
                                     {'image': (1,) + self.image_hw + (3,)},
                                     {'features': (1,) + self.feature_shape},
                                     dtypes={'image': np.uint8})
            buf.update(image=enc_buf['image'], features1=enc_buf['features'])
            cached = self._bindings[rows] = (encoder, head, buf)
        return cached


def _bind(session, inputs, outputs, dtypes=None):
    """Bind zeroed numpy buffers (float32 unless ``dtypes`` names another) to ``session``.

    Args:
        session: onnxruntime InferenceSession (CPU).
        inputs, outputs: dict name -> shape of the graph inputs / outputs to bind.
        dtypes: optional dict name -> numpy dtype.

    Returns:
        tuple: (the IOBinding, dict name -> numpy buffer); the buffers must outlive the
        binding (keep them together).
    """
    dtypes = dtypes or {}
    buffers, binding = {}, session.io_binding()
    for names, bind in ((inputs, binding.bind_input), (outputs, binding.bind_output)):
        for name, shape in names.items():
            dtype = dtypes.get(name, np.float32)
            buf = buffers[name] = np.zeros(shape, dtype=dtype)
            bind(name, 'cpu', 0, dtype, list(shape), buf.ctypes.data)
    return binding, buffers
