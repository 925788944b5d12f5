"""What an rviz2 config (``config/awopt.rviz``) subscribes to (ROS-free).

An rviz2 config is YAML: ``Visualization Manager`` -> ``Displays``, a list of mappings with a
``Class`` (e.g. ``rviz_default_plugins/Image``) and, per display, a topic property: a mapping
with ``Value`` (the topic) and the QoS rviz subscribes with (``Reliability Policy``,
``Durability Policy``, ``Depth``). :func:`display_topics` lists them with the message type
each display class takes, so that a test can check that the stack publishes every one with
that type and compatible QoS.
"""
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

#: Topic properties each display class reads: {class: [(property, message type)]}. A Camera
#: display also reads ``camera_info`` beside its image topic; TF reads /tf and /tf_static.
DISPLAY_TOPICS = {
    'rviz_default_plugins/RobotModel': [('Description Topic', 'std_msgs/msg/String')],
    'rviz_default_plugins/Image': [('Topic', 'sensor_msgs/msg/Image')],
    'rviz_default_plugins/Camera': [('Topic', 'sensor_msgs/msg/Image')],
    'rviz_default_plugins/MarkerArray': [('Topic', 'visualization_msgs/msg/MarkerArray')],
    'rviz_default_plugins/Marker': [('Topic', 'visualization_msgs/msg/Marker')],
    'rviz_default_plugins/TF': [],
    'rviz_default_plugins/Grid': [],
}
#: Topics the TF display reads, with tf2's subscription QoS (reliable; /tf_static latched).
TF_TOPICS = (('/tf', 'Reliable', 'Volatile', 100),
             ('/tf_static', 'Reliable', 'Transient Local', 1))
TF_TYPE = 'tf2_msgs/msg/TFMessage'


@dataclass(frozen=True)
class DisplayTopic:
    """One topic an rviz display subscribes to.

    Attributes:
        display: the display's ``Name``; display_class: its ``Class``.
        topic: absolute topic name; msg_type: ``pkg/msg/Type``.
        reliability: 'Reliable' | 'Best Effort'; durability: 'Volatile' | 'Transient Local';
        depth: history depth. enabled: the display's ``Enabled``.
    """

    display: str
    display_class: str
    topic: str
    msg_type: str
    reliability: str = 'Reliable'
    durability: str = 'Volatile'
    depth: int = 5
    enabled: bool = True


def load(path):
    """Return the rviz config at ``path`` as a dict.

    Raises:
        ValueError: not a YAML mapping with ``Visualization Manager`` -> ``Displays``.
    """
    with open(path, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(
            (doc.get('Visualization Manager') or {}).get('Displays'), list):
        raise ValueError(f'{path}: not an rviz2 config (no Visualization Manager: Displays)')
    return doc


def _walk(displays):
    """Yield every display, descending into display groups (``Displays`` inside a display)."""
    for d in displays:
        yield d
        if isinstance(d.get('Displays'), list):
            yield from _walk(d['Displays'])


def display_topics(doc):
    """Return the topics the config's displays subscribe to (list of :class:`DisplayTopic`).

    Raises:
        ValueError: a display class missing from :data:`DISPLAY_TOPICS` (add it with the
            message type it takes), or a topic property without a ``Value``.
    """
    out = []
    for d in _walk(doc['Visualization Manager']['Displays']):
        cls = d.get('Class')
        if cls == 'rviz_common/Group':
            continue
        if cls not in DISPLAY_TOPICS:
            raise ValueError(f'display {d.get("Name")!r}: class {cls!r} is not in '
                             'core.rviz_config.DISPLAY_TOPICS')
        name, enabled = str(d.get('Name')), bool(d.get('Enabled', True))
        if cls == 'rviz_default_plugins/TF':
            out += [DisplayTopic(name, cls, t, TF_TYPE, r, dur, depth, enabled)
                    for t, r, dur, depth in TF_TOPICS]
        for prop, msg_type in DISPLAY_TOPICS[cls]:
            value = d.get(prop)
            if not isinstance(value, dict) or not value.get('Value'):
                raise ValueError(f'display {name!r}: property {prop!r} names no topic')
            qos = dict(reliability=str(value.get('Reliability Policy', 'Reliable')),
                       durability=str(value.get('Durability Policy', 'Volatile')),
                       depth=int(value.get('Depth', 5)), enabled=enabled)
            topic = str(value['Value'])
            out.append(DisplayTopic(name, cls, topic, msg_type, **qos))
            if cls == 'rviz_default_plugins/Camera':   # camera_info beside the image
                info = str(PurePosixPath(topic).parent / 'camera_info')
                out.append(DisplayTopic(name, cls, info, 'sensor_msgs/msg/CameraInfo', **qos))
    return out


def fixed_frame(doc):
    """Return the config's fixed frame (``Global Options`` -> ``Fixed Frame``), or None."""
    return ((doc.get('Visualization Manager') or {}).get('Global Options') or {}).get(
        'Fixed Frame')
