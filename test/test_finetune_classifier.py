"""Finetuning on rewards labelled by the success classifier instead of ground truth.

``awopt finetune --reward-source classifier`` (learning.relabel + learning.finetune): each
episode is scored by the classifier, debounced as in the stack, cut where the decision fires
(reward 1, terminated) or kept with reward 0 when it never fires. The classifier here is a
tiny real ONNX model (success = a bright image) written with the classifier contract; the
learners are tiny (16 px, 4 channels) so that everything runs in seconds.
"""
import io
import json
import warnings

import numpy as np
import pytest
import torch

from awopt_ros import cli
from awopt_ros.core import spec
from awopt_ros.core.dataset import EpisodeRecorder
from awopt_ros.core.success_classifier import SuccessClassifier, make_contract
from awopt_ros.learning.export import save_with_metadata
from awopt_ros.learning.finetune import DatasetSource, FinetuneConfig, FinetuneError, Finetuner
from awopt_ros.learning.relabel import (ClassifierRelabeller, RelabelError, cut_episode,
                                        episode_reward_source, file_sha256)
from test_finetune import SIZE, GrowingSource, tiny_learner
from test_train_cli import DATASET_ID, TINY_NET

torch.set_num_threads(1)
DARK, GREY, BRIGHT = 20, 128, 235        # pixel values: p ~ 0, 0.5, 1 for the classifier
ON, OFF, K = 0.8, 0.3, 2


class Brightness(torch.nn.Module):
    """Success probability = sigmoid(20 (mean pixel / 255 - 0.5)): bright frames succeed."""

    def forward(self, image):
        logit = 20.0 * (image.float().mean(dim=(1, 2, 3)) / 255.0 - 0.5)
        return torch.sigmoid(logit), logit


def write_classifier(path, size=SIZE):
    """Write the brightness classifier as a contract-conforming ONNX file; return the path."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')             # the legacy exporter's deprecation note
        torch.onnx.export(Brightness(), (torch.zeros((2, size, size, 3), dtype=torch.uint8),),
                          buf, dynamo=False, input_names=['image'],
                          output_names=['probability', 'logit'],
                          dynamic_axes={'image': {0: 'N'}, 'probability': {0: 'N'},
                                        'logit': {0: 'N'}}, opset_version=17)
    contract = make_contract('grasp', ON, OFF, K, 0.01, image_size=size)
    return save_with_metadata(buf.getvalue(), path, contract, 'test brightness classifier')


class FakeClassifier:
    """The contract's runtime interface without a model: p = mean pixel / 255."""

    on_threshold, off_threshold, debounce_frames, image_size = ON, OFF, K, SIZE

    def __init__(self):
        self.calls = 0

    def probability(self, images):
        self.calls += 1
        return (np.asarray(images, np.float32).mean(axis=(1, 2, 3)) / 255.0).astype(np.float32)


def episode(levels, dataset_success, terminate_last=False, seed=0):
    """Episode dict (dataset layout) whose observation i is a flat image of ``levels[i]``;
    T = len(levels) - 1 actions; the dataset's outcome on the last step."""
    rng = np.random.default_rng(seed)
    t = len(levels) - 1
    actions = rng.uniform(spec.ACTION_LOW, spec.ACTION_HIGH, (t, 7)).astype(np.float32)
    actions[:, spec.DISCRETE] = 0.0
    actions[-1, spec.IDX_TERMINATE] = float(terminate_last)
    rewards = np.zeros(t)
    rewards[-1] = float(dataset_success)
    last = np.arange(t) == t - 1
    return {'image': np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in levels]),
            'proprio': rng.normal(0.0, 0.3, (t + 1, 6)).astype(np.float32),
            'actions': actions, 'rewards': rewards,
            'terminations': last & (dataset_success or terminate_last),
            'truncations': last & (not dataset_success and not terminate_last),
            'success_probability': np.linspace(0, 1, t + 1).astype(np.float32),
            'stamp_s': np.arange(t + 1, dtype=np.float64)}


