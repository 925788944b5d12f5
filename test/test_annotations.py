"""Tests for awopt_ros.core.annotations (the operator's journal) and the awopt label / discard /
note commands: ROS-free, on small datasets written with core.dataset.EpisodeRecorder."""
import json
import logging
import multiprocessing
import threading

import numpy as np
import pytest

from awopt_ros.cli import main as awopt
from awopt_ros.core import annotations as ann
from awopt_ros.core.dataset import EpisodeRecorder, load_episodes
from awopt_ros.core.spec import ACTION_HIGH, ACTION_LOW

DATASET_ID = 'awopt/kuka-grasp-v0'


def _record(rec, number, steps=3, success=False, seed=0):
    rng = np.random.default_rng(seed)
    rec.begin(number, seed)
    for t in range(steps):
        action = np.clip(rng.normal(scale=0.02, size=7), ACTION_LOW, ACTION_HIGH)
        rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                     rng.normal(size=6).astype(np.float32), action.astype(np.float32), 0.0, 1,
                     100.0 + t)
    return rec.end(success, success, not success, np.zeros((64, 64, 3), np.uint8),
                   np.zeros(6, np.float32))


def _dataset(root, numbers, successes=None):
    rec = EpisodeRecorder(root, DATASET_ID)
    for i, n in enumerate(numbers):
        _record(rec, n, success=bool(successes and successes[i]), seed=i)
    return rec


def _ep(rewards, terms, truncs, label=None):
    return {'id': 0, 'episode': 1, 'rewards': np.array(rewards, float),
            'terminations': np.array(terms, bool), 'truncations': np.array(truncs, bool),
            'label': label, 'discarded': False, 'notes': []}


# -- records and the journal ------------------------------------------------------------------
def test_make_record_checks_its_values():
    with pytest.raises(ValueError, match='label'):
        ann.make_record(1, label='great')
    with pytest.raises(ValueError, match='empty'):
        ann.make_record(1, note='  ')
    with pytest.raises(ValueError, match='needs a label'):
        ann.make_record(1)
    with pytest.raises(ValueError, match='episode'):
        ann.make_record(-1, label='success')
    with pytest.raises(ValueError, match='reason'):
        ann.make_record(1, reason='why', note='x')
    assert ann.make_record(1, label=None)['label'] is None          # clears a label
    rec = ann.make_record(3, index=2, discarded=True, reason='r', source='operator')
    assert {k: rec[k] for k in ('episode', 'index', 'discarded', 'reason', 'source')} == {
        'episode': 3, 'index': 2, 'discarded': True, 'reason': 'r', 'source': 'operator'}


def test_last_record_wins_notes_accumulate_and_undo(tmp_path):
    path = tmp_path / ann.JOURNAL_NAME
    for fields in ({'label': 'success', 'note': 'a'}, {'discarded': True, 'reason': 'blurry'},
                   {'label': 'failure'}, {'note': 'b'}, {'discarded': False}):
        ann.append_record(path, ann.make_record(2, index=1, **fields))
    ann.append_record(path, ann.make_record(1, index=0, discarded=True))
    state = ann.fold(ann.read_journal(path), [1, 2])
    assert state[1] == {'label': 'failure', 'discarded': False,
                        'notes': ['a', 'discarded: blurry', 'b']}
    assert state[0] == {'label': None, 'discarded': True, 'notes': []}
    ann.append_record(path, ann.make_record(2, index=1, label=None))
    assert ann.fold(ann.read_journal(path), [1, 2])[1]['label'] is None
    # append-only: the earlier lines are unchanged, one JSON object per line
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(line)['episode'] in (1, 2) for line in lines)


def test_bad_line_from_a_crash_is_skipped_with_a_warning_and_the_next_append_is_kept(
        tmp_path, caplog):
    path = tmp_path / ann.JOURNAL_NAME
    ann.append_record(path, ann.make_record(1, index=0, label='success'))
    with open(path, 'ab') as f:            # a record cut short by a crash: no newline
        f.write(b'{"episode": 1, "index": 0, "label": "fai')
    ann.append_record(path, ann.make_record(1, index=0, note='after the crash'))
    with open(path, 'ab') as f:
        f.write(b'\xff\xfe not json\n[1, 2]\n{"episode": "1"}\n')
    with caplog.at_level(logging.WARNING, logger='awopt_ros.core.annotations'):
        records = ann.read_journal(path)
    assert [r.get('label', r.get('note')) for r in records] == ['success', 'after the crash']
    assert len([r for r in caplog.records if 'skipped' in r.getMessage()]) == 4
    assert ann.fold(records, [1])[0] == {'label': 'success', 'discarded': False,
                                         'notes': ['after the crash']}


