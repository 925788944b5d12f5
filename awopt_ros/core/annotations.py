"""Operator annotations of recorded episodes: labels, discards and notes in a journal.

An operator's verdict on an episode (``awopt label``, ``awopt discard``, ``awopt note``, or the
``operator`` node's services) is never written into the Minari HDF5 file, which the logger
may be appending to at the same moment. It goes to an append-only JSON-lines journal next to
the dataset's ``data/`` folder::

    <run>/datasets/<dataset_id>/annotations.jsonl

One JSON object per line, appended under an exclusive ``flock`` on the journal, flushed and
``fsync``-ed before the lock is released; earlier lines are never rewritten. A record::

    {"time": "2026-12-07T03:40:00.123Z", "source": "cli", "episode": 2, "index": 1,
     "label": "failure", "discarded": true, "reason": "...", "note": "..."}
    {"time": "...", "source": "operator", "episode": 3, "after_index": 2, "seed": 7,
     "start_stamp_s": 812.4, "end_stamp_s": 830.0, "id": "3f2a9c0d1e4b", "label": "success"}

- ``episode`` (int): the episode manager's number (``options.episode``, ``bags/episode_NNNN``).
- ``index`` (int, optional): the dataset's episode index (``id`` of :func:`load_episodes`).
  The episode numbers of one dataset can repeat (a second ``awopt demo`` or ``awopt collect``
  into the same run directory numbers its episodes from 1 again), the index never does. The
  command line always writes it (a repeated number is refused with the indices to use). The
  operator node writes it when the logger has reported the episode saved
  (``/logger/episode_saved``), else ``after_index`` instead:
- ``after_index`` (int, optional): the dataset held this many episodes when the record was
  made; the record is for the first episode numbered ``episode`` at an index >= it (the
  episode still being recorded or written). Until that episode is in the dataset the record
  is pending (ignored). The operator node adds what else tells that episode from a later one
  with the same number (a later recording into the same run directory): ``seed`` (the start
  event's seed) and ``start_stamp_s`` / ``end_stamp_s`` (the start and end events' stamps, s):
  a dataset episode whose seed differs, or whose first step's ``stamp_s`` lies outside that
  span, is not it. Stamps and seeds can repeat in simulated-time runs; there the node's
  cancelling record is what protects a later episode (below).
- ``id`` (str, operator node records): the record's own id; ``cancels`` (list of ids): a
  record that cancels earlier ones. The operator node writes it when the logger reports an
  episode it annotated with ``after_index`` as not written (refused, no steps, a write error),
  so that the record never applies to a later episode of that number.
- ``label``: 'success', 'failure', or null (the label cleared); ``discarded``: bool (false =
  undo), with an optional ``reason``; ``note``: text; ``source``: who wrote it ('cli',
  'operator' node).

Reading (:func:`read_journal`, :func:`fold`): per episode the LAST record that sets a field
wins (``label``, ``discarded``); notes accumulate in journal order (a discard's reason is
kept as the note ``'discarded: <reason>'``). A line that is not a JSON object (a record cut
short by a crash or a full disk) is skipped with a warning, never fatal; the next append
first ends such a line so that the new record stands on a line of its own. A record whose
``index`` names an episode that does not exist, or one numbered differently, is skipped with
a warning.

What training does with them (:func:`training_episodes`, used by every loader that feeds a
learner): discarded episodes are left out; a labelled episode's rewards and flags are those
the logger would have written for that outcome:

- ``'success'``: reward 1.0 on the last step (0 elsewhere), ``terminations[-1] = True``,
  ``truncations[-1] = False`` (success ends the grasping MDP);
- ``'failure'``: every reward 0; an episode recorded as a success (reward > 0 on its last
  step) becomes truncated (``terminations[-1] = False``, ``truncations[-1] = True``: the stack
  stopped it, the MDP had not ended); one that failed already keeps its flags (e.g. the
  policy's terminate action stays a termination with reward 0).

The recorded arrays are kept by :func:`awopt_ros.core.dataset.load_episodes` (tools that show
episodes show what was recorded, flagged with ``label``, ``discarded`` and ``notes``); only
:func:`training_episodes` applies the labels. No rclpy here.
"""
import datetime
import errno
import fcntl
import json
import logging
import math
import os
import uuid
from pathlib import Path

