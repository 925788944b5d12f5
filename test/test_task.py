"""Task descriptions (core.task): lookup, the two instances, validation."""
import copy
import dataclasses

import numpy as np
import pytest

from awopt_ros.core import spec
from awopt_ros.core.task import (GRASP, INSERTION, INSERTION_STATE_NAMES, TASKS, Task,
                                 get_task)


def test_lookup_returns_the_instances_and_unknown_names_list_the_known_ones():
    assert get_task('grasp') is GRASP
    assert get_task('insertion') is INSERTION
    assert get_task(INSERTION) is INSERTION
    assert set(TASKS) == {'grasp', 'insertion'}
    for bad in ('peg', '', None, 3):
        with pytest.raises(ValueError, match="known tasks: \\['grasp', 'insertion'\\]"):
            get_task(bad)


def test_grasp_is_built_from_core_spec():
    assert GRASP.action_names == spec.ACTION_NAMES
    assert GRASP.action_units == spec.ACTION_UNITS
    np.testing.assert_array_equal(GRASP.action_low, spec.ACTION_LOW)
    np.testing.assert_array_equal(GRASP.action_high, spec.ACTION_HIGH)
    assert GRASP.discrete == (4, 5, 6) and GRASP.continuous == (0, 1, 2, 3)
    assert GRASP.state_names == spec.PROPRIO_NAMES
    assert GRASP.state_offset == spec.PROPRIO_OFFSET and GRASP.state_scale == spec.PROPRIO_SCALE
    assert GRASP.image_size == spec.POLICY_IMAGE_SIZE and GRASP.has_image


def test_insertion_layout_follows_the_contract():
    t = INSERTION
    assert t.action_names == ('res_x', 'res_y', 'res_z') and t.action_units == ('1',) * 3
    np.testing.assert_array_equal(t.action_low, -np.ones(3, np.float32))
    np.testing.assert_array_equal(t.action_high, np.ones(3, np.float32))
    assert t.action_low.dtype == np.float32
    assert t.discrete == () and t.continuous == (0, 1, 2)
    assert t.image_size == 0 and not t.has_image
    assert t.state_names == INSERTION_STATE_NAMES and t.state_dim == 15
    assert t.state_names[:3] == ('rel_x', 'rel_y', 'rel_z')
    assert t.state_names[-3:] == ('base_x', 'base_y', 'base_z')
    assert t.state_offset == (0.0,) * 15
    assert t.state_scale[:3] == (0.005, 0.005, 0.03)
    assert t.state_scale[6:9] == (20.0,) * 3 and t.state_scale[9:12] == (0.2,) * 3
    assert t.state_scale[12:] == (0.005, 0.005, 0.015)
    assert t.episode_steps == 50 and t.rate_hz == 10.0 and t.period_s == pytest.approx(0.1)


def test_tasks_are_immutable():
    assert copy.deepcopy(INSERTION) is INSERTION and copy.copy(GRASP) is GRASP
    with pytest.raises(dataclasses.FrozenInstanceError):
        INSERTION.image_size = 64
    with pytest.raises(ValueError):
        INSERTION.action_low[0] = 5.0


def test_normalise_state_and_clip_action():
    s = np.zeros((2, 15), np.float32)
    s[:, 6] = 40.0                                   # force_x 40 N = 2 scales
    np.testing.assert_allclose(INSERTION.normalise_state(s)[:, 6], [2.0, 2.0])
    with pytest.raises(ValueError, match='15 entries'):
        INSERTION.normalise_state(np.zeros(14))
    np.testing.assert_array_equal(INSERTION.clip_action([2.0, -3.0, 0.5]), [1.0, -1.0, 0.5])
    got = GRASP.clip_action([0.1, 0.0, 0.0, 0.0, 0.7, 0.2, 1.4])
    np.testing.assert_allclose(got, [0.03, 0, 0, 0, 1, 0, 1])
    with pytest.raises(ValueError, match='3 entries'):
        INSERTION.clip_action(np.zeros(7))
    with pytest.raises(ValueError, match='NaN'):
        INSERTION.clip_action([np.nan, 0, 0])


def _fields(**over):
    base = {f.name: getattr(INSERTION, f.name) for f in dataclasses.fields(Task)}
    base.update(over)
    return base


@pytest.mark.parametrize('over, match', [
    (dict(action_units=('1', '1')), 'action_units'),
    (dict(state_scale=(1.0,) * 14), 'state_scale'),
    (dict(state_scale=(0.0,) + (1.0,) * 14), 'state_scale'),
    (dict(action_low=(1.0, -1.0, -1.0)), 'action_low must be < action_high'),
    (dict(discrete=(3,)), 'discrete'),
    (dict(discrete=(0,)), 'bounds \\[0, 1\\]'),
    (dict(episode_steps=0), 'episode_steps'),
    (dict(rate_hz=0.0), 'rate_hz'),
])
def test_inconsistent_tasks_are_refused(over, match):
    with pytest.raises(ValueError, match=match):
        Task(**_fields(**over))
