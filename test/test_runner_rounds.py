"""run_episodes(new_model_every=N): rounds of on-policy episodes beside a slow finetuner.

The runner's pacing logic with a fake stack and a fake episode client (the ROS side of the
same wait, ``EpisodeClient.wait_model_newer`` on ``/policy/model_info``, is tested in
test_episode_client.py; the real stack with a real finetuner in test_finetune_stack.py).
"""
import pytest

from awopt_ros.ros import runner


class FakeStack:
    def __init__(self, **kwargs):
        self.nodes = []
        self.stopped = False

    def start(self):
        pass

    def stop(self):
        self.stopped = True
        return {}

    def dead(self):
        return []


class FakeClient:
    """Episodes succeed at once; the policy's model version moves only when the test's
    'finetuner' exports: during a wait (``slow`` learner) or at chosen episode starts."""

    def __init__(self, context=None):
        self.events, self.saved, self.latencies_ms, self.counters = [], {}, [], {}
        self.camera_stamps_ns = []
        self.recording = False
        self.version = 0
        self.started = 0
        self.waits = []              # (episodes started, version waited beyond)
        self.export_during_wait = True
        self.export_at_start = set()  # episode numbers whose start comes with an export

    @property
    def model_info(self):
        return {'model_version': self.version}

    @property
    def model_version(self):
        return self.version

    def wait_ready(self, timeout_s, alive=None):
        return True

    def start_episode(self, timeout_s=30.0, alive=None):
        self.started += 1
        if self.started in self.export_at_start:
            self.version += 1
        self.events.append({'event': 'start', 'episode': self.started, 'seed': self.started})
        return self.started

    def wait_end(self, episode, timeout_s, alive=None):
        event = {'event': 'end', 'episode': episode, 'outcome': 'success', 'success': True,
                 'steps': 3, 'duration_s': 0.3}
        self.events.append(event)
        return event

    def wait_saved(self, episode, timeout_s):
        return None

    def spin_until(self, condition, timeout_s, alive=None):
        return condition()

    def wait_model_newer(self, version, timeout_s, alive=None):
        if version is None:
            return self.model_info
        self.waits.append((self.started, version))
        if self.version <= version and self.export_during_wait:
            self.version += 1
        return self.model_info if self.version > version else None

    def destroy_node(self):
        pass


@pytest.fixture
def fake_stack(monkeypatch):
    """Patch the runner's Stack and EpisodeClient; return (clients made, settings applied to
    each new client)."""
    clients, settings = [], {}

    def make_client(context=None, **_kwargs):   # camera_ns: the config's
        client = FakeClient(context)
        client.__dict__.update(settings)
        clients.append(client)
        return client
    monkeypatch.setattr(runner, 'Stack', FakeStack)
    monkeypatch.setattr(runner, 'EpisodeClient', make_client)
    return clients, settings


def run(tmp_path, **kwargs):
    lines = []
    report = runner.run_episodes(run_dir=tmp_path / 'run', out=lines.append, **kwargs)
    return report, lines


def test_each_round_runs_on_a_newer_model(tmp_path, fake_stack):
    report, lines = run(tmp_path, episodes=5, new_model_every=2, warmup_episodes=1)
    client = fake_stack[0][0]
    assert report['error'] is None and report['episodes'] == 5
    # Waits after 2 and 4 recorded episodes (+1 warm-up started), none before the first.
    assert client.waits == [(3, 0), (5, 1)]
    assert [e['model_version'] for e in report['episode_results']] == [0, 0, 1, 1, 2]
    assert len(report['model_waits_s']) == 2
    assert sum('waiting up to 3600 s for the policy to swap in a model newer than version 1'
               in line for line in lines) == 1


def test_an_export_during_the_round_needs_no_further_wait(tmp_path, fake_stack):
    # The learner was fast: a swap in the middle of the first round, none during the wait.
    fake_stack[1].update(export_at_start={2}, export_during_wait=False)
    report, _ = run(tmp_path, episodes=3, new_model_every=2)
    assert report['error'] is None and report['episodes'] == 3
    # The swap landed while episode 2 ran; episode 3 starts at once on the new model.
    assert [e['model_version'] for e in report['episode_results']] == [0, 0, 1]
    assert fake_stack[0][0].waits == [(2, 0)]


def test_no_new_model_stops_the_run_with_a_clear_error(tmp_path, fake_stack):
    fake_stack[1].update(export_during_wait=False)   # no finetuner
    report, _ = run(tmp_path, episodes=6, new_model_every=2, model_wait_timeout_s=5.0)
    assert report['episodes'] == 2          # the first round ran, then the run stopped
    assert 'no new model within 5 s after 2 episodes' in report['error']
    assert 'awopt finetune' in report['error']
    assert (tmp_path / 'run').is_dir()


def test_without_rounds_nothing_waits(tmp_path, fake_stack):
    report, _ = run(tmp_path, episodes=3)
    assert fake_stack[0][0].waits == [] and report['model_waits_s'] == []
    assert all('model_version' not in e for e in report['episode_results'])


@pytest.mark.parametrize('kwargs', [dict(new_model_every=-1),
                                    dict(new_model_every=2, policy='scripted')])
def test_bad_rounds_are_refused(tmp_path, fake_stack, kwargs):
    with pytest.raises(ValueError, match='new_model_every'):
        run(tmp_path, episodes=3, **kwargs)


class _DeadNode:
    name = 'logger'
    log_path = '/tmp/logs/logger.log'
    process = type('P', (), {'returncode': -9})()

    def log_tail(self, lines=20):
        return 'last words'


def test_a_node_death_ends_the_run_naming_the_node(tmp_path, fake_stack, monkeypatch):
    """wait_end returns early when ``alive()`` turns False; the error names the dead node
    (not a timeout), with its exit code and log tail."""
    dead = []
    monkeypatch.setattr(FakeStack, 'dead', lambda self: list(dead))

    def wait_end(self, episode, timeout_s, alive=None):
        if episode == 2:
            dead.append(_DeadNode())
            assert alive is not None and not alive()
            return None                   # what EpisodeClient.wait_end gives then
        return FakeClient.wait_end_ok(self, episode, timeout_s)
    monkeypatch.setattr(FakeClient, 'wait_end_ok', FakeClient.wait_end, raising=False)
    monkeypatch.setattr(FakeClient, 'wait_end', wait_end)
    report, _ = run(tmp_path, episodes=5)
    assert report['episodes'] == 1
    assert report['error'] == ('node logger died during episode 2 (exit code -9, SIGKILL); '
                               'last log lines (/tmp/logs/logger.log):\nlast words')


def test_no_answer_from_episode_start_names_the_dead_node(tmp_path, fake_stack, monkeypatch):
    dead = [_DeadNode()]
    monkeypatch.setattr(FakeStack, 'dead', lambda self: list(dead))

    def start_episode(self, timeout_s=30.0, alive=None):
        raise RuntimeError('no answer from /episode/start')
    monkeypatch.setattr(FakeClient, 'start_episode', start_episode)
    report, _ = run(tmp_path, episodes=2)
    assert report['error'].startswith('node logger died while an episode started')
    dead.clear()
    report, _ = run(tmp_path, episodes=2)    # every node alive: the client's reason
    assert report['error'] == 'episode 1 could not start: no answer from /episode/start'
