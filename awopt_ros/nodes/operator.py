"""operator: the operator's label, discard and notes of episodes, while the stack runs.

Services (act on the last ENDED episode; the answer's message names it):

- ``/operator/label`` (std_srvs/SetBool): ``data`` true = success, false = failure;
- ``/operator/discard`` (std_srvs/Trigger): leave the episode out of training.

Topic ``/operator/note`` (std_msgs/String): a note for the running episode, or the last ended
one between episodes. A note that comes before this node knows of any episode (the first
start event and the note race on separate topics) is held for ``EARLY_NOTE_HOLD_S`` and goes
to the episode that starts meanwhile (2 s; refused, and logged, when none does). Each record
is appended to the dataset's annotations journal
(:mod:`awopt_ros.core.annotations`: ``<output_dir>/datasets/<id>/annotations.jsonl``,
``flock`` + ``fsync``, never touching the HDF5 the logger appends to) and published on
``/operator/annotation`` (std_msgs/String JSON: the record plus ``dataset_root``,
``dataset_id`` and ``written``; reliable, transient local).

Which episode: from ``/episode/event`` (``start`` / ``end``). Which dataset: the logger's,
from its ``/logger/episode_saved`` reports (``dataset_root``, ``dataset_id``, and the episode's
``dataset_index``), and until the first one from this node's ``output_dir`` and
``dataset_name``, which the bringups (``awopt_ros.launcher.with_operator_overrides``, the
launch files) set to the logger's: a params file needs no ``operator`` section. A label
before the logger has written the episode is kept with the dataset's count at the episode's
start (``after_index``), the start event's seed and stamp and the end event's stamp, and
applies once the episode is in the dataset; when the logger then reports that episode as not
written, the record is cancelled (logged, and published on ``/operator/annotation`` as a
``cancels`` record). A record for a dataset whose folder does not exist yet, or whose journal
write failed (e.g. a full disk), is queued and retried every ``flush_period_s``: the answer is
then still ``success`` true, with ``queued`` and the reason in its message (do not send it
again: it will be written once). The answer's message says whether the episode is in the
dataset yet (``in the dataset at index I``, or ``not in the dataset yet``). An episode the
logger reported as not recorded is refused (``success`` false: nothing is written). The logic
is :class:`awopt_ros.core.annotations.OperatorSession`; this node only converts messages.
"""
import json
import time

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from awopt_ros.core.annotations import NoEpisodeError, OperatorSession
from awopt_ros.core.dataset import dataset_id_for
from awopt_ros.ros import qos
from awopt_ros.ros.params import declare
from awopt_ros.ros.run import spin_node

EVENT = '/episode/event'
SAVED = '/logger/episode_saved'
ANNOTATION = '/operator/annotation'
#: How long a note that came before any episode was known waits for the first start (s).
EARLY_NOTE_HOLD_S = 2.0


