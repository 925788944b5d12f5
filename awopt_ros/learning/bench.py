"""Learning-side benchmarks: deployed-policy latency and training throughput, same-run ratios.

:func:`run_learning_bench` returns a flat dict that ``awopt bench`` merges into
``bench/results.json``. Absolute timings on the 2-core CPU are noisy (other jobs share the
cores); the targets are RATIOS of numbers taken in the same run, with the contenders timed in
interleaved rounds (one call of each per round) so that a burst of load hits all of them alike.
Every latency is the median (p50) wall time of one call; every throughput is
``1 / p50`` of the wall time of one gradient step (replay sampling included).

Threads: ``torch.set_num_threads(2)`` (``TORCH_THREADS``) for torch eager inference and for
all training (ours and d3rlpy's; restored afterwards); onnxruntime sessions use
``intra_op_num_threads = 1`` and ``inter_op_num_threads = 1`` (``ORT_THREADS``, the policy
node's default ``intra_op_threads``). With 2 onnxruntime threads the CEM path was about 2x
SLOWER on this machine (thread wake-ups around the numpy CEM steps between the short runs).

Latency (deployed policy, random weights, one random uint8 image and proprio vector):

* ``actor_ms_p50``: ``OnnxActor.act(image, proprio)`` on one (64, 64, 3) image: the exported
  default actor (:class:`~awopt_ros.learning.networks.ActorConfig`: 4 convs of 32 channels,
  MLP 256) run by onnxruntime, input checks included.
* ``cem_ms_p50``: ``OnnxCritic.cem_action(image, proprio, cem, extra_candidates=a)`` on the
  same image: the deployed CEM fallback (QT-Opt's 2 iterations x 64 samples, 6 elites) over
  the exported default critic (:func:`critic_config`: the actor's trunk, 4 stride-2 3x3
  convs of 32 channels, then a linear 1x1 conv to a 16 x 4 x 4 feature map; its
  action-merged head uses one 1x1 conv, global max and mean pooling and an MLP of
  ``critic_hidden``),
  i.e. encoder once, then per iteration one head run on 64 samples + the actor's action
  (65 rows) and the numpy sampling/refit. The actor candidate ``a`` is computed once
  beforehand (its cost is ``actor_ms_p50``).
* ``cem_over_actor`` = ``cem_ms_p50 / actor_ms_p50`` (target <= 2; AW-Opt Table 4, 472 px on
  a GPU: 125 ms / 42 ms = 3.0).
* ``*_472``: the same with both networks built for 472 x 472 input (QT-Opt's resolution),
  same channels and layers (the actor's flatten layer grows with the image; the critic's
  reduction max-pool, kernel 7, keeps its feature map at 4 x 4).
* ``torch_actor_ms_p50``: the same actor as a torch eager module (``ActorPolicy``, the graph
  that was exported) under ``torch.no_grad()``, numpy in and out, timed in its own
  interleaved rounds against ``OnnxActor.act`` (``actor_beside_torch_ms_p50``);
  ``ort_over_torch = actor_beside_torch_ms_p50 / torch_actor_ms_p50`` (target <= 0.5).
  The deployed contenders above are timed without torch in their rounds: torch's OpenMP
  worker threads spin after each eager call and slowed the onnxruntime calls timed next to
  it by 15-45 %, which the policy node (no torch) never sees.
* ``critic_encoder_ms_p50``, ``critic_head_ms_p50`` (and ``_472``): ``OnnxCritic.encode``
  on the image and ``OnnxCritic.score`` of 65 candidate rows (input checks, tiling and one
  head run), the parts of ``cem_ms_p50``; the rest of it is the numpy CEM (sampling, elite
  refit). ``cem_action`` checks its inputs once, tiles the features once per call and runs
  both graphs on bound buffers (onnxruntime IOBinding), so its two head runs cost less than
  two ``critic_head_ms_p50``.

Training throughput (gradient steps per second at batch 64, synthetic data of the same size
for every contender: ``TRAIN_EPISODES`` episodes of ``TRAIN_STEPS_PER_EPISODE`` transitions,
64 x 64 x 3 uint8 images, half of the episodes successful):

* ``awac_steps_per_s``: ``Learner(make_config('awac'))`` at the default networks (above):
  ``sample_batches`` + ``update`` (critic step with actor Bellman targets and two target
  critics, then the advantage-weighted actor step; random-shift augmentation on).
* ``awopt_steps_per_s``: the same with ``make_config('awopt')`` (positive filtering, 50 %
  success critic batches, CEM targets with the actor candidate: 2 x 16 samples, 4 elites).
* ``d3rlpy_awac_steps_per_s``: ``d3rlpy.algos.AWACConfig`` (d3rlpy's defaults: twin critics,
  soft target updates, 1 action sample for the advantage) with ``batch_size=64``,
  ``gamma=0.9``, ``lam=0.3``, ``PixelObservationScaler`` and pixel encoders of our width:
  actor ``PixelEncoderFactory(filters=[[32, 3, 2]] * 4, feature_size=256)`` (our actor: 4
  3x3 convs of 32 channels, stride 2, MLP 256), critic
  ``PixelEncoderFactory(filters=[[32, 3, 2]] * 4, feature_size=64)`` (our critic trunk, see
  :func:`critic_config`: 4 3x3 convs of 32 channels, all stride 2; hidden 64). Not matched:
  d3rlpy's convs have no padding, no CoordConv channels, no proprio input, no augmentation,
  and its critic has no conv head after the action merge (the action joins at the dense
  layer). It runs ``update(dataset.sample_transition_batch(64))`` on an ``MDPDataset`` of the
  same images (channel-first), actions scaled to [-1, 1]. ``d3rlpy_awac_1critic_steps_per_s``
  is the same with ``n_critics=1`` (one trained critic, as ours). When d3rlpy cannot be
  imported or run, these keys are None and ``d3rlpy_unavailable_reason`` says why.

Insertion: ``insertion_steps_per_s``, in-process steps per second of the
insertion environment (``sim.insertion_env.InsertionResidualEnv``: P-controller with a zero
residual, IK through ``core.arm.arm_command``, 100 physics steps of 1 ms per step, episodes
reset as they end), over about 5 s of wall time (0.5 s quick;
``learning.insertion.steps_per_second``).

Success classifier: ``success_classifier_ms_p50`` / ``success_classifier_ms_p99``, the
wall time of ``SuccessClassifier.probability(frame)`` (``core.success_classifier``: input
checks and one onnxruntime run, 1 thread, batch 1) per frame over ``SUCCESS_FRAMES`` random
64 x 64 frames (20 quick) of the shipped ``models/grasp_success.onnx``
(:func:`measure_success_classifier`); None with ``success_classifier_unavailable_reason``
when the file is missing or cannot be loaded.

Booleans say whether each target holds: ``cem_over_actor_at_most_2``,
``cem_over_actor_472_at_most_2``, ``ort_over_torch_at_most_half``, ``awac_at_least_d3rlpy``
(None without d3rlpy). ``learning_bench_setup`` records sizes, threads and repetitions.
"""
import contextlib
import io
import logging
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from awopt_ros.core import spec

