"""config/foxglove_layout.json: a well-formed Foxglove layout (the app's export format:
``configById``, ``globalVariables``, ``userNodes``, ``playbackConfig`` and a ``layout`` tree of
splits) whose every topic is one the stack records (``nodes.logger`` STACK_TOPICS, with the
insertion topics) and whose every message path resolves in that topic's message type."""
import json
import re
from pathlib import Path

import pytest

from awopt_ros.core import spec
from awopt_ros.core.bag import default_typestore
from awopt_ros.nodes import logger

LAYOUT = Path(__file__).resolve().parents[1] / 'config' / 'foxglove_layout.json'
#: Panel types the layout may use (Foxglove's built-in panels).
PANEL_TYPES = {'Image', 'Plot', '3D', 'RawMessages', 'DiagnosticSummary', 'Tab',
               'StateTransitions', 'Indicator'}
RECORDED = logger.stack_topics(task='insertion')
NUMERIC = {'bool', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32',
           'int64', 'uint64'}
_FILTER = re.compile(r'\{[^}]*\}')
_INDEX = re.compile(r'\[[^\]]*\]')


@pytest.fixture(scope='module')
def layout():
    return json.loads(LAYOUT.read_text())


def panel_ids(node):
    """Panel ids of a layout tree (a panel id string or a split dict)."""
    if isinstance(node, str):
        return [node]
    assert set(node) >= {'first', 'second', 'direction'}, node
    assert node['direction'] in ('row', 'column')
    assert 0 < node.get('splitPercentage', 50) < 100
    return panel_ids(node['first']) + panel_ids(node['second'])


def message_paths(panel_type, config):
    """``(topic, field path or '')`` pairs a panel reads."""
    out = []
    if panel_type == 'Image':
        mode = config['imageMode']
        out += [(mode['imageTopic'], '')]
        if mode.get('calibrationTopic'):
            out.append((mode['calibrationTopic'], ''))
    elif panel_type in ('Plot', 'StateTransitions'):
        for path in config['paths']:
            topic, _, fields = path['value'].partition('.')
            out.append((topic, fields))
    elif panel_type == 'RawMessages':
        topic, _, fields = config['topicPath'].partition('.')
        out.append((topic, fields))
    elif panel_type == 'DiagnosticSummary':
        out.append((config['topicToRender'], ''))
    elif panel_type == '3D':
        out += [(topic, '') for topic, cfg in config['topics'].items() if cfg.get('visible')]
    elif panel_type == 'Indicator':
        topic, _, fields = config['path'].partition('.')
        out.append((topic, fields))
    return out


def resolve(msgtype, fields, typestore):
    """Return the type at the end of ``fields`` (a Foxglove message path after the topic:
    ``a.b[0].c``, ``results[:]{class_id=="x"}.score``) in ``msgtype``; AssertionError naming
    the first field that does not exist."""
    current = msgtype
    for part in filter(None, _FILTER.sub('', fields).split('.')):
        name = _INDEX.sub('', part)
        assert current in typestore.fielddefs, f'{msgtype}: {current} has no fields'
        known = dict(typestore.fielddefs[current][1])
        assert name in known, f'{msgtype}: no field {name!r} in {current}'
        kind, detail = known[name]
        while isinstance(detail, tuple) and not isinstance(detail[0], str):
            kind, detail = detail[0]          # array / sequence element
        current = detail if isinstance(detail, str) else detail[0]
    return current


def test_layout_is_a_foxglove_layout(layout):
    assert set(layout) == {'configById', 'globalVariables', 'userNodes', 'playbackConfig',
                           'layout'}
    config = layout['configById']
    used = panel_ids(layout['layout'])
    for panel_id, cfg in config.items():
        panel_type, _, suffix = panel_id.partition('!')
        assert panel_type in PANEL_TYPES and suffix, panel_id
        if panel_type == 'Tab':
            assert 0 <= cfg['activeTabIdx'] < len(cfg['tabs'])
            for tab in cfg['tabs']:
                assert tab['title']
                used += panel_ids(tab['layout'])
    assert sorted(used) == sorted(config), 'every panel placed once, every placed one defined'
    for panel_id, cfg in config.items():
        if panel_id.startswith(('Plot!', 'StateTransitions!')):
            assert cfg['paths'], panel_id
            for path in cfg['paths']:
                assert path['enabled'] is True and path['timestampMethod'] == 'receiveTime'
                assert path['label']


def test_layout_topics_are_recorded_and_paths_resolve(layout):
    typestore = default_typestore()
    seen = set()
    for panel_id, cfg in layout['configById'].items():
        panel_type = panel_id.partition('!')[0]
        for topic, fields in message_paths(panel_type, cfg):
            assert topic in RECORDED, f'{panel_id}: {topic} is not recorded by the logger'
            msgtype = RECORDED[topic][0]
            leaf = resolve(msgtype, fields, typestore)
            if panel_type == 'Plot':
                assert leaf in NUMERIC, f'{panel_id}: {topic}.{fields} is a {leaf}'
            if panel_type == 'Image':
                assert msgtype in ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo')
            seen.add(topic)
    # the panels the viewer needs are all there
    assert {logger.CAMERA, logger.POLICY_IMAGE, logger.ACTION, logger.SUCCESS,
            logger.CLASSIFICATION, logger.JOINTS, logger.EVENT, '/diagnostics',
            logger.WRENCH, logger.INTERVENTION, logger.OPERATOR_TWIST, logger.PROPRIO} <= seen


def test_action_plots_name_the_action_dimensions(layout):
    for cfg in layout['configById'].values():
        for path in cfg.get('paths', []):
            match = re.fullmatch(r'/(policy/action|arm/intervention)\.position\[(\d)\]',
                                 path['value'])
            if match:
                assert path['label'] == spec.ACTION_NAMES[int(match.group(2))]


def test_tool_plot_names_the_proprio_entries(layout):
    for cfg in layout['configById'].values():
        for path in cfg.get('paths', []):
            match = re.fullmatch(r'/policy/proprio\.position\[(\d)\]', path['value'])
            if match:
                assert path['label'] == spec.PROPRIO_NAMES[int(match.group(1))]


def test_resolve_rejects_unknown_fields():
    typestore = default_typestore()
    assert resolve('sensor_msgs/msg/JointState', 'position[3]', typestore) == 'float64'
    assert resolve('vision_msgs/msg/Classification',
                   'results[:]{class_id=="success"}.score', typestore) == 'float64'
    with pytest.raises(AssertionError, match='no field'):
        resolve('sensor_msgs/msg/JointState', 'positions[0]', typestore)