def test_relabel_cuts_where_the_decision_fires_and_zeroes_missed_successes():
    relabel = ClassifierRelabeller(FakeClassifier())
    # Fires at frame 3 (frames 2 and 3 bright, K = 2): the stack ends it after action 2.
    ep = episode([DARK, DARK, BRIGHT, BRIGHT, BRIGHT, BRIGHT], dataset_success=True)
    out, rec = relabel(ep)
    assert rec['fire_frame'] == 3 and rec['steps'] == 3 and rec['recorded_steps'] == 5
    assert out['rewards'].tolist() == [0, 0, 1] and out['terminations'].tolist() == [0, 0, 1]
    assert not out['truncations'].any() and out['reward_source'] == 'classifier'
    assert out['image'].shape == (4, SIZE, SIZE, 3) and out['proprio'].shape == (4, 6)
    assert out['actions'].shape == (3, 7) and out['success_probability'].shape == (4,)
    np.testing.assert_array_equal(out['actions'], ep['actions'][:3])
    assert ep['rewards'].tolist() == [0, 0, 0, 0, 1]               # the input is untouched
    # A success the classifier misses (the recording ends after one bright frame, 1 < K):
    # reward 0, and the episode ends truncated (time limit), not terminated.
    out, rec = relabel(episode([DARK, DARK, DARK, DARK, BRIGHT], dataset_success=True))
    assert rec['fire_frame'] is None and not rec['classifier_success'] and rec['steps'] == 4
    assert rec['open_run'] == 1                          # cut short before K frames confirmed
    # Before the decision, a grey frame (between off and on) starts the run again: bright,
    # grey, bright is not K = 2 consecutive frames (classic hysteresis, as the node)
    _, rec = relabel(episode([DARK, BRIGHT, GREY, BRIGHT, GREY], dataset_success=True))
    assert rec['fire_frame'] is None and rec['open_run'] == 0
    assert not out['rewards'].any() and out['truncations'].tolist() == [0, 0, 0, 1]
    assert not out['terminations'].any()
    # A false success (bright, dark resets, bright again twice) in a failed episode; an
    # in-process rollout's own outcome keys follow the new labels.
    out, rec = relabel(dict(episode([BRIGHT, DARK, BRIGHT, BRIGHT, DARK, DARK], False),
                            success=False, terminated=False))
    assert rec['fire_frame'] == 3 and out['rewards'].tolist() == [0, 0, 1]
    assert out['success'] is True and out['terminated'] is True
    # Never fires and the last action is the terminate action: a terminal state, reward 0.
    out, rec = relabel(episode([DARK] * 4, False, terminate_last=True))
    assert out['terminations'].tolist() == [0, 0, 1] and not out['truncations'].any()
    # Fires on the first frames (already bright at the reset): one step, rewarded.
    out, rec = relabel(episode([BRIGHT, BRIGHT, DARK, DARK], False))
    assert rec['fire_frame'] == 1 and out['rewards'].tolist() == [1.0]
    # Labelled by the classifier in the stack already: kept as it is, not scored again.
    calls = relabel.classifier.calls
    stacked = dict(episode([DARK, DARK, DARK], True), reward_source='classifier',
                   ground_truth_success=False)        # the logger's fields (simulation)
    out, rec = relabel(stacked)
    assert out is stacked and rec['relabelled'] is False and relabel.classifier.calls == calls
    assert relabel.counts['relabelled'] == 0           # only the finetuner's tally() counts
    for ep_, rec_ in (relabel(episode([DARK, BRIGHT, BRIGHT], False)), (stacked, rec)):
        relabel.tally(rec_)
    assert relabel.counts == {'relabelled': 1, 'kept': 1, 'classifier_success': 1,
                              'dataset_success': 0, 'agree': 0, 'steps_dropped': 0,
                              'ground_truth_known': 1, 'ground_truth_agree': 0,
                              'ended_unconfirmed': 0}
    assert relabel.progress_text() == (
        'rewards by classifier: 1/1 success vs 0 in the dataset, agree 0/1; 1 already '
        'labelled by the classifier in the stack (not relabelled); classifier agrees with the '
        'recorded ground truth on 0/1')