TORCH_THREADS = 2
ORT_THREADS = 1
LARGE_IMAGE = 472
CEM_OVER_ACTOR_MAX = 2.0
ORT_OVER_TORCH_MAX = 0.5
TRAIN_BATCH = 64
TRAIN_EPISODES = 50
TRAIN_STEPS_PER_EPISODE = 10
CROP_XYWH = spec.POLICY_CROP_XYWH
D3RLPY_PIP = ('pip install --no-deps d3rlpy==2.8.1 && '
              'pip install gym==0.26.2 structlog dataclasses-json scikit-learn')


@dataclass(frozen=True)
class BenchSizes:
    """Sizes and repetitions of one bench run (see :data:`FULL` and :data:`QUICK`).

    Attributes:
        image_size: default policy image side (px) for latency and training.
        large_image_size: second latency resolution (px).
        channels: conv channels of actor and critic (both networks alike).
        actor_hidden: actor MLP units; critic_hidden: critic MLP units.
        latency_rounds: interleaved timing rounds at ``image_size`` (one call each per round).
        large_latency_rounds: the same at ``large_image_size``.
        latency_warmup: untimed calls of each contender first.
        batch_size: transitions per gradient step.
        episodes, steps_per_episode: synthetic replay data (transitions = their product).
        train_rounds, train_steps_per_round: interleaved training rounds; each round times
            ``train_steps_per_round`` steps of every contender one after the other.
        train_warmup: untimed gradient steps of each contender first.
    """

    image_size: int = 64
    large_image_size: int = LARGE_IMAGE
    channels: int = 32
    actor_hidden: int = 256
    critic_hidden: int = 64
    latency_rounds: int = 300
    large_latency_rounds: int = 60
    latency_warmup: int = 10
    batch_size: int = TRAIN_BATCH
    episodes: int = TRAIN_EPISODES
    steps_per_episode: int = TRAIN_STEPS_PER_EPISODE
    train_rounds: int = 8
    train_steps_per_round: int = 8
    train_warmup: int = 3


