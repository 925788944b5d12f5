"""Integration: ``awopt finetune`` beside the running stack, hot-swapping the policy's actor.

A short finetuning run through real processes: the stack's nodes (the policy in mode 'actor'
on a tiny 64 px actor exported here, hot-swap polling every 0.2 s) and ``awopt finetune`` as a
separate process that reads the logger's Minari dataset as episodes are appended, takes a few
gradient steps per episode and re-exports the actor (atomic ``os.replace``) over the very file
the policy node runs. Checks the mechanics (a rising success rate needs far longer runs):
- the finetuner took in the logged episodes, exported several times and exited 0 on
  ``--max-steps``;
- the policy node swapped models at least twice (``/policy/model_info`` re-published with a
  higher ``model_version``), kept acting across the swaps (``/policy/decision`` carries more
  than one model version) and exited cleanly;
- every episode ended properly and the dataset loads with every episode, each step marked as
  the actor's and matching a decision of the policy node, whose noise-free action it keeps;
- ``awopt demo --new-model-every N`` beside ``awopt finetune`` waits after each round of N
  episodes until the policy runs the next export (rounds of on-policy episodes).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from std_msgs.msg import String

from awopt_ros.core.dataset import POLICY_IDS, load_episodes
from awopt_ros.launcher import Stack, ros_environment
from awopt_ros.ros import qos
from awopt_ros.ros.episode_client import EpisodeClient

MAX_STEPS = 8             # episode length cap (actions)
EXPORT_EVERY = 3          # finetuner gradient steps between exports
STEPS_PER_EPISODE = 3     # gradient steps granted per logged episode
FT_MAX_STEPS = 12         # finetuner stops after this many steps (-> 4 exports)
MAX_EPISODES = 12
CROP = [80, 0, 480, 480]  # config/awopt_ros_kuka_grasp.yaml
DATASET_ID = 'awopt/kuka-grasp-v0'


def _tiny_pretrained(tmp):
    """Export a tiny 64 px 'awopt' learner (actor + critic) and save its checkpoint."""
    import torch

    from awopt_ros.core.cem import CEMConfig
    from awopt_ros.learning.awopt import Learner, make_config
    from awopt_ros.learning.critic import CriticConfig
    from awopt_ros.learning.networks import ActorConfig
    from awopt_ros.learning.train_cli import export_learner, save_checkpoint
    torch.set_num_threads(1)
    learner = Learner(make_config(
        'awopt', actor=ActorConfig(image_size=64, channels=4, num_conv=2, hidden=16),
        critic=CriticConfig(image_size=64, channels=4, num_conv=2, num_strided=2,
                            head_conv=1, hidden=8),
        batch_size=8, num_threads=1, seed=0, target_cem=CEMConfig(2, 8, 2)))
    with torch.no_grad():   # never 'terminate': episodes run to max_steps, across swaps
        last = learner.actor.mlp[-1]
        last.weight[6].zero_()
        last.bias[6] = -30.0
    actor = tmp / 'grasp_ft.onnx'
    prefix = str(tmp / 'grasp_ft_critic')
    export_learner(learner, actor, prefix, CROP, dataset_id=DATASET_ID)
    checkpoint = save_checkpoint(tmp / 'pretrain_checkpoint.pt', learner,
                                 {'kind': 'pretrain', 'crop_xywh': CROP})
    return actor, prefix, checkpoint


def _finetune_cmd(out, checkpoint, actor, prefix, export_every, max_steps):
    """``awopt finetune`` beside a stack logging under ``out``, exporting over ``actor``."""
    return [sys.executable, '-m', 'awopt_ros.cli', 'finetune', '--dataset-root', str(out),
            '--dataset-id', DATASET_ID, '--init-checkpoint', str(checkpoint),
            '--out', str(actor), '--critic-out-prefix', prefix,
            '--export-every', str(export_every), '--steps-per-episode', str(STEPS_PER_EPISODE),
            '--max-steps', str(max_steps), '--poll-s', '0.2', '--log-every', '3',
            '--threads', '1']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('finetune_stack')
    actor, prefix, checkpoint = _tiny_pretrained(tmp)
    out = tmp / 'run'
    overrides = {'logger': {'output_dir': str(out)},
                 'episode_manager': {'max_steps': MAX_STEPS},
                 'sim_robot': {'seed': 77},
                 'policy': {'mode': 'actor', 'model_path': str(actor),
                            'reload_period_s': 0.2, 'reload_settle_s': 0.1}}
    env = ros_environment(domain_id=os.environ['ROS_DOMAIN_ID'])
    stack = Stack(policy='actor', log_dir=out / 'logs', overrides=overrides, env=env)
    ft_log = tmp / 'finetune.log'
    ft_cmd = _finetune_cmd(out, checkpoint, actor, prefix, EXPORT_EVERY, FT_MAX_STEPS)
    ctx = Context()
    rclpy.init(context=ctx)
    client = EpisodeClient(context=ctx)
    infos, decisions = [], []
    client.create_subscription(String, '/policy/model_info',
                               lambda m: infos.append(json.loads(m.data)), qos.LATCHED)
    client.create_subscription(String, '/policy/decision',
                               lambda m: decisions.append(json.loads(m.data)), 100)
    finetuner = None
    ends, ft_code = [], None
    stack.start()
    try:
        alive = lambda: not stack.dead()  # noqa: E731
        assert client.wait_ready(120.0, alive=alive), [n.log_tail() for n in stack.dead()]
        assert client.spin_until(lambda: infos, 30.0, alive=alive), 'no /policy/model_info'
        with open(ft_log, 'wb') as log:
            finetuner = subprocess.Popen(ft_cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(env, PYTHONUNBUFFERED='1'),
                                         start_new_session=True)
        # Wait until the finetuner polls the dataset, so every episode is one export.
        assert client.spin_until(lambda: 'polling every' in ft_log.read_text()
                                 or finetuner.poll() is not None, 60.0), ft_log.read_text()
        assert finetuner.poll() is None, ft_log.read_text()
        v0 = infos[-1]['model_version']
        swaps_done = lambda: infos[-1]['model_version'] >= v0 + 2  # noqa: E731
        extra = 1   # one more episode after the last swap: it acts with the newest model
        while len(ends) < MAX_EPISODES:
            k = client.start_episode(timeout_s=60.0, alive=alive)
            end = client.wait_end(k, 60.0, alive=alive)
            assert end is not None and end['event'] == 'end', \
                [n.log_tail() for n in stack.nodes]
            ends.append(end)
            assert client.wait_saved(k, 30.0) is not None, stack.nodes[-1].log_tail()
            if finetuner.poll() is not None and swaps_done():
                if extra == 0:
                    break
                extra -= 1
        ft_code = finetuner.wait(timeout=60.0)
        # The last export's swap, if it came after the last episode.
        client.spin_until(lambda: False, 1.0)
        dead = [n.name for n in stack.dead()]
    finally:
        if finetuner is not None and finetuner.poll() is None:
            finetuner.terminate()
            finetuner.wait(timeout=30.0)
        codes = stack.stop()
    result = dict(ends=ends, infos=infos, decisions=decisions, saved=dict(client.saved),
                  codes=codes, dead=dead, ft_code=ft_code, ft_log=ft_log.read_text(),
                  history=json.loads((tmp / 'grasp_ft_finetune_history.json').read_text()),
                  actor=actor, out=out)
    client.destroy_node()
    rclpy.try_shutdown(context=ctx)
    return result


def test_finetuner_exported_several_times_and_exited_cleanly(run):
    assert run['ft_code'] == 0, run['ft_log']
    history = run['history']
    assert history['stop_reason'] == 'max_steps' and history['steps'] == FT_MAX_STEPS
    assert len(history['exports']) >= 2, run['ft_log']
    assert not history['export_errors']
    assert [e['step'] for e in history['exports']] == list(
        range(EXPORT_EVERY, FT_MAX_STEPS + 1, EXPORT_EVERY))
    # It trained on what the stack logged: the episodes, in order, with their lengths.
    taken = history['episodes']
    assert len(taken) >= FT_MAX_STEPS // STEPS_PER_EPISODE
    assert [e['index'] for e in taken] == list(range(len(taken)))
    assert [e['steps'] for e in taken] == [end['steps'] for end in run['ends'][:len(taken)]]
    for path in history['exports'][-1]['files']:
        assert Path(path).is_file()


def test_policy_hot_swapped_while_running_and_exited_cleanly(run):
    assert not run['dead'], run['dead']
    assert all(code == 0 for code in run['codes'].values()), run['codes']
    versions = [info['model_version'] for info in run['infos']]
    assert versions == sorted(versions)
    assert versions[-1] - versions[0] >= 2, versions           # at least two hot swaps
    latest = run['infos'][-1]
    assert latest['models']['actor']['paths'] == [str(run['actor'])]
    assert latest['models']['actor']['mtime_ns'] == run['actor'].stat().st_mtime_ns
    # The swapped-in models acted: decisions carry several model versions, never decreasing.
    acted = [d['model_version'] for d in run['decisions']]
    assert len(set(acted)) >= 2, sorted(set(acted))
    assert acted == sorted(acted)
    assert all(d['source'] == 'actor' for d in run['decisions'])


def test_episodes_end_properly_and_dataset_records_the_actor(run):
    ends = run['ends']
    assert len(ends) >= FT_MAX_STEPS // STEPS_PER_EPISODE
    for end in ends:
        assert end['outcome'] in ('success', 'terminate', 'timeout'), end
        assert 1 <= end['steps'] <= MAX_STEPS
    saved = run['saved'][ends[-1]['episode']]
    episodes = load_episodes(saved['dataset_root'], saved['dataset_id'])
    assert [e['episode'] for e in episodes] == [e['episode'] for e in ends]
    by_stamp = {round((d['stamp']['sec'] + d['stamp']['nanosec'] * 1e-9) * 1e3): d
                for d in run['decisions']}
    versions = set()
    for ep, end in zip(episodes, ends):
        steps = len(ep['actions'])
        assert steps == end['steps']
        assert ep['image'].shape == (steps + 1, 64, 64, 3)
        assert np.all(ep['policy'] == POLICY_IDS['actor'])
        for i, t in enumerate(ep['stamp_s'][:-1]):   # each logged step is one the policy
            decision = by_stamp.get(round(t * 1e3))     # node decided, with its noise-free
            if decision is not None:     # action (the label); a message may be missed here
                versions.add(decision['model_version'])
                np.testing.assert_allclose(ep['noise_free_action'][i],
                                           decision['noise_free_action'], atol=1e-6)
    assert len(versions) >= 2, versions


def test_demo_rounds_wait_for_each_new_model(tmp_path):
    """``awopt demo --new-model-every 2`` beside ``awopt finetune`` (both CLI processes): after
    each round of 2 episodes the demo waits until the policy node has hot-swapped the
    finetuner's next export, so each round runs on a newer model than the one before."""
    actor, prefix, checkpoint = _tiny_pretrained(tmp_path)
    out = tmp_path / 'run'
    env = dict(ros_environment(domain_id=os.environ['ROS_DOMAIN_ID']), PYTHONUNBUFFERED='1')
    cli = [sys.executable, '-m', 'awopt_ros.cli']
    ft_log = tmp_path / 'finetune.log'
    with open(ft_log, 'wb') as log:
        finetuner = subprocess.Popen(
            _finetune_cmd(out, checkpoint, actor, prefix, 2 * STEPS_PER_EPISODE,
                          4 * STEPS_PER_EPISODE),
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        demo = subprocess.run(
            cli + ['demo', '--episodes', '4', '--new-model-every', '2',
                   '--model-wait-timeout-s', '120', '--model', str(actor), '--seed', '77',
                   '--run-dir', str(out), '--report', str(tmp_path / 'report.json'),
                   '--set', f'episode_manager:max_steps={MAX_STEPS}',
                   '--set', 'policy:reload_period_s=0.2', '--set', 'policy:reload_settle_s=0.1'],
            env=env, capture_output=True, text=True, timeout=600)
        ft_code = finetuner.wait(timeout=120.0)
    finally:
        if finetuner.poll() is None:
            finetuner.terminate()
            finetuner.wait(timeout=30.0)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    report = json.loads((tmp_path / 'report.json').read_text())
    versions = [e['model_version'] for e in report['episode_results']]
    assert report['episodes'] == 4 and len(report['model_waits_s']) == 1, report
    assert versions[0] == versions[1] < versions[2] == versions[3], versions
    assert 'waiting up to 120 s for the policy to swap in a model newer' in demo.stdout
    assert ft_code == 0, ft_log.read_text()
    assert len(json.loads((tmp_path / 'grasp_ft_finetune_history.json').read_text())[
        'exports']) == 2