def test_relabel_helpers_reject_bad_input():
    ep = episode([DARK] * 4, False)
    with pytest.raises(ValueError, match='cannot cut an episode of 3 steps to 4'):
        cut_episode(ep, 4)
    with pytest.raises(ValueError, match='cannot cut'):
        cut_episode(ep, 0)
    nested = {'observations': {'image': ep['image'], 'proprio': ep['proprio']},
              'actions': ep['actions'], 'rewards': ep['rewards'], 'seed': 7}
    cut = cut_episode(nested, 1)
    assert cut['observations']['image'].shape[0] == 2 and cut['seed'] == 7
    assert episode_reward_source({}, {'options': {'reward_source': b'classifier'}}) == \
        'classifier'
    assert episode_reward_source({}, {'reward_source': np.array(['ground_truth'])}) == \
        'ground_truth'
    assert episode_reward_source({}, {'seed': 1}) is None
    fake = FakeClassifier()
    with pytest.raises(ValueError, match='off_threshold'):
        ClassifierRelabeller(fake, off_threshold=0.9)
    wrong = FakeClassifier()
    wrong.image_size = 32
    ft = Finetuner(tiny_learner('awopt'), lambda start: [ep][start:],
                   FinetuneConfig(max_steps=1, poll_s=0.0), relabel=ClassifierRelabeller(wrong),
                   log=lambda line: None, sleep=lambda s: None)
    with pytest.raises(FinetuneError, match='episode 0: the success classifier takes 32x32'):
        ft.run()