#: Full run (``make bench``): about a minute or two on 2 cores.
FULL = BenchSizes()
#: Quick run (tests): tiny networks and a handful of repetitions; figures are not meaningful.
QUICK = BenchSizes(image_size=32, channels=4, actor_hidden=16, critic_hidden=16,
                   latency_rounds=5, large_latency_rounds=2, latency_warmup=1, batch_size=8,
                   episodes=6, steps_per_episode=4, train_rounds=2, train_steps_per_round=2,
                   train_warmup=1)


def critic_config(image_size, channels, hidden):
    """Return the bench's critic :class:`~awopt_ros.learning.critic.CriticConfig`: the
    default critic (4 stride-2 3x3 convs, the actor's trunk, then the 1x1-conv head on a
    16 x 4 x 4 feature map) with the bench's image size, channels and hidden width."""
    from awopt_ros.learning.critic import CriticConfig
    return CriticConfig(image_size=image_size, channels=channels, num_conv=4, hidden=hidden)


def _sig(value, digits=6):
    """Round ``value`` to ``digits`` significant digits (None stays None)."""
    if value is None:
        return None
    return float(f'{float(value):.{digits}g}')


def _p50_ms(times_s):
    """Median of wall times in seconds, in ms."""
    return float(np.median(np.asarray(times_s, dtype=np.float64))) * 1e3


def _say(progress, text):
    if progress:
        print(f'[learning bench] {text}', file=sys.stderr, flush=True)


def interleaved_times(calls, rounds, warmup=1, calls_per_round=1):
    """Time zero-argument callables in interleaved rounds.

    Args:
        calls: dict name -> callable.
        rounds: number of rounds; each round calls every callable ``calls_per_round`` times in
            a row, in dict order, timing each call.
        warmup: untimed calls of each callable before the first round.
        calls_per_round: timed calls of one callable per round.

    Returns:
        dict name -> list of wall times (s), ``rounds * calls_per_round`` each.
    """
    for fn in calls.values():
        for _ in range(int(warmup)):
            fn()
    times = {name: [] for name in calls}
    clock = time.perf_counter
    for _ in range(int(rounds)):
        for name, fn in calls.items():
            for _ in range(int(calls_per_round)):
                t0 = clock()
                fn()
                times[name].append(clock() - t0)
    return times


# ---------------------------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------------------------