class OperatorNode(Node):
    """Label / discard services and a note topic that write the annotations journal."""

    def __init__(self, **kwargs):
        super().__init__('operator', **kwargs)
        output_dir = declare(self, 'output_dir', 'runs/latest',
                             "Run directory: the logger's output_dir (its datasets/ hold the "
                             "journal); the logger's reports take precedence.", read_only=True)
        name = declare(self, 'dataset_name', 'kuka-grasp',
                       "The logger's dataset name ('awopt/<name>-v0', or a full id).",
                       read_only=True)
        flush_s = declare(self, 'flush_period_s', 1.0,
                          'How often records queued for a dataset not created yet are '
                          'retried (s).', low=0.05, high=60.0, read_only=True)
        self._flush_s = flush_s
        self.session = OperatorSession(output_dir, dataset_id_for(name))
        self._early_notes = []   # (monotonic s, text): notes before any episode was known
        self.annotation_pub = self.create_publisher(String, ANNOTATION, qos.LATCHED)
        self.create_subscription(String, EVENT, self._on_event, qos.LATCHED)
        self.create_subscription(String, SAVED, self._on_saved, qos.LATCHED)
        self.create_subscription(String, '/operator/note', self._on_note, qos.COMMAND)
        self.create_service(SetBool, '/operator/label', self._on_label)
        self.create_service(Trigger, '/operator/discard', self._on_discard)
        self.create_timer(flush_s, self._on_timer)
        self.get_logger().info(f'operator annotations for {self.session.dataset_id} in '
                               f'{self.session.root_dir}')

    @staticmethod
    def _json(msg):
        try:
            value = json.loads(msg.data)
        except ValueError:
            value = None
        return value if isinstance(value, dict) else None

    def _on_event(self, msg):
        event = self._json(msg)
        if event is None:
            self.get_logger().warning(f'bad episode event ignored: {msg.data[:80]!r}')
            return
        self.session.on_event(event)
        if self.session.running is not None:
            self._expire_early_notes()
            notes, self._early_notes = self._early_notes, []
            for _, text in notes:
                self._annotate('note added', note=text, note_running=True)

    def _on_saved(self, msg):
        saved = self._json(msg)
        if saved is None:
            self.get_logger().warning(f'bad {SAVED} report ignored: {msg.data[:80]!r}')
            return
        before = len(self.session.cancelled)
        self._flush(lambda: self.session.on_saved(saved))
        for episode, ids, reason in self.session.cancelled[before:]:
            self.get_logger().warning(f'annotation record(s) {", ".join(ids)} cancelled: '
                                      f'{reason}')
            self.annotation_pub.publish(String(data=json.dumps({
                'episode': episode, 'cancels': ids, 'reason': reason,
                'dataset_root': str(self.session.root_dir),
                'dataset_id': self.session.dataset_id})))

    def _expire_early_notes(self):
        """Refuse (log) the held notes older than ``EARLY_NOTE_HOLD_S``."""
        now = time.monotonic()
        for _, text in [n for n in self._early_notes if now - n[0] > EARLY_NOTE_HOLD_S]:
            self.get_logger().warning(f'note refused: no episode started within '
                                      f'{EARLY_NOTE_HOLD_S:g} s of it: {text[:80]!r}')
        self._early_notes = [n for n in self._early_notes if now - n[0] <= EARLY_NOTE_HOLD_S]

    def _on_timer(self):
        self._expire_early_notes()
        self._flush()

    def _flush(self, step=None):
        try:
            done = (step or self.session.flush)()
        except OSError as exc:
            self.get_logger().error(f'annotations journal {self.session.journal}: {exc} '
                                    f'({len(self.session.pending)} record(s) queued)',
                                    throttle_duration_sec=10.0)
            return
        if done:
            self.get_logger().info(f'{done} queued annotation record(s) written to '
                                   f'{self.session.journal}')

    def _annotate(self, what, **fields):
        """Write (or queue) a record; return ``(ok, message)`` for a service answer: ok False
        only when nothing was queued (a refusal); a record queued after a failed write is ok
        (it is retried, and written once)."""
        try:
            record, written = self.session.annotate(**fields)
        except (NoEpisodeError, ValueError) as exc:
            self.get_logger().warning(f'{what} refused: {exc}')
            return False, str(exc)
        where = (f'in the dataset at index {record["index"]}' if 'index' in record else
                 'not in the dataset yet: applies once the logger has written it, cancelled '
                 'if it does not')
        if written:
            state = 'written'
        elif self.session.write_error is not None:
            state = (f'queued: journal write failed: {self.session.write_error}; retried every '
                     f'{self._flush_s:g} s, do not send it again')
            self.get_logger().error(f'{what}: writing {self.session.journal} failed: '
                                    f'{self.session.write_error} (queued)')
        else:
            state = 'queued until the logger creates the dataset'
        self.annotation_pub.publish(String(data=json.dumps(dict(
            record, dataset_root=str(self.session.root_dir), dataset_id=self.session.dataset_id,
            written=written))))
        text = f'episode {record["episode"]} {what} ({where}; {state})'
        self.get_logger().info(text)
        return True, text

    def _on_label(self, request, response):
        label = 'success' if request.data else 'failure'
        response.success, response.message = self._annotate(f'labelled {label}', label=label)
        return response

    def _on_discard(self, request, response):
        response.success, response.message = self._annotate('discarded', discarded=True)
        return response

    def _on_note(self, msg):
        if self.session.running is None and self.session.last_ended is None:
            self._early_notes.append((time.monotonic(), msg.data))
            self.get_logger().info(f'note held: no episode known yet; it goes to one that '
                                   f'starts within {EARLY_NOTE_HOLD_S:g} s')
            return
        self._annotate('note added', note=msg.data, note_running=True)


def main(args=None):
    return spin_node(OperatorNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