def test_finetuner_trains_on_the_classifier_rewards_not_the_recorded_ones(tmp_path):
    """The done-when item: a finetuning run labelled by the classifier instead of ground
    truth. The dataset says every episode failed; the classifier sees two successes; an
    actor-only learner with positive filtering can only train on the classifier's."""
    model = write_classifier(tmp_path / 'success.onnx')
    classifier = SuccessClassifier(model)
    episodes = [episode([DARK, DARK, BRIGHT, BRIGHT, BRIGHT], False, seed=1),   # fires at 3
                episode([DARK, DARK, DARK, DARK], False, seed=2),
                episode([DARK, BRIGHT, BRIGHT, DARK], True, seed=3),            # fires at 2
                episode([DARK, BRIGHT, DARK, DARK], True, seed=4)]              # missed
    lines = []
    history = tmp_path / 'hist.json'

    def finetuner(preset, relabel):
        return Finetuner(tiny_learner(preset), GrowingSource(episodes, per_call=2),
                         FinetuneConfig(steps_per_episode=1, max_steps=4, poll_s=0.0,
                                        max_idle_s=0.0, log_every=1),
                         relabel=relabel, history_path=history, log=lines.append,
                         sleep=lambda s: None)
    # Ground truth: two successes recorded (episodes 2 and 3), trained as recorded.
    truth = finetuner('bc', None)
    truth.poll()
    truth.poll()
    assert truth.buffer.reward[:truth.buffer.num_transitions].tolist() == \
        [0] * 4 + [0] * 3 + [0, 0, 1] + [0, 0, 1]
    assert [e['reward_source'] for e in truth.episodes] == ['ground_truth'] * 4
    # Classifier: successes in episodes 0 and 2, cut where it fired; 3 is a missed success.
    ft = finetuner('bc', ClassifierRelabeller(classifier, model))
    seen = []
    update = ft.learner.update

    def spy(critic_batch, actor_batch):
        seen.append(actor_batch)
        return update(critic_batch, actor_batch)
    ft.learner.update = spy
    summary = ft.run()
    buf = ft.buffer
    n = buf.num_transitions
    assert n == 3 + 3 + 2 + 3                               # episodes 0 and 2 cut
    assert buf.reward[:n].tolist() == [0, 0, 1] + [0] * 3 + [0, 1] + [0] * 3
    assert buf.done[:n].tolist() == [0, 0, 1] + [0] * 3 + [0, 1] + [0] * 3  # 1, 3: truncated
    assert buf.num_successful == 2
    # Every actor batch came from the classifier's successful episodes (positive filter).
    assert summary['steps'] == 4 and len(seen) == 4
    successful = {0, 1, 2, 6, 7}                 # buffer rows of episodes 0 and 2 (cut)
    assert all(set(batch['index'].tolist()) <= successful for batch in seen)
    assert all(batch['success'].all() for batch in seen)
    # The source of the rewards is recorded per episode and for the run.
    recs = summary['episodes']
    assert [e['success'] for e in recs] == [True, False, True, False]
    assert [e['dataset_success'] for e in recs] == [False, False, True, True]
    assert [e['fire_frame'] for e in recs] == [3, None, 2, None]
    assert {e['reward_source'] for e in recs} == {'classifier'}
    assert {e['model_sha256'] for e in recs} == {file_sha256(model)}
    source = json.loads(history.read_text())['reward_source']
    assert source['reward_source'] == 'classifier' and source['model'] == str(model)
    assert (source['on_threshold'], source['off_threshold'], source['debounce_frames']) == \
        (ON, OFF, K)
    assert source['counts'] == {'relabelled': 4, 'kept': 0, 'classifier_success': 2,
                                'dataset_success': 2, 'agree': 2, 'steps_dropped': 2,
                                'ground_truth_known': 0, 'ground_truth_agree': 0,
                                'ended_unconfirmed': 0}
    assert any('rewards by classifier: 2/4 success vs 2 in the dataset, agree 2/4' in line
               for line in lines)


def write_dataset(root, levels_per_episode, successes, sources):
    """Log episodes with flat images of the given levels through the logger's recorder;
    ``sources``: per episode, the recorder's ``reward_source`` and ``ground_truth_success``
    keywords."""
    rng = np.random.default_rng(0)
    rec = EpisodeRecorder(root, DATASET_ID, image_size=SIZE)
    for k, (levels, success, source) in enumerate(zip(levels_per_episode, successes, sources)):
        rec.begin(k, 100 + k)
        for v in levels[:-1]:
            action = np.zeros(7, np.float32)
            action[:3] = rng.uniform(-0.5, 0.5, 3)
            rec.add_step(np.full((SIZE, SIZE, 3), v, np.uint8), rng.normal(0.0, 0.3, 6),
                         action, 0.5, 1, 0.0)
        rec.end(success, success, not success, np.full((SIZE, SIZE, 3), levels[-1], np.uint8),
                rng.normal(0.0, 0.3, 6), **source)
    return root


def finetune(root, out, *extra):
    return cli.main(['finetune', '--dataset-root', str(root), '--dataset-id', DATASET_ID,
                     '--preset', 'awopt', '--out', str(out), '--steps-per-episode', '1',
                     '--max-steps', '2', '--max-idle-s', '0', '--poll-s', '0.01',
                     '--log-every', '1', '--image-size', str(SIZE), *TINY_NET, *extra])