def measure_latency(image_size, channels=32, actor_hidden=256, critic_hidden=64, rounds=100,
                    warmup=5, seed=0):
    """Latency of the deployed actor, the CEM fallback and torch eager at one resolution.

    Builds the default actor and critic (same ``channels``, 4 conv layers each) for
    ``image_size`` px with random weights, exports them to ONNX in a temporary folder and
    times, in ``rounds`` interleaved rounds on one random image: ``OnnxActor.act``,
    ``OnnxCritic.cem_action`` (2 x 64 samples, 6 elites, the actor's action as the extra
    candidate), the torch eager ``ActorPolicy`` of the same weights, one critic encoder run
    and one critic head run on 65 rows.

    Returns:
        dict of p50 wall times in ms: ``actor``, ``cem``, ``torch_actor``,
        ``critic_encoder``, ``critic_head``; and ``cem_q`` (Q of the CEM action, a sanity
        value in [0, 1]).
    """
    import torch

    from awopt_ros.core.cem import CEM, CEMConfig
    from awopt_ros.core.onnx_critic import OnnxCritic
    from awopt_ros.core.onnx_policy import OnnxActor
    from awopt_ros.learning.critic import Critic, export_critic, make_critic_contract
    from awopt_ros.learning.export import export_actor
    from awopt_ros.learning.networks import Actor, ActorConfig, ActorPolicy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        actor = Actor(ActorConfig(image_size=image_size, channels=channels, num_conv=4,
                                  hidden=actor_hidden)).eval()
        critic = Critic(critic_config(image_size, channels, critic_hidden)).eval()
    policy = ActorPolicy(actor).eval()
    with tempfile.TemporaryDirectory(prefix='awopt_bench_') as tmp:
        tmp = Path(tmp)
        export_actor(actor, tmp / 'actor.onnx', list(CROP_XYWH), check_parity=False)
        export_critic(critic, tmp / 'encoder.onnx', tmp / 'head.onnx',
                      make_critic_contract(image_size, list(CROP_XYWH)), check_parity=False)
        onnx_actor = OnnxActor(tmp / 'actor.onnx', intra_op_threads=ORT_THREADS)
        onnx_critic = OnnxCritic(tmp / 'encoder.onnx', tmp / 'head.onnx',
                                 intra_op_threads=ORT_THREADS)

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
    proprio = rng.normal(0.0, 0.3, spec.PROPRIO_DIM).astype(np.float32)
    actor_action = onnx_actor.act(image, proprio)
    cem = CEM(CEMConfig(iterations=2, samples=64, elites=6), seed=seed)
    features = onnx_critic.encode(image[None])
    candidates = np.repeat(actor_action[None, None], 65, axis=1)           # (1, 65, 7)
    timg, tpro = image[None], proprio[None]
    last_q = []

    def run_torch():
        with torch.no_grad():
            return policy(torch.from_numpy(timg), torch.from_numpy(tpro)).numpy()

    def run_cem():
        last_q.append(onnx_critic.cem_action(image, proprio, cem,
                                             extra_candidates=actor_action)[1])

    def run_actor():
        return onnx_actor.act(image, proprio)

    # Two groups of interleaved rounds. The deployed contenders (onnxruntime only, as in the
    # policy node) are timed together; torch eager is timed against the same actor in its
    # own rounds: torch's OpenMP worker threads keep spinning after each eager call, and
    # onnxruntime calls timed in the same rounds ran 15-45 % slower (encoder 0.076 vs
    # 0.056 ms, actor 0.085 vs 0.074 ms at 64 px), an artefact the policy node never sees.
    deployed = interleaved_times({
        'actor': run_actor,
        'cem': run_cem,
        'critic_encoder': lambda: onnx_critic.encode(image[None]),
        'critic_head': lambda: onnx_critic.score(features, tpro, candidates),
    }, rounds, warmup)
    eager = interleaved_times({'actor_beside_torch': run_actor, 'torch_actor': run_torch},
                              rounds, warmup)
    out = {name: _p50_ms(t) for name, t in {**deployed, **eager}.items()}
    out['cem_q'] = float(last_q[-1])
    return out


# ---------------------------------------------------------------------------------------------
# Training throughput
# ---------------------------------------------------------------------------------------------

def synthetic_episodes(episodes, steps, image_size, seed=0):
    """Return a list of synthetic episodes (dicts) of random images and in-bounds actions.

    Each dict holds ``images`` uint8 (T+1, H, W, 3), ``proprios`` float32 (T+1, 6),
    ``actions`` float32 (T, 7) (continuous parts uniform in the ``spec`` bounds, discrete
    0/1), ``rewards`` float32 (T,) (1 on the last step of every second episode, else 0).
    """
    rng = np.random.default_rng(seed)
    out = []
    for e in range(int(episodes)):
        actions = rng.uniform(spec.ACTION_LOW, spec.ACTION_HIGH,
                              (steps, spec.ACTION_DIM)).astype(np.float32)
        actions[:, spec.DISCRETE] = np.round(actions[:, spec.DISCRETE])
        rewards = np.zeros(steps, dtype=np.float32)
        rewards[-1] = float(e % 2 == 0)
        out.append({
            'images': rng.integers(0, 256, (steps + 1, image_size, image_size, 3),
                                   dtype=np.uint8),
            'proprios': rng.normal(0.0, 0.3, (steps + 1, spec.PROPRIO_DIM)).astype(np.float32),
            'actions': actions, 'rewards': rewards})
    return out


def _our_stepper(preset, episodes, sizes, seed=0):
    """Return a zero-argument callable doing one ``Learner`` gradient step (sample + update)."""
    from awopt_ros.learning.awopt import Learner, ReplayBuffer, make_config
    from awopt_ros.learning.networks import ActorConfig

    n_tr = sum(len(ep['actions']) for ep in episodes)
    buffer = ReplayBuffer(capacity=n_tr, max_episodes=len(episodes))
    for ep in episodes:
        buffer.add_episode(ep['images'], ep['proprios'], ep['actions'], ep['rewards'],
                           terminated=True)
    config = make_config(
        preset, batch_size=sizes.batch_size, seed=seed, num_threads=TORCH_THREADS,
        actor=ActorConfig(image_size=sizes.image_size, channels=sizes.channels, num_conv=4,
                          hidden=sizes.actor_hidden),
        critic=critic_config(sizes.image_size, sizes.channels, sizes.critic_hidden))
    learner = Learner(config)

    def step():
        critic_batch, actor_batch = learner.sample_batches(buffer)
        learner.update(critic_batch if critic_batch is not None else actor_batch, actor_batch)
    return step


