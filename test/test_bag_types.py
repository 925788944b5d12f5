"""core.bag: message types the stack publishes that rosbags' stores lack (vision_msgs subset
of interfaces/) are registered, so bags with them are written and read back."""
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.typesys import get_types_from_msg

from awopt_ros.core.bag import EXTRA_TYPES, BagWriter, default_typestore, read_messages

ROOT = Path(__file__).resolve().parents[1]
CLASSIFICATION = 'vision_msgs/msg/Classification'


def test_extra_types_are_the_interfaces_definitions():
    for name, text in EXTRA_TYPES.items():
        pkg, _, short = name.split('/')
        msg = (ROOT / 'interfaces' / pkg / 'msg' / f'{short}.msg').read_text()
        assert get_types_from_msg(msg, name) == get_types_from_msg(text, name), name


def test_bag_with_a_classification_opens_with_the_bag_readers(tmp_path):
    store = default_typestore()
    cls = store.types[CLASSIFICATION]
    hyp = store.types['vision_msgs/msg/ObjectHypothesis']
    header = store.types['std_msgs/msg/Header']
    time = store.types['builtin_interfaces/msg/Time']
    msg = cls(header=header(stamp=time(sec=12, nanosec=5), frame_id='camera'),
              results=[hyp(class_id='success', score=0.25)])
    raw = store.serialize_cdr(msg, CLASSIFICATION)
    writer = BagWriter(tmp_path / 'bag', {'/success_detector/classification': CLASSIFICATION})
    assert writer.write('/success_detector/classification', raw, 1)
    writer.close()
    with AnyReader([tmp_path / 'bag']) as reader:    # no type store given: the bag's own
        (got,) = [reader.deserialize(data, conn.msgtype)
                  for conn, _, data in reader.messages()]
    assert got.results[0].class_id == 'success' and got.results[0].score == 0.25
    assert got.header.stamp.sec == 12
    assert [(t, m) for t, m, _, _ in read_messages(tmp_path / 'bag')] == [
        ('/success_detector/classification', CLASSIFICATION)]