def test_cli_reward_source_classifier_and_its_errors(tmp_path, capsys, monkeypatch):
    # Three episodes labelled by ground truth, then one the stack's classifier ended as a
    # success (a false one: the simulator's ground truth, logged beside it, says failed).
    stacked = {'reward_source': 'classifier', 'ground_truth_success': False}
    root = write_dataset(tmp_path / 'run', [[DARK, BRIGHT, BRIGHT, BRIGHT], [DARK] * 4,
                                            [DARK, DARK, DARK, BRIGHT], [DARK] * 4],
                         [False, False, True, True], [{}] * 3 + [stacked])
    read = DatasetSource(root, DATASET_ID)(0)
    assert [e['seed'] for e in read] == [100, 101, 102, 103]
    assert [e['reward_source'] for e in read] == ['ground_truth'] * 3 + ['classifier']
    model = write_classifier(tmp_path / 'models' / 'success.onnx')
    out = tmp_path / 'out' / 'live.onnx'
    assert finetune(root, out, '--reward-source', 'classifier', '--success-model',
                    str(model)) == 0
    printed = capsys.readouterr().out
    assert f'rewards labelled by the success classifier {model}' in printed
    assert ('rewards by classifier: 1/3 success vs 1 in the dataset, agree 1/3; 1 ended '
            'before 2 frames could confirm a success (labelled failed); 1 already labelled by '
            'the classifier in the stack (not relabelled); classifier agrees with the recorded '
            'ground truth on 0/1') in printed
    history = json.loads((out.parent / 'live_finetune_history.json').read_text())
    assert history['reward_source']['reward_source'] == 'classifier'
    assert history['reward_source']['model_sha256'] == file_sha256(model)
    assert [(e['success'], e['dataset_success'], e['steps'], e['relabelled'])
            for e in history['episodes']] == [(True, False, 2, True), (False, False, 3, True),
                                              (False, True, 3, True), (True, True, 3, False)]

    # The default ground truth records the dataset's rewards as the source.
    assert finetune(root, tmp_path / 'gt' / 'live.onnx') == 0
    history = json.loads((tmp_path / 'gt' / 'live_finetune_history.json').read_text())
    assert history['reward_source'] == {'reward_source': 'ground_truth'}
    assert [(e['success'], e['reward_source']) for e in history['episodes']] == [
        (False, 'ground_truth'), (False, 'ground_truth'), (True, 'ground_truth'),
        (True, 'classifier')]
    capsys.readouterr()

    # Bad input: one line naming the option, exit 2, nothing written.
    monkeypatch.chdir(tmp_path)                      # the default models/grasp_success.onnx
    for extra, message in (
            (['--reward-source', 'classifier'],
             'argument --success-model: no success classifier at models/grasp_success.onnx'),
            (['--reward-source', 'classifier', '--success-model', 'nope.onnx'],
             'argument --success-model: no success classifier at nope.onnx'),
            (['--success-model', str(model)],
             'argument --success-model: is used only with --reward-source classifier')):
        assert finetune(root, tmp_path / 'bad' / 'live.onnx', *extra) == 2
        err = capsys.readouterr().err
        assert err.strip().count('\n') == 0 and message in err, err
    assert not (tmp_path / 'bad').exists()
    # A classifier whose contract does not fit the learner's images.
    big = write_classifier(tmp_path / 'big.onnx', size=32)
    assert finetune(root, tmp_path / 'bad' / 'live.onnx', '--reward-source', 'classifier',
                    '--success-model', str(big)) == 2
    err = capsys.readouterr().err
    assert 'argument --success-model' in err and 'image_size' in err
    assert err.strip().count('\n') == 0


def test_relabel_feeds_one_observation_per_step_at_the_contracts_frame_period():
    """Dataset observations are one per 0.1 s control step, the contract's frame_period_s:
    every one is fed; a classifier counting frames at another period is refused."""
    relabel = ClassifierRelabeller(FakeClassifier())
    assert relabel.frame_period_s == 0.1 and relabel.describe()['frame_period_s'] == 0.1
    fast = FakeClassifier()
    fast.frame_period_s = 1 / 30
    with pytest.raises(RelabelError, match='frame_period_s'):
        ClassifierRelabeller(fast)
    assert ClassifierRelabeller(fast, step_period_s=1 / 30).frame_period_s == pytest.approx(1 / 30)