def _import_d3rlpy():
    """Import d3rlpy quietly (gym's import notice, d3rlpy's info logs); return the module."""
    with contextlib.redirect_stderr(io.StringIO()):
        import d3rlpy
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def d3rlpy_awac_config(sizes, n_critics=2):
    """Return d3rlpy's ``AWACConfig`` matched to our network width (see the module doc); the
    critic encoder's conv strides mirror :func:`critic_config`."""
    d3rlpy = _import_d3rlpy()
    from d3rlpy.models.encoders import PixelEncoderFactory
    c = sizes.channels
    ours = critic_config(sizes.image_size, c, sizes.critic_hidden)
    critic_filters = ([[c, 3, 2]] * ours.num_strided
                      + [[c, 3, 1]] * (ours.num_conv - ours.num_strided))
    return d3rlpy.algos.AWACConfig(
        batch_size=sizes.batch_size, gamma=0.9, lam=0.3, n_critics=int(n_critics),
        actor_learning_rate=3e-4, critic_learning_rate=3e-4,
        observation_scaler=d3rlpy.preprocessing.PixelObservationScaler(),
        actor_encoder_factory=PixelEncoderFactory(filters=[[c, 3, 2]] * 4,
                                                  feature_size=sizes.actor_hidden),
        critic_encoder_factory=PixelEncoderFactory(filters=critic_filters,
                                                   feature_size=sizes.critic_hidden))


def _d3rlpy_stepper(episodes, sizes, n_critics=2, seed=0):
    """Return a zero-argument callable doing one d3rlpy AWAC gradient step (sample + update)
    on an ``MDPDataset`` of the same episodes (channel-first images)."""
    import torch
    d3rlpy = _import_d3rlpy()
    obs = np.concatenate([ep['images'][:-1] for ep in episodes]).transpose(0, 3, 1, 2)
    actions = np.concatenate([ep['actions'] for ep in episodes]) / spec.ACTION_HIGH
    rewards = np.concatenate([ep['rewards'] for ep in episodes]).reshape(-1, 1)
    terminals = np.concatenate([np.eye(1, len(ep['rewards']), len(ep['rewards']) - 1)[0]
                                for ep in episodes]).astype(np.float32)
    dataset = d3rlpy.dataset.MDPDataset(np.ascontiguousarray(obs),
                                        actions.astype(np.float32), rewards, terminals)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        algo = d3rlpy_awac_config(sizes, n_critics).create(device='cpu:0')
        algo.build_with_dataset(dataset)
    batch_size = sizes.batch_size

    def step():
        algo.update(dataset.sample_transition_batch(batch_size))
    return step