import numpy as np

_LOG = logging.getLogger(__name__)

#: The journal's file name, in the dataset's folder (next to ``data/``).
JOURNAL_NAME = 'annotations.jsonl'
#: The labels an operator gives.
LABELS = ('success', 'failure')
#: Sources of records.
SOURCES = ('cli', 'operator')


class UnknownEpisodeError(ValueError):
    """An annotation names an episode the dataset does not have, or a number that several of
    its episodes share (the message lists what exists, or the indices to choose from)."""


def journal_path(root_dir, dataset_id):
    """Return ``<root_dir>/datasets/<dataset_id>/annotations.jsonl`` (a Path)."""
    return Path(root_dir) / 'datasets' / str(dataset_id) / JOURNAL_NAME


def _now_iso():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime('%Y-%m-%dT%H:%M:%S.') + f'{now.microsecond // 1000:03d}Z'


_UNSET = object()


def make_record(episode, *, index=None, after_index=None, label=_UNSET, discarded=None,
                reason=None, note=None, source='cli', time=None, seed=None, start_stamp_s=None,
                end_stamp_s=None, record_id=None):
    """Return a journal record (dict) for episode number ``episode``.

    Args:
        episode: the episode manager's number (int >= 0).
        index: the dataset index it has (int >= 0), when known.
        after_index: the dataset's episode count when the record was made (int >= 0); only
            without ``index``.
        label: 'success', 'failure' or None (clears the label); left out: unchanged.
        discarded: True (discard), False (undo a discard) or None (unchanged).
        reason: why it was discarded (str; only with ``discarded``).
        note: a note (str, not empty after stripping).
        source: 'cli' or 'operator'.
        time: ISO 8601 UTC text (default: now).
        seed, start_stamp_s, end_stamp_s: what identifies an ``after_index`` episode (the
            start event's seed and stamp, the end event's stamp, s; see the module doc).
        record_id: the record's ``id`` (str), for a later cancelling record.

    Raises:
        ValueError: a bad value (the message names it), or a record that changes nothing.
    """
    episode = int(episode)
    if episode < 0:
        raise ValueError(f'episode must be >= 0, got {episode}')
    record = {'time': time or _now_iso(), 'source': str(source), 'episode': episode}
    if source not in SOURCES:
        raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
    if index is not None:
        if int(index) < 0:
            raise ValueError(f'index must be >= 0, got {index}')
        record['index'] = int(index)
    elif after_index is not None:
        if int(after_index) < 0:
            raise ValueError(f'after_index must be >= 0, got {after_index}')
        record['after_index'] = int(after_index)
        if seed is not None:
            record['seed'] = int(seed)
        for key, value in (('start_stamp_s', start_stamp_s), ('end_stamp_s', end_stamp_s)):
            if value is not None:
                record[key] = float(value)
    if record_id is not None:
        record['id'] = str(record_id)
    if label is not _UNSET:
        if label is not None and label not in LABELS:
            raise ValueError(f'label must be one of {LABELS} or None, got {label!r}')
        record['label'] = label
    if discarded is not None:
        record['discarded'] = bool(discarded)
        if reason:
            record['reason'] = str(reason)
    elif reason:
        raise ValueError('a reason goes with a discard')
    if note is not None:
        if not str(note).strip():
            raise ValueError('a note must not be empty')
        record['note'] = str(note)
    if not any(k in record for k in ('label', 'discarded', 'note')):
        raise ValueError('a record needs a label, a discard or a note')
    return record


def make_cancel(episode, ids, reason, source='operator', time=None):
    """Return a record that cancels the records ``ids`` (list of their ``id``) of episode
    number ``episode``, saying why (``reason``: str)."""
    ids = [str(i) for i in ids]
    if not ids:
        raise ValueError('nothing to cancel')
    return {'time': time or _now_iso(), 'source': str(source), 'episode': int(episode),
            'cancels': ids, 'reason': str(reason)}