def test_missing_dataset_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        ann.append_record(tmp_path / 'nope' / ann.JOURNAL_NAME, ann.make_record(1, note='x'))


def _append_many(path, worker, count):
    for k in range(count):
        ann.append_record(path, ann.make_record(worker, index=worker, note=f'{worker}-{k}' * 40))


def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / ann.JOURNAL_NAME
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_append_many, args=(path, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = ann.read_journal(path)
    assert len(records) == 240 and len(path.read_text().splitlines()) == 240
    for w in range(4):   # each writer's records in its own order
        assert [r['note'] for r in records if r['episode'] == w] == [
            f'{w}-{k}' * 40 for k in range(60)]


def test_index_and_after_index_resolve_repeated_numbers(tmp_path, caplog):
    numbers = [1, 2, 1, 2]        # two recordings into one run directory
    records = [ann.make_record(1, index=2, label='failure'),
               ann.make_record(2, after_index=2, label='success'),   # the second episode 2
               ann.make_record(2, after_index=4, note='pending: not written yet'),
               ann.make_record(2, index=0, note='stale')]           # index 0 is episode 1
    with caplog.at_level(logging.WARNING, logger='awopt_ros.core.annotations'):
        state = ann.fold(records, numbers)
    assert [s['label'] for s in state] == [None, None, 'failure', 'success']
    assert all(not s['notes'] for s in state)
    assert any('skipped' in r.getMessage() for r in caplog.records)
    # once the pending episode is written, its note lands
    assert ann.fold(records, numbers + [2])[4]['notes'] == ['pending: not written yet']


def test_resolve_episode_refuses_unknown_and_ambiguous_numbers():
    numbers = [1, 2, 3, 1]
    assert ann.resolve_episode(numbers, 2) == 1
    with pytest.raises(ann.UnknownEpisodeError, match=r'no episode 9 .*episodes: 1-3'):
        ann.resolve_episode(numbers, 9)
    with pytest.raises(ann.UnknownEpisodeError, match='indices 0, 3'):
        ann.resolve_episode(numbers, 1)
    assert ann.resolve_episode(numbers, 1, index=3) == 3
    with pytest.raises(ann.UnknownEpisodeError, match='is episode 2'):
        ann.resolve_episode(numbers, 1, index=1)
    with pytest.raises(ann.UnknownEpisodeError, match='no dataset index 7'):
        ann.resolve_episode(numbers, 1, index=7)


# -- labels -> rewards --------------------------------------------------------------------
def test_success_label_on_a_recorded_failure():
    ep = _ep([0, 0, 0], [0, 0, 0], [0, 0, 1], 'success')
    out = ann.labelled(ep)
    assert out['rewards'].tolist() == [0, 0, 1]
    assert out['terminations'].tolist() == [False, False, True]
    assert out['truncations'].tolist() == [False, False, False]
    assert ep['rewards'].tolist() == [0, 0, 0]          # the recorded arrays are not changed


def test_failure_label_on_a_recorded_success_becomes_truncated():
    out = ann.labelled(_ep([0, 0, 1], [0, 0, 1], [0, 0, 0], 'failure'))
    assert out['rewards'].tolist() == [0, 0, 0]
    assert out['terminations'].tolist() == [False] * 3
    assert out['truncations'].tolist() == [False, False, True]


def test_failure_label_keeps_a_terminate_action_and_no_label_changes_nothing():
    ep = _ep([0, 0], [0, 1], [0, 0], 'failure')   # the policy's terminate action
    out = ann.labelled(ep)
    assert out['rewards'].tolist() == [0, 0] and out['terminations'].tolist() == [False, True]
    assert not ann.relabels(ep)
    plain = _ep([0, 1], [0, 1], [0, 0])
    assert ann.labelled(plain) is plain


def test_training_episodes_leave_out_discarded_and_apply_labels():
    eps = [_ep([0, 0], [0, 0], [0, 1]), _ep([0, 0], [0, 0], [0, 1], 'success'),
           dict(_ep([0, 1], [0, 1], [0, 0]), discarded=True), {'rewards': np.zeros(2)}]
    kept, stats = ann.training_episodes(eps)
    assert stats == {'episodes': 4, 'discarded': 1, 'labelled': 1, 'relabelled': 1, 'kept': 3}
    assert [float(e['rewards'].sum()) for e in kept] == [0.0, 1.0, 0.0]
    assert 'discarded' in ann.summary_line(stats)


# -- the dataset --------------------------------------------------------------------------
def test_load_episodes_gives_the_annotations_and_keeps_the_recording(tmp_path, monkeypatch):
    _dataset(tmp_path, [1, 2, 3], successes=[False, True, False])
    eps = load_episodes(tmp_path, DATASET_ID)
    assert [(e['label'], e['discarded'], e['notes']) for e in eps] == [(None, False, [])] * 3
    path = ann.journal_path(tmp_path, DATASET_ID)
    ann.append_record(path, ann.make_record(2, index=1, label='failure', note='slipped'))
    ann.append_record(path, ann.make_record(3, index=2, discarded=True))
    eps = load_episodes(tmp_path, DATASET_ID)
    assert [(e['label'], e['discarded'], e['notes']) for e in eps] == [
        (None, False, []), ('failure', False, ['slipped']), (None, True, [])]
    assert eps[1]['rewards'][-1] == 1.0     # recorded outcome kept for tools that show it
    assert ann.episode_numbers(tmp_path, DATASET_ID) == [1, 2, 3]
    # minari itself does not mind the journal beside data/
    import minari
    monkeypatch.setenv('MINARI_DATASETS_PATH', str(tmp_path / 'datasets'))
    assert minari.list_local_datasets()[DATASET_ID]['total_episodes'] == 3
    assert minari.load_dataset(DATASET_ID).total_episodes == 3


def test_journal_appends_while_the_recorder_appends_episodes(tmp_path):
    rec = _dataset(tmp_path, [1])
    path = ann.journal_path(tmp_path, DATASET_ID)
    stop, errors, written = threading.Event(), [], []

    def annotate():
        k = 0
        while not stop.is_set():
            try:
                ann.append_record(path, ann.make_record(1, index=0, note=f'n{k}'))
                written.append(k)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            k += 1
    thread = threading.Thread(target=annotate)
    thread.start()
    try:
        for n in range(2, 6):
            summary = _record(rec, n, seed=n)
            assert summary['written']
            ann.append_record(path, ann.make_record(n, after_index=n - 1, label='success'))
    finally:
        stop.set()
        thread.join(30)
    assert not errors and written
    eps = load_episodes(tmp_path, DATASET_ID)
    assert [e['episode'] for e in eps] == [1, 2, 3, 4, 5]
    assert eps[0]['notes'] == [f'n{k}' for k in written]
    assert [e['label'] for e in eps] == [None] + ['success'] * 4


# -- the commands -------------------------------------------------------------------------
def test_label_discard_note_commands(tmp_path, capsys):
    _dataset(tmp_path, [1, 2])
    assert awopt(['label', str(tmp_path), '--episode', '2', 'failure', '--note', 'dropped']) == 0
    assert 'dataset index 1' in capsys.readouterr().out
    assert awopt(['discard', str(tmp_path), '--episode', '1', '--reason', 'camera covered']) == 0
    assert awopt(['note', str(tmp_path), '--episode', '1', 'second look']) == 0
    eps = load_episodes(tmp_path, DATASET_ID)
    assert [(e['label'], e['discarded'], e['notes']) for e in eps] == [
        (None, True, ['discarded: camera covered', 'second look']),
        ('failure', False, ['dropped'])]
    assert awopt(['discard', str(tmp_path), '--episode', '1', '--undo']) == 0
    assert awopt(['label', str(tmp_path), '--episode', '2', 'clear']) == 0
    eps = load_episodes(tmp_path, DATASET_ID)
    assert [(e['label'], e['discarded']) for e in eps] == [(None, False), (None, False)]


def test_command_prints_what_load_episodes_gives(tmp_path, capsys):
    """The command's summary line uses the same episode identity as load_episodes: an
    operator record for another episode 1 (its seed differs) is not shown as this one's."""
    _dataset(tmp_path, [1, 2, 1])                    # seeds 0, 1, 2
    ann.append_record(ann.journal_path(tmp_path, DATASET_ID), ann.make_record(
        1, after_index=2, discarded=True, seed=9, source='operator'))
    assert awopt(['note', str(tmp_path), '--episode', '1', '--index', '2', 'looked']) == 0
    assert 'kept for training' in capsys.readouterr().out
    assert not load_episodes(tmp_path, DATASET_ID)[2]['discarded']


def test_commands_refuse_unknown_and_ambiguous_episodes(tmp_path, capsys):
    _dataset(tmp_path, [1, 2, 1])
    capsys.readouterr()
    assert awopt(['label', str(tmp_path), '--episode', '5', 'success']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('awopt label: error: argument --episode: no episode 5')
    assert '\n' not in err
    assert awopt(['discard', str(tmp_path), '--episode', '1']) == 2
    assert 'indices 0, 2' in capsys.readouterr().err
    assert not ann.journal_path(tmp_path, DATASET_ID).exists()    # nothing written
    assert awopt(['discard', str(tmp_path), '--episode', '1', '--index', '2']) == 0
    assert [e['discarded'] for e in load_episodes(tmp_path, DATASET_ID)] == [False, False, True]
    assert awopt(['note', str(tmp_path / 'missing'), '--episode', '1', 'x']) == 2
    assert awopt(['discard', str(tmp_path), '--episode', '2', '--undo', '--reason', 'r']) == 2


# -- the operator node's logic (OperatorSession) ------------------------------------------
def _saved(episode, index, root, written=True):
    return {'episode': episode, 'dataset_index': index if written else None,
            'dataset_written': written, 'dataset_root': str(root), 'dataset_id': DATASET_ID,
            'write_error': None if written else 'No space left on device'}


def test_session_refuses_without_an_ended_or_recorded_episode(tmp_path):
    session = ann.OperatorSession(tmp_path, DATASET_ID, count=lambda *_: 0)
    with pytest.raises(ann.NoEpisodeError, match='no episode has ended'):
        session.annotate(label='success')
    session.on_event({'event': 'start', 'episode': 1})
    with pytest.raises(ann.NoEpisodeError, match='no episode has ended'):
        session.annotate(discarded=True)
    session.on_event({'event': 'end', 'episode': 1})
    session.on_saved(_saved(1, None, tmp_path, written=False))
    with pytest.raises(ann.NoEpisodeError, match='not in the dataset .*No space'):
        session.annotate(label='failure')
    assert not session.pending


def test_session_queues_until_the_dataset_exists_and_resolves_repeated_numbers(tmp_path):
    session = ann.OperatorSession(tmp_path, DATASET_ID)
    session.on_event({'event': 'start', 'episode': 1})
    session.annotate(note='while running', note_running=True)
    session.on_event({'event': 'end', 'episode': 1})
    record, written = session.annotate(label='failure')
    assert not written and record['after_index'] == 0 and len(session.pending) == 2
    rec = _dataset(tmp_path, [1])                       # the logger writes episode 1
    assert session.on_saved(_saved(1, 0, tmp_path)) == 2 and not session.pending
    # a second recording numbers from 1 again: a new start of number 1
    session.on_event({'event': 'start', 'episode': 1})
    session.on_event({'event': 'end', 'episode': 1})
    record, written = session.annotate(label='success')  # before the logger wrote it
    assert written and record['after_index'] == 1
    _record(rec, 1, seed=5)
    session.on_saved(_saved(1, 1, tmp_path))
    record, _ = session.annotate(discarded=True)
    assert record['index'] == 1
    eps = load_episodes(tmp_path, DATASET_ID)
    assert [(e['label'], e['discarded'], e['notes']) for e in eps] == [
        ('failure', False, ['while running']), ('success', True, [])]


def test_session_uses_latched_reports_heard_before_the_start_event(tmp_path):
    """A node started late hears the latched reports and events in any order."""
    _dataset(tmp_path, [1, 2])
    session = ann.OperatorSession(tmp_path / 'elsewhere', 'awopt/other-v0')
    session.on_saved(_saved(2, 1, tmp_path))          # the logger's dataset wins
    for event in ('start', 'end'):
        session.on_event({'event': event, 'episode': 2})
    record, written = session.annotate(label='success')
    assert written and record['index'] == 1
    assert [e['label'] for e in load_episodes(tmp_path, DATASET_ID)] == [None, 'success']


def test_episode_numbers_of_an_arrow_dataset(tmp_path):
    rec = EpisodeRecorder(tmp_path, DATASET_ID, data_format='arrow')
    for n in (4, 5):
        _record(rec, n, seed=n)
    assert ann.episode_numbers(tmp_path, DATASET_ID) == [4, 5]
    with pytest.raises(FileNotFoundError):
        ann.episode_numbers(tmp_path, 'awopt/none-v0')


def test_session_note_between_episodes_and_a_failing_write(tmp_path):
    _dataset(tmp_path, [1])
    session = ann.OperatorSession(tmp_path, DATASET_ID)
    session.on_saved(_saved(1, 0, tmp_path))
    for event in ('start', 'end'):
        session.on_event({'event': event, 'episode': 1})
    record, written = session.annotate(note='after the end', note_running=True)
    assert written and record['episode'] == 1 and record['index'] == 0
    session.journal.unlink()
    session.journal.mkdir()          # an unwritable journal: the record stays queued
    record, written = session.annotate(label='failure')
    assert not written and len(session.pending) == 1 and session.write_error
    with pytest.raises(OSError):
        session.flush()
    session.journal.rmdir()
    assert session.flush() == 1 and not session.pending and session.write_error is None
    assert load_episodes(tmp_path, DATASET_ID)[0]['label'] == 'failure'


def test_a_failed_write_is_queued_once_and_written_once(tmp_path, monkeypatch):
    """A journal write that fails (a full disk) leaves the record queued, and annotate says
    so instead of raising: a caller told 'failed' would send it again and the retry would
    write it twice."""
    import errno
    (tmp_path / 'datasets' / DATASET_ID).mkdir(parents=True)
    session = ann.OperatorSession(tmp_path, DATASET_ID, count=lambda *_: 0)
    for event in ('start', 'end'):
        session.on_event({'event': event, 'episode': 1})
    real = ann.append_record

    def full(path, record):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(ann, 'append_record', full)
    record, written = session.annotate(note='first try')
    assert not written and 'No space left' in session.write_error
    assert session.pending == [record]
    monkeypatch.setattr(ann, 'append_record', real)
    assert session.flush() == 1 and session.write_error is None
    assert [r['note'] for r in ann.read_journal(session.journal)] == ['first try']


def test_an_episode_reported_not_written_cancels_its_records(tmp_path):
    """A record made before the logger's report (after_index) for an episode that is then
    NOT written never applies to a later episode with the same number."""
    rec = _dataset(tmp_path, [1, 2])                  # a first recording: episodes 1, 2
    session = ann.OperatorSession(tmp_path, DATASET_ID)
    # a second recording into the run dir numbers from 1 again; its episode 1 is refused
    session.on_event({'event': 'start', 'episode': 1, 'seed': 0, 'stamp_s': 100.0})
    session.on_event({'event': 'end', 'episode': 1, 'stamp_s': 110.0})
    record, written = session.annotate(discarded=True, reason='operator pressed discard')
    assert written and record['after_index'] == 2 and record['id']
    assert (record['seed'], record['start_stamp_s'], record['end_stamp_s']) == (0, 100.0, 110.0)
    session.on_saved(_saved(1, None, tmp_path, written=False))
    assert session.cancelled and session.cancelled[0][1] == [record['id']]
    records = ann.read_journal(session.journal)
    assert records[-1]['cancels'] == [record['id']] and 'No space' in records[-1]['reason']
    # a third recording: its episode 1 (same seed, same simulated stamps) lands at index 2
    _record(rec, 1, seed=0)
    assert [(e['episode'], e['discarded']) for e in load_episodes(tmp_path, DATASET_ID)] == [
        (1, False), (2, False), (1, False)]


def test_a_queued_record_of_an_episode_not_written_is_dropped(tmp_path):
    session = ann.OperatorSession(tmp_path, DATASET_ID)       # no dataset folder yet
    for event in ('start', 'end'):
        session.on_event({'event': event, 'episode': 1})
    record, written = session.annotate(label='success')
    assert not written and session.pending == [record]
    session.on_saved(_saved(1, None, tmp_path, written=False))
    assert not session.pending and session.cancelled[0][1] == [record['id']]
    _dataset(tmp_path, [1])                            # a later episode 1 is written
    assert session.flush() == 0 and not session.journal.exists()


def test_after_index_records_check_the_seed_and_stamps():
    """Without the logger's report (no logger ran), a record still does not go to a later
    episode of that number whose seed or first stamp shows it is another one."""
    record = ann.make_record(1, after_index=2, discarded=True, seed=7, start_stamp_s=50.0,
                             end_stamp_s=60.0)
    numbers = [1, 2, 1]
    for ident, applies in (({'seed': 8, 'stamp_s': 55.0}, False),     # another seed
                           ({'seed': 7, 'stamp_s': 75.0}, False),     # after its end
                           ({'seed': 7, 'stamp_s': 40.0}, False),     # before its start
                           ({'seed': 7, 'stamp_s': 55.0}, True),
                           ({'seed': None, 'stamp_s': None}, True)):  # unknown: by number
        identities = [None, None, dict(ident, episode=1)]
        assert ann.fold([record], numbers, identities)[2]['discarded'] is applies, ident
    assert ann.fold([record], numbers)[2]['discarded']


def test_episode_identities_read_the_seed_and_first_stamp(tmp_path):
    _dataset(tmp_path, [3, 4])
    assert ann.episode_identities(tmp_path, DATASET_ID) == [
        {'episode': 3, 'seed': 0, 'stamp_s': 100.0}, {'episode': 4, 'seed': 1, 'stamp_s': 100.0}]
    assert ann.episode_numbers(tmp_path, DATASET_ID) == [3, 4]


def test_annotate_some_episodes_resolves_against_the_whole_dataset(tmp_path):
    """A reader of only the new episodes (finetune) passes the whole dataset's identities:
    a record pending for an earlier episode 3 must not go to a new episode 3."""
    numbers = [1, 2, 3, 4, 5, 1, 2, 3]
    path = tmp_path / ann.JOURNAL_NAME
    ann.append_record(path, ann.make_record(3, after_index=2, discarded=True))
    identities = [{'episode': n, 'seed': None, 'stamp_s': None} for n in numbers]
    new = [{'id': i, 'episode': numbers[i]} for i in range(5, 8)]
    ann.annotate(new, path, identities)
    assert not any(ep['discarded'] for ep in new)
    # without them, the unread earlier episodes are unknown: the record stays unresolved
    assert not any(ep['discarded'] for ep in ann.annotate([dict(ep) for ep in new], path))
    old = [{'id': i, 'episode': numbers[i]} for i in range(0, 3)]
    assert [ep['discarded'] for ep in ann.annotate(old, path, identities)] == [
        False, False, True]


def test_a_bag_is_matched_to_its_dataset_episode():
    from awopt_ros.learning.success_data import _bag_annotation
    idents = [{'episode': 1, 'seed': 3, 'stamp_s': 1.5}, {'episode': 1, 'seed': 3,
                                                          'stamp_s': 30.5}]
    plain = {'label': None, 'discarded': False, 'notes': []}
    gone = {'label': None, 'discarded': True, 'notes': []}
    tables = [(DATASET_ID, idents, [gone, plain])]
    assert _bag_annotation(tables, 2, None, None) is None
    assert _bag_annotation(tables, 1, {'seed': 3, 'stamp_s': 1.0}, {'stamp_s': 9.0}) is gone
    assert _bag_annotation(tables, 1, {'seed': 3, 'stamp_s': 30.0}, None) is plain
    assert _bag_annotation(tables, 1, {'seed': 3}, None) == 'ambiguous'
    assert _bag_annotation([(DATASET_ID, idents, [plain, dict(plain)])], 1, None, None) \
        == plain