def measure_training(sizes, with_d3rlpy=True, progress=False, seed=0):
    """Gradient steps per second of our AWAC and AW-Opt learners and d3rlpy's AWAC.

    All contenders train on the same synthetic episodes, interleaved round by round
    (``sizes.train_rounds`` rounds of ``sizes.train_steps_per_round`` steps each).

    Returns:
        dict: ``awac``, ``awopt``, ``d3rlpy_awac``, ``d3rlpy_awac_1critic`` (steps/s =
        1 / p50 step time; the d3rlpy ones None when unavailable), ``d3rlpy_reason`` (None
        or why d3rlpy did not run), ``d3rlpy_version``.
    """
    episodes = synthetic_episodes(sizes.episodes, sizes.steps_per_episode, sizes.image_size,
                                  seed)
    calls = {'awac': _our_stepper('awac', episodes, sizes, seed),
             'awopt': _our_stepper('awopt', episodes, sizes, seed)}
    reason, version = None, None
    if with_d3rlpy:
        try:
            d3rlpy = _import_d3rlpy()
            version = d3rlpy.__version__
            calls['d3rlpy_awac'] = _d3rlpy_stepper(episodes, sizes, 2, seed)
            calls['d3rlpy_awac_1critic'] = _d3rlpy_stepper(episodes, sizes, 1, seed)
            calls['d3rlpy_awac']()            # fail here, not in the timing loop
        except ImportError as exc:
            reason = f'd3rlpy not importable ({exc}); install it with: {D3RLPY_PIP}'
        except Exception as exc:        # any other d3rlpy failure is reported, not fatal
            reason = f'd3rlpy AWAC failed: {type(exc).__name__}: {exc}'
        if reason is not None:
            calls.pop('d3rlpy_awac', None)
            calls.pop('d3rlpy_awac_1critic', None)
            _say(progress, reason)
    else:
        reason = 'd3rlpy skipped (with_d3rlpy=False)'
    _say(progress, f'training: {", ".join(calls)} at batch {sizes.batch_size}, '
         f'{sizes.train_rounds} rounds x {sizes.train_steps_per_round} steps')
    times = interleaved_times(calls, sizes.train_rounds, sizes.train_warmup,
                              sizes.train_steps_per_round)
    out = {name: 1e3 / _p50_ms(t) for name, t in times.items()}
    out.setdefault('d3rlpy_awac', None)
    out.setdefault('d3rlpy_awac_1critic', None)
    out['d3rlpy_reason'] = reason
    out['d3rlpy_version'] = version
    return out


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

#: Frames timed by :func:`measure_success_classifier` in a full run.
SUCCESS_FRAMES = 300
#: The shipped success classifier (relative to the share directory).
SUCCESS_MODEL = 'models/grasp_success.onnx'


def measure_success_classifier(model_path=None, frames=SUCCESS_FRAMES, warmup=10, seed=0):
    """Per-frame latency of the success classifier as the ``success_detector`` runs it.

    Args:
        model_path: ONNX classifier (default: the shipped :data:`SUCCESS_MODEL`).
        frames: timed frames, one call each (random uint8 frames of the model's size).
        warmup: untimed calls first.

    Returns:
        dict: ``p50_ms`` and ``p99_ms`` (wall time of one ``probability(frame)`` call, ms),
        ``frames``, ``model`` (path); or ``{'reason': str}`` when the model is missing or
        cannot be loaded.
    """
    from awopt_ros.core import paths
    from awopt_ros.core.success_classifier import ModelContractError, SuccessClassifier
    path = paths.resolve(SUCCESS_MODEL) if model_path is None else Path(model_path)
    try:
        clf = SuccessClassifier(path, threads=ORT_THREADS)
    except (FileNotFoundError, ModelContractError) as exc:
        return {'reason': str(exc)}
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (int(frames), clf.image_size, clf.image_size, 3),
                          dtype=np.uint8)
    for i in range(int(warmup)):
        clf.probability(images[i % len(images)])
    times = []
    clock = time.perf_counter
    for img in images:
        t0 = clock()
        clf.probability(img)
        times.append(clock() - t0)
    t = np.asarray(times) * 1e3
    return {'p50_ms': float(np.percentile(t, 50)), 'p99_ms': float(np.percentile(t, 99)),
            'frames': int(len(t)), 'model': str(path)}


def _ratio(num, den):
    """``num / den`` of already rounded figures, rounded; None when either is None."""
    if num is None or den is None:
        return None
    return _sig(num / den)