def new_record_id():
    """Return a fresh record ``id`` (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def append_record(path, record):
    """Append ``record`` (dict, :func:`make_record`) as one line to the journal ``path``.

    Creates the journal (and ``fsync``-s its folder) when it does not exist. Holds an
    exclusive ``flock`` on the journal while it writes, so that concurrent writers (the
    operator node, ``awopt label``) never interleave; a last line cut short by a crash is
    ended first. The line is flushed and ``fsync``-ed before the lock is released.

    Raises:
        FileNotFoundError: the dataset's folder (``path``'s parent) does not exist.
        OSError: the write failed (e.g. ENOSPC); the journal then holds at most a partial
            last line, which readers skip.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f'no dataset folder {path.parent}')
    line = (json.dumps(record, sort_keys=True) + '\n').encode('utf-8')
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b'\n':
                line = b'\n' + line       # end a line a crash cut short
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if created:
        from awopt_ros.core.paths import fsync_dir
        fsync_dir(path.parent)
    return record


def read_journal(path):
    """Return the records of journal ``path`` (list of dict, in order); [] when none.

    Lines that are not a JSON object with an int ``episode`` (e.g. cut short by a crash) are
    skipped with a warning (logged, naming the file and line); empty lines are ignored.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for number, raw in enumerate(data.split(b'\n'), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode('utf-8'))
            if not isinstance(record, dict) or isinstance(record.get('episode'), bool) \
                    or not isinstance(record.get('episode'), int):
                raise ValueError('not a record with an int episode')
        except (ValueError, UnicodeDecodeError) as exc:
            _LOG.warning('%s line %d skipped (not a valid annotation record: %s): %r',
                         path, number, exc, raw[:80])
            continue
        records.append(record)
    return records


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def same_episode(record, identity, tolerance_s=1e-6):
    """True unless ``identity`` (dict ``seed``, ``stamp_s`` = the first step's stamp, s; None
    or missing values: unknown) shows that the dataset episode is not the one ``record``'s
    ``seed`` / ``start_stamp_s`` / ``end_stamp_s`` describe."""
    if not identity:
        return True
    seed, known = _number(record.get('seed')), _number(identity.get('seed'))
    if seed is not None and known is not None and int(seed) != int(known):
        return False
    first = _number(identity.get('stamp_s'))
    if first is None or not math.isfinite(first):
        return True
    start, end = _number(record.get('start_stamp_s')), _number(record.get('end_stamp_s'))
    if start is not None and first < start - tolerance_s:
        return False
    return not (end is not None and first > end + tolerance_s)


def _target(record, numbers, identities=None):
    """Return the dataset index ``record`` is for, or None (pending or stale)."""
    episode = record['episode']
    index = record.get('index')
    if isinstance(index, int) and not isinstance(index, bool):
        if index < len(numbers) and numbers[index] in (episode, None):
            return index
        _LOG.warning('annotation for episode %d at index %d skipped: the dataset has %s',
                     episode, index, f'episode {numbers[index]} there'
                     if index < len(numbers) else f'{len(numbers)} episodes')
        return None
    after = record.get('after_index', 0)
    after = after if isinstance(after, int) and after >= 0 else 0
    for i in range(after, len(numbers)):
        if numbers[i] is None:
            return None    # an episode of unknown number (not read): it may be this one
        if numbers[i] == episode and same_episode(
                record, identities[i] if identities and i < len(identities) else None):
            return i
    return None        # the episode is not in the dataset (yet)


def fold(records, numbers, identities=None):
    """Return the annotations of each dataset episode from journal ``records``.

    Args:
        records: list of records (:func:`read_journal`), in journal order.
        numbers: the episode number of each dataset index (list; None where unknown), for
            every episode of the dataset (an ``after_index`` record is resolved against the
            whole list; one that meets an unknown number before its episode stays
            unresolved rather than go to a later episode).
        identities: optional list (by index) of dicts ``seed`` / ``stamp_s`` (the first
            step's stamp), :func:`episode_identities`, checked against the identity an
            ``after_index`` record carries (:func:`same_episode`).

    Returns:
        list (one per index) of dicts ``label`` ('success' | 'failure' | None),
        ``discarded`` (bool), ``notes`` (list of str).
    """
    out = [{'label': None, 'discarded': False, 'notes': []} for _ in numbers]
    cancelled = {str(i) for r in records if isinstance(r.get('cancels'), list)
                 for i in r['cancels']}
    for record in records:
        if 'cancels' in record or ('id' in record and str(record['id']) in cancelled):
            continue
        index = _target(record, numbers, identities)
        if index is None:
            continue
        state = out[index]
        if 'label' in record and record['label'] in (*LABELS, None):
            state['label'] = record['label']
        if 'discarded' in record:
            state['discarded'] = bool(record['discarded'])
            if record['discarded'] and record.get('reason'):
                state['notes'].append(f'discarded: {record["reason"]}')
        if record.get('note'):
            state['notes'].append(str(record['note']))
    return out


def _identity_of(ep):
    stamps = ep.get('stamp_s')
    first = float(stamps[0]) if stamps is not None and len(stamps) else None
    return {'episode': ep.get('episode'), 'seed': ep.get('seed'), 'stamp_s': first}


def annotate(episodes, path, identities=None):
    """Add ``label``, ``discarded`` and ``notes`` (see :func:`fold`) from the journal ``path``
    to each episode dict of ``episodes`` (in place; episode ``id`` = dataset index, ``episode``
    = number); return ``episodes``. Episodes of a dataset without a journal get None, False,
    [].

    ``episodes`` must be every episode of the dataset unless ``identities`` gives the whole
    dataset (:func:`episode_identities`, by index; episodes past its end are taken from
    ``episodes``): a reader of only some episodes (e.g. the new ones) passes it, else an
    ``after_index`` record may be given to the wrong episode.
    """
    episodes = list(episodes)
    if not episodes:
        return episodes
    size = max(int(ep['id']) for ep in episodes) + 1
    idents = list(identities or [])
    idents += [None] * max(0, size - len(idents))
    for ep in episodes:
        if idents[int(ep['id'])] is None or identities is None:
            idents[int(ep['id'])] = _identity_of(ep)
    numbers = [None if i is None else i.get('episode') for i in idents]
    folded = fold(read_journal(path), numbers, idents)
    for ep in episodes:
        ep.update(folded[int(ep['id'])])
    return episodes


def episode_numbers(root_dir, dataset_id):
    """Return the episode manager's number of each episode of the dataset, by index (list of
    int or None): the ``episode`` of :func:`episode_identities`.

    Raises:
        FileNotFoundError: no dataset (no ``data/metadata.json``) at that place.
    """
    return [i['episode'] for i in episode_identities(root_dir, dataset_id)]


def episode_identities(root_dir, dataset_id):
    """Return what identifies each episode of the dataset, by index: a list of dicts
    ``episode`` (the episode manager's number), ``seed`` (int) and ``stamp_s`` (the first
    step's stamp, s), each None where unknown. Read from the HDF5 file's episode attributes
    and one element of ``infos/stamp_s``, without the episode arrays and without HDF5 file
    locking (so that it never blocks, nor is blocked by, a logger appending).

    Episodes the logger is appending at that moment may be missing (the count comes from
    ``data/metadata.json``, written after the episode).

    Raises:
        FileNotFoundError: no dataset (no ``data/metadata.json``) at that place.
    """
    import h5py
    data = Path(root_dir) / 'datasets' / str(dataset_id) / 'data'
    meta = data / 'metadata.json'
    if not meta.is_file():
        raise FileNotFoundError(errno.ENOENT, f'no dataset {dataset_id} under {root_dir} '
                                              f'(no {meta})')
    total = int(json.loads(meta.read_text())['total_episodes'])
    if not (data / 'main_data.hdf5').is_file():     # another Minari storage format
        from minari import MinariDataset
        metadata = MinariDataset(data).storage.get_episode_metadata(range(total))
        return [{'episode': None if (m.get('options') or {}).get('episode') is None
                 else int(m['options']['episode']),
                 'seed': None if m.get('seed') is None else int(m['seed']), 'stamp_s': None}
                for m in metadata]
    out = []
    with h5py.File(data / 'main_data.hdf5', 'r', locking=False) as f:
        for i in range(total):
            group = f.get(f'episode_{i}')
            value = None if group is None else group.attrs.get('options/episode')
            seed = None if group is None else group.attrs.get('seed')
            stamps = None if group is None else group.get('infos/stamp_s')
            first = float(stamps[0]) if stamps is not None and stamps.shape[0] else None
            out.append({'episode': None if value is None else int(value),
                        'seed': None if seed is None else int(seed), 'stamp_s': first})
    return out


def resolve_episode(numbers, episode, index=None):
    """Return the dataset index of episode number ``episode`` (a command's ``--episode``).

    Args:
        numbers: the episode number of each dataset index (list; None where unknown).
        episode: the number asked for.
        index: the dataset index, to choose among episodes that share a number (optional;
            must then hold that number).

    Raises:
        UnknownEpisodeError: no such episode; a number several episodes share (the message
            lists their indices) without ``index``; an ``index`` that holds another number.
    """
    episode = int(episode)
    matches = [i for i, n in enumerate(numbers) if n == episode]
    known = sorted({n for n in numbers if n is not None})
    if index is not None:
        index = int(index)
        if not 0 <= index < len(numbers):
            raise UnknownEpisodeError(f'no dataset index {index} (the dataset has '
                                      f'{len(numbers)} episodes, indices 0..{len(numbers) - 1})')
        if numbers[index] != episode:
            raise UnknownEpisodeError(f'dataset index {index} is episode {numbers[index]}, '
                                      f'not {episode}')
        return index
    if not matches:
        listed = _ranges(known) if known else 'none'
        raise UnknownEpisodeError(f'no episode {episode} in the dataset (episodes: {listed})')
    if len(matches) > 1:
        raise UnknownEpisodeError(
            f'episode number {episode} is in the dataset {len(matches)} times (dataset '
            f'indices {", ".join(map(str, matches))}: several recordings into one run '
            'directory); add --index with the one you mean')
    return matches[0]


def _ranges(values):
    """'1-3, 7' for [1, 2, 3, 7]."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f'{start}-{v}')
            start = None
    return ', '.join(parts)


def labelled(episode):
    """Return ``episode`` with the rewards and flags of its operator ``label`` (see the module
    doc); the episode itself when it has no label. The arrays are copied, never changed in
    place."""
    label = episode.get('label')
    if label not in LABELS:
        return episode
    rewards = np.array(episode['rewards'], dtype=np.float64, copy=True)
    terms = np.array(episode.get('terminations', np.zeros(len(rewards), bool)), dtype=bool,
                     copy=True)
    truncs = np.array(episode.get('truncations', np.zeros(len(rewards), bool)), dtype=bool,
                      copy=True)
    if len(rewards) == 0:
        return episode
    recorded_success = bool(rewards[-1] > 0)
    rewards[:] = 0.0
    if label == 'success':
        rewards[-1] = 1.0
        terms[-1], truncs[-1] = True, False
    elif recorded_success:
        terms[-1], truncs[-1] = False, True
    return dict(episode, rewards=rewards, terminations=terms, truncations=truncs)


def relabels(episode):
    """True when ``episode``'s label changes its recorded rewards or flags."""
    out = labelled(episode)
    if out is episode:
        return False
    return not (np.array_equal(out['rewards'], episode['rewards'])
                and np.array_equal(out['terminations'], episode['terminations'])
                and np.array_equal(out['truncations'], episode['truncations']))


def training_episodes(episodes):
    """Return ``(episodes for a learner, stats)``: the discarded ones left out, the labelled
    ones with their label's rewards and flags (:func:`labelled`).

    Episodes without the annotation keys (other sources, e.g. simulated rollouts) are kept as
    they are. ``stats``: ``episodes`` (given), ``discarded`` (left out), ``labelled`` (kept
    with a label), ``relabelled`` (of those, rewards or flags changed), ``kept``.
    """
    episodes = list(episodes)
    kept = [labelled(ep) for ep in episodes if not ep.get('discarded')]
    stats = {'episodes': len(episodes), 'discarded': len(episodes) - len(kept),
             'labelled': sum(ep.get('label') in LABELS for ep in kept),
             'relabelled': sum(relabels(ep) for ep in episodes if not ep.get('discarded')),
             'kept': len(kept)}
    return kept, stats


def summary_line(stats):
    """One line for a training log: how many episodes the operator's annotations changed."""
    return (f'operator annotations: {stats["discarded"]} of {stats["episodes"]} episodes '
            f'discarded, {stats["labelled"]} labelled ({stats["relabelled"]} with rewards '
            f'changed); training on {stats["kept"]}')


def dataset_count(root_dir, dataset_id):
    """Return the episodes the dataset's ``data/metadata.json`` lists (0 when there is no
    dataset yet, or the file cannot be read at that moment, e.g. being rewritten)."""
    meta = Path(root_dir) / 'datasets' / str(dataset_id) / 'data' / 'metadata.json'
    try:
        return int(json.loads(meta.read_text())['total_episodes'])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class NoEpisodeError(ValueError):
    """The operator node has no episode to annotate (none ended yet, or it was not
    recorded); the message says which."""


class OperatorSession:
    """What the ``operator`` node knows of the run, and its journal writes (ROS-free).

    Fed the ``/episode/event`` events (:meth:`on_event`) and the logger's
    ``/logger/episode_saved`` reports (:meth:`on_saved`); :meth:`annotate` makes a record for
    the last ended episode (a label, a discard) or for the running one (a note) and appends
    it to the journal of the dataset the logger writes (``dataset_root`` / ``dataset_id`` of
    its reports, else the node's ``output_dir`` / dataset id).

    Episode identity: when the logger has reported the episode saved, the record carries its
    dataset ``index``; before that (an episode still running, or ended and not written yet),
    ``after_index`` = the dataset's episode count when that episode started (it cannot be in
    the dataset before its start), so that a number repeated in the dataset is not mistaken,
    with the start event's ``seed`` and ``stamp_s`` and the end event's ``stamp_s`` (see the
    module doc). When the logger then reports that episode as not written (refused, no
    steps, a write error), its ``after_index`` records are cancelled (:meth:`on_saved`: queued
    ones dropped, written ones cancelled by a ``cancels`` record), so that they never apply to
    a later episode with the same number.
    A record whose dataset folder does not exist yet (the logger creates it with its first
    episode), or whose write failed (e.g. ENOSPC; :attr:`write_error` says why), is queued and
    written by :meth:`flush` (called on every report and by the node's timer): a record
    :meth:`annotate` returned is written exactly once, sooner or later.

    Args:
        root_dir: the run directory (the logger's ``output_dir``).
        dataset_id: the Minari dataset id (the logger's).
        count: ``count(root_dir, dataset_id) -> int`` (default :func:`dataset_count`).
    """

    def __init__(self, root_dir, dataset_id, count=dataset_count):
        self.root_dir = Path(root_dir)
        self.dataset_id = str(dataset_id)
        self._count = count
        self.running = None          # episode number running (None between episodes)
        self.last_ended = None       # episode number that ended last
        self._start_count = {}       # episode number -> dataset count at its start
        self._saved = {}             # episode number -> the logger's latest report of it
        self._saved_total = 0        # dataset episodes per the reports (index + 1)
        self.pending = []            # records not written yet (no dataset folder, a failure)
        self.written = 0
        self.write_error = None      # text of the last failed write (None after a success)
        self._events = {}            # episode number -> {'seed', 'start_stamp_s', 'end_stamp_s'}
        self._unresolved = {}        # episode number -> [(id, record)] written with after_index
        self.cancelled = []          # (episode, ids, reason) of the cancellations made

    @property
    def journal(self):
        """The journal's path (:func:`journal_path`)."""
        return journal_path(self.root_dir, self.dataset_id)

    def known_count(self):
        """Return the dataset's episode count as known now (reports and metadata.json)."""
        return max(self._saved_total, self._count(self.root_dir, self.dataset_id))

    def on_event(self, event):
        """Take an ``/episode/event`` dict (``start`` / ``end``; others are ignored)."""
        kind, episode = event.get('event'), event.get('episode')
        if not isinstance(episode, int) or isinstance(episode, bool):
            return
        stamp = _number(event.get('stamp_s'))
        if kind == 'start':
            if episode != self.running:
                if episode in self._start_count:   # its number again: a new episode
                    self._saved.pop(episode, None)
                    self._unresolved.pop(episode, None)
                self._start_count[episode] = self.known_count()
                seed = event.get('seed')
                self._events[episode] = {
                    'seed': seed if isinstance(seed, int) and not isinstance(seed, bool)
                    else None, 'start_stamp_s': stamp, 'end_stamp_s': None}
            self.running = episode
        elif kind == 'end':
            self.last_ended = episode
            if stamp is not None and episode in self._events:
                self._events[episode]['end_stamp_s'] = stamp
            if self.running == episode:
                self.running = None

    def on_saved(self, saved):
        """Take a ``/logger/episode_saved`` dict: remembers the episode's dataset index and
        the dataset the logger writes; writes queued records that can be now.

        A report of an episode NOT written cancels the records made for it with
        ``after_index`` (queued ones are dropped, written ones get a ``cancels`` record;
        :attr:`cancelled` lists them), so that they never apply to a later episode.

        Returns:
            int: queued records written now (:meth:`flush`).
        """
        episode = saved.get('episode')
        if saved.get('dataset_root') and saved.get('dataset_id'):
            self.root_dir = Path(saved['dataset_root'])
            self.dataset_id = str(saved['dataset_id'])
        if isinstance(episode, int) and not isinstance(episode, bool):
            self._saved[episode] = saved
            made = self._unresolved.pop(episode, [])
            if made and (not saved.get('dataset_written')
                         or saved.get('dataset_index') is None):
                self._cancel(episode, made, saved.get('write_error') or 'no steps')
        index = saved.get('dataset_index')
        if isinstance(index, int) and not isinstance(index, bool):
            self._saved_total = max(self._saved_total, index + 1)
        return self.flush()

    def _cancel(self, episode, made, why):
        """Cancel the records ``made`` (list of (id, record)) of episode ``episode``."""
        ids = {rid for rid, _ in made}
        queued = [r for r in self.pending if r.get('id') in ids]
        self.pending = [r for r in self.pending if r.get('id') not in ids]
        written = [rid for rid, rec in made if not any(rec is q for q in queued)]
        reason = f'episode {episode} was not written to the dataset ({why})'
        if written:
            self.pending.append(make_cancel(episode, written, reason))
        self.cancelled.append((episode, sorted(ids), reason))
        _LOG.warning('%d annotation record(s) of episode %d cancelled (%d not written yet): '
                     '%s', len(ids), episode, len(queued), reason)

    def _where(self, episode):
        """Return ``{'index': I}`` or ``{'after_index': K}`` for episode number ``episode``.

        Raises:
            NoEpisodeError: the logger reported that episode as not recorded.
        """
        saved = self._saved.get(episode)
        if saved is not None:
            if not saved.get('dataset_written') or saved.get('dataset_index') is None:
                why = saved.get('write_error') or 'no steps'
                raise NoEpisodeError(f'episode {episode} is not in the dataset ({why})')
            return {'index': int(saved['dataset_index'])}
        return {'after_index': int(self._start_count.get(episode, 0)),
                **self._events.get(episode, {})}

    def annotate(self, *, note_running=False, **fields):
        """Make and write (or queue) a record for the last ended episode (``note_running``:
        the running one when an episode runs); return ``(record, written)``.

        ``written`` False: the record is queued (no dataset folder yet, or the write failed:
        :attr:`write_error` then says why) and :meth:`flush` writes it later; it is never
        dropped, so the caller must not send it again. ``'index' in record``: the episode is
        in the dataset; else (``after_index``) it is not yet.

        Raises:
            NoEpisodeError: no such episode (none ended yet), or it was not recorded.
            ValueError: bad fields (:func:`make_record`).
        """
        episode = self.running if note_running and self.running is not None \
            else self.last_ended
        if episode is None:
            raise NoEpisodeError('no episode has ended yet' if not note_running
                                 else 'no episode is running or has ended yet')
        record = make_record(episode, source='operator', record_id=new_record_id(),
                             **self._where(episode), **fields)
        if 'after_index' in record:
            self._unresolved.setdefault(episode, []).append((record['id'], record))
        self.pending.append(record)
        try:
            self.flush()
        except OSError:
            pass                      # queued; write_error says why, flush() retries
        return record, not any(r is record for r in self.pending)

    def flush(self):
        """Write the queued records whose dataset folder exists now; return how many.

        Raises:
            OSError: a write failed other than for a missing folder (the record stays queued;
                :attr:`write_error` says why).
        """
        done = 0
        try:
            while self.pending:
                try:
                    append_record(self.journal, self.pending[0])
                except FileNotFoundError:
                    break
                except OSError as exc:
                    self.write_error = str(exc)
                    raise
                self.pending.pop(0)
                done += 1
                self.write_error = None
        finally:
            self.written += done
        return done