def run_learning_bench(quick=False, progress=True, with_d3rlpy=True):
    """Run the latency and training benchmarks; return the flat result dict.

    Args:
        quick: tiny networks and few repetitions (:data:`QUICK`, for tests; the figures are
            not meaningful) instead of :data:`FULL` (about a minute or two on 2 cores).
        progress: print one line per phase to stderr.
        with_d3rlpy: also time d3rlpy's AWAC (its keys are None with a reason otherwise).

    Returns:
        dict (see the module docstring): latencies in ms (``actor_ms_p50``, ``cem_ms_p50``,
        ``torch_actor_ms_p50``, ``critic_encoder_ms_p50``, ``critic_head_ms_p50`` and their
        ``_472`` twins), ratios (``cem_over_actor``, ``cem_over_actor_472``,
        ``ort_over_torch``, ``ort_over_torch_472``, ``awac_over_d3rlpy``), throughputs in
        steps/s (``awac_steps_per_s``, ``awopt_steps_per_s``, ``d3rlpy_awac_steps_per_s``,
        ``d3rlpy_awac_1critic_steps_per_s``; env steps/s ``insertion_steps_per_s``), target
        booleans, ``d3rlpy_unavailable_reason`` and ``learning_bench_setup``. Ratios are
        computed from the rounded figures in the dict, so each equals the quotient of the
        reported numbers (to 6 digits).
    """
    import torch
    sizes = QUICK if quick else FULL
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    t_start = time.perf_counter()
    try:
        lat = {}
        for size, rounds in ((sizes.image_size, sizes.latency_rounds),
                             (sizes.large_image_size, sizes.large_latency_rounds)):
            _say(progress, f'latency at {size} px: {rounds} interleaved rounds')
            lat[size] = measure_latency(size, sizes.channels, sizes.actor_hidden,
                                        sizes.critic_hidden, rounds, sizes.latency_warmup)
        train = measure_training(sizes, with_d3rlpy=with_d3rlpy, progress=progress)
        _say(progress, 'insertion environment steps per second')
        from awopt_ros.learning.insertion import steps_per_second
        insertion_rate = steps_per_second(seconds=0.5 if quick else 5.0)
        _say(progress, 'success classifier latency per frame')
        success = measure_success_classifier(frames=20 if quick else SUCCESS_FRAMES,
                                             warmup=2 if quick else 10)
    finally:
        torch.set_num_threads(previous_threads)

    small, large = lat[sizes.image_size], lat[sizes.large_image_size]
    r = {}
    for suffix, figures in (('', small), ('_472', large)):
        for name in ('actor', 'cem', 'torch_actor', 'actor_beside_torch', 'critic_encoder',
                     'critic_head'):
            r[f'{name}_ms_p50{suffix}'] = _sig(figures[name])
    r['cem_over_actor'] = _ratio(r['cem_ms_p50'], r['actor_ms_p50'])
    r['cem_over_actor_472'] = _ratio(r['cem_ms_p50_472'], r['actor_ms_p50_472'])
    r['ort_over_torch'] = _ratio(r['actor_beside_torch_ms_p50'], r['torch_actor_ms_p50'])
    r['ort_over_torch_472'] = _ratio(r['actor_beside_torch_ms_p50_472'],
                                     r['torch_actor_ms_p50_472'])
    r['awac_steps_per_s'] = _sig(train['awac'])
    r['awopt_steps_per_s'] = _sig(train['awopt'])
    r['d3rlpy_awac_steps_per_s'] = _sig(train['d3rlpy_awac'])
    r['d3rlpy_awac_1critic_steps_per_s'] = _sig(train['d3rlpy_awac_1critic'])
    r['awac_over_d3rlpy'] = _ratio(r['awac_steps_per_s'], r['d3rlpy_awac_steps_per_s'])
    r['d3rlpy_unavailable_reason'] = train['d3rlpy_reason']
    r['insertion_steps_per_s'] = _sig(insertion_rate)
    r['success_classifier_ms_p50'] = _sig(success.get('p50_ms'))
    r['success_classifier_ms_p99'] = _sig(success.get('p99_ms'))
    r['success_classifier_unavailable_reason'] = success.get('reason')
    r['cem_over_actor_at_most_2'] = bool(r['cem_over_actor'] <= CEM_OVER_ACTOR_MAX)
    r['cem_over_actor_472_at_most_2'] = bool(r['cem_over_actor_472'] <= CEM_OVER_ACTOR_MAX)
    r['ort_over_torch_at_most_half'] = bool(r['ort_over_torch'] <= ORT_OVER_TORCH_MAX)
    r['awac_at_least_d3rlpy'] = (None if r['d3rlpy_awac_steps_per_s'] is None else
                                 bool(r['awac_steps_per_s'] >= r['d3rlpy_awac_steps_per_s']))
    setup = asdict(sizes)
    setup.update(quick=bool(quick), torch_threads=TORCH_THREADS, ort_intra_op_threads=ORT_THREADS,
                 cem='2 iterations x 64 samples, 6 elites, + actor candidate',
                 d3rlpy_version=train['d3rlpy_version'],
                 torch_version=torch.__version__, seconds=_sig(time.perf_counter() - t_start, 3))
    r['learning_bench_setup'] = setup
    for key, value in r.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RuntimeError(f'learning bench produced a non-finite {key}: {value}')
    _say(progress, f'done in {setup["seconds"]} s')
    return r


if __name__ == '__main__':
    import json
    print(json.dumps(run_learning_bench(quick='--quick' in sys.argv[1:]), indent=2))
