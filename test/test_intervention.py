"""core.intervention (ROS-free): the operator's command, when it overrides the policy, how
intervention steps are recorded in the dataset, and the keyboard teleop's keys."""
import dataclasses

import numpy as np
import pytest

from awopt_ros.core import intervention as iv
from awopt_ros.core import spec
from awopt_ros.core.dataset import POLICY_IDS, EpisodeRecorder, load_episodes

DATASET_ID = 'awopt/kuka-grasp-v0'


def test_operator_action_is_the_twist_times_the_period_clipped_to_the_bounds():
    a = iv.operator_action([0.1, -0.05, 0.02], 0.5, None, 0.1)
    np.testing.assert_allclose(a, [0.01, -0.005, 0.002, 0.05, 0, 0, 0], atol=1e-7)
    assert a.dtype == np.float32
    fast = iv.operator_action([1.0, -1.0, 0.0], -10.0, True, 0.1)   # 0.1 m, -1 rad per step
    np.testing.assert_allclose(fast, [0.03, -0.03, 0, -0.2, 0, 1, 0], atol=1e-7)
    opened = iv.operator_action([0, 0, 0], 0, False, 0.1)
    assert opened[spec.IDX_OPEN] == 1 and opened[spec.IDX_CLOSE] == 0
    assert opened[spec.IDX_TERMINATE] == 0
    for bad in (([np.nan, 0, 0], 0, 0.1), ([0, 0], 0, 0.1), ([0, 0, 0], np.inf, 0.1),
                ([0, 0, 0], 0, 0.0)):
        with pytest.raises(ValueError):
            iv.operator_action(bad[0], bad[1], None, bad[2])


def test_twists_only_in_base_link_or_an_empty_frame():
    assert iv.check_twist_frame('base_link') is None
    assert iv.check_twist_frame('') is None
    assert iv.check_twist_frame('/base_link') is None
    reason = iv.check_twist_frame('tool0')
    assert 'tool0' in reason and 'base_link' in reason


def test_override_active_only_while_the_newest_message_is_fresh():
    o = iv.OperatorOverride(timeout_s=0.3)
    assert not o.active(0.0) and o.action(0.0, 0.1) is None
    o.on_twist(10.0, [0.1, 0, 0], 0.0)
    np.testing.assert_allclose(o.action(10.29, 0.1), [0.01, 0, 0, 0, 0, 0, 0], atol=1e-7)
    assert o.action(10.3, 0.1) is None          # as old as the timeout: over
    o.on_gripper(10.5, True)                    # a gripper message alone starts one too
    np.testing.assert_allclose(o.action(10.6, 0.1), [0, 0, 0, 0, 0, 1, 0])
    o.on_twist(10.7, [0, 0.2, 0], 0.0)          # the same intervention: the gripper stays
    np.testing.assert_allclose(o.action(10.8, 0.1), [0, 0.02, 0, 0, 0, 1, 0], atol=1e-7)
    o.on_twist(20.0, [0, 0, -0.1], 0.0)         # a new one: no gripper command carried over
    np.testing.assert_allclose(o.action(20.1, 0.1), [0, 0, -0.01, 0, 0, 0, 0], atol=1e-7)
    with pytest.raises(ValueError):
        o.on_twist(20.1, [np.nan, 0, 0], 0.0)
    np.testing.assert_allclose(o.action(20.1, 0.1), [0, 0, -0.01, 0, 0, 0, 0], atol=1e-7)
    o.set_timeout(0.05)
    assert o.action(20.1, 0.1) is None
    with pytest.raises(ValueError):
        o.set_timeout(0.0)


def test_an_enable_ends_the_intervention_until_a_newer_operator_message():
    o = iv.OperatorOverride(timeout_s=0.3)
    o.on_twist(10.0, [0.1, 0, 0], 0.0)
    o.on_gripper(10.0, True)
    o.end()                                     # the arm's enable at 10.18
    assert not o.active(10.2) and o.action(10.2, 0.1) is None
    o.end()                                     # ending none is harmless
    o.on_twist(10.25, [0, 0.1, 0], 0.0)         # received after it: a new intervention,
    np.testing.assert_allclose(o.action(10.3, 0.1), [0, 0.01, 0, 0, 0, 0, 0], atol=1e-7)
    assert o.action(10.55, 0.1) is None         # no gripper from before, its own timeout


def test_match_stamps_within_the_tolerance():
    got = iv.match_stamps([1.0, 1.1, 1.2000004, 5.0], [1.2, 1.0, 3.0])
    np.testing.assert_array_equal(got, [1, -1, 0, -1])
    np.testing.assert_array_equal(iv.match_stamps([1.0], []), [-1])


def test_apply_interventions_keeps_the_policy_action():
    policy = np.tile(np.float32([0.01, 0, 0, 0, 0, 0, 0]), (4, 1))
    stamps = [1.0, 1.1, 1.2, 1.3]
    ops = np.float32([[0, 0.5, 0, 0, 0, 1, 0], [0, -0.02, 0, 0, 1, 0, 0]])  # 0.5 is clipped
    acts, flags, own = iv.apply_interventions(policy, stamps, [1.1, 1.2], ops)
    np.testing.assert_array_equal(flags, [False, True, True, False])
    np.testing.assert_allclose(acts[1], [0, 0.03, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(acts[2], ops[1])
    np.testing.assert_array_equal(acts[[0, 3]], policy[[0, 3]])
    np.testing.assert_array_equal(own[1:3], policy[1:3])
    assert np.isnan(own[[0, 3]]).all()


def test_the_policys_terminate_stays_in_the_recorded_operator_action(tmp_path):
    """The episode manager ends the episode on the policy action's terminate (it reads
    /policy/action) also while the operator drives: the recorded action of that terminal step
    keeps terminate 1 with the operator's motion and gripper bits; on other intervention
    steps the policy's terminate 0 stays 0."""
    policy = np.tile(np.float32([0.01, 0, 0, 0, 0, 0, 0]), (3, 1))
    policy[2, spec.IDX_TERMINATE] = 1.0
    ops = np.float32([[0, 0.02, 0, 0, 0, 1, 0], [0, -0.02, 0, 0, 1, 0, 0]])
    acts, _, own = iv.apply_interventions(policy, [1.0, 1.1, 1.2], [1.1, 1.2], ops)
    np.testing.assert_allclose(acts[1], ops[0])
    np.testing.assert_allclose(acts[2], [0, -0.02, 0, 0, 1, 0, 1])
    assert own[2, spec.IDX_TERMINATE] == 1.0
    # the same through the recorder the logger uses: the dataset's terminal step
    rng = np.random.default_rng(2)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    rec.begin(1, 101)
    for t in range(3):
        rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                     rng.normal(size=6).astype(np.float32), policy[t], 0.0,
                     POLICY_IDS['actor'], 10.0 + 0.1 * t)
    rec.end(True, True, False, *_final(rng), interventions=([10.1, 10.2], ops))
    ep = load_episodes(tmp_path, DATASET_ID)[0]
    np.testing.assert_allclose(ep['actions'][2], [0, -0.02, 0, 0, 1, 0, 1])
    assert ep['actions'][1, spec.IDX_TERMINATE] == 0.0
    np.testing.assert_array_equal(ep['intervention'][:3], [False, True, True])


def test_intervention_weights():
    np.testing.assert_array_equal(iv.intervention_weights([True, False], 5), [5.0, 1.0])
    with pytest.raises(ValueError):
        iv.intervention_weights([True], -1)


def _steps(rec, k, steps, rng):
    rec.begin(k, 100 + k)
    for t in range(steps):
        rec.add_step(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                     rng.normal(size=6).astype(np.float32),
                     np.float32([0.01, 0, 0, 0, 0, 0, 0]), 0.0, POLICY_IDS['actor'],
                     10.0 + 0.1 * t)


def _final(rng):
    return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.zeros(6, np.float32)


def test_dataset_records_intervention_steps_and_older_datasets_load(tmp_path):
    rng = np.random.default_rng(0)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    # An episode as written before interventions existed (no intervention infos).
    _steps(rec, 0, 2, rng)
    buffer, summary = rec.finish(True, True, False, *_final(rng))
    infos = {k: v for k, v in buffer.infos.items()
             if k not in ('intervention', 'policy_action')}
    rec.append(dataclasses.replace(buffer, infos=infos), summary)
    # Steps 1 and 2 of 4 (stamps 10.1, 10.2) were the operator's; 9.9 is another episode's.
    _steps(rec, 1, 4, rng)
    ops = np.float32([[0.02, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0],
                      [0.03, 0.03, 0, 0, 0, 0, 0]])
    rec.end(False, False, True, *_final(rng), interventions=([10.1, 10.2, 9.9], ops))
    # No intervention at all: zeros.
    _steps(rec, 2, 2, rng)
    rec.end(False, False, True, *_final(rng), interventions=([], np.zeros((0, 7))))
    old, new, plain = load_episodes(tmp_path, DATASET_ID)
    assert old['intervention'].shape == (3,) and not old['intervention'].any()
    assert np.isnan(old['policy_action']).all() and old['policy_action'].shape == (3, 7)
    np.testing.assert_array_equal(new['intervention'], [False, True, True, False, False])
    np.testing.assert_allclose(new['actions'][1:3], ops[:2])
    np.testing.assert_allclose(new['actions'][[0, 3], 0], [0.01, 0.01])
    np.testing.assert_array_equal(new['policy'][:4], [POLICY_IDS['actor'], 6, 6,
                                                       POLICY_IDS['actor']])
    np.testing.assert_allclose(new['policy_action'][1:3, 0], [0.01, 0.01])
    assert np.isnan(new['policy_action'][[0, 3]]).all()
    assert not plain['intervention'].any()
    assert POLICY_IDS['operator'] == 6


def test_truncated_steps_keep_their_interventions_aligned(tmp_path):
    rng = np.random.default_rng(1)
    rec = EpisodeRecorder(tmp_path, DATASET_ID)
    _steps(rec, 0, 4, rng)
    rec.truncate(2)
    buffer, _ = rec.finish(False, False, True, *_final(rng),
                           interventions=([10.1, 10.3], np.zeros((2, 7), np.float32)))
    np.testing.assert_array_equal(buffer.infos['intervention'], [0, 1, 1])
    assert buffer.actions.shape == (2, 7)


# ---- keyboard teleop ----------------------------------------------------------------------

def test_teleop_keys_move_while_held_and_go_idle_after_release():
    keys = iv.TeleopKeys(speed_m_s=0.1, yaw_speed_rad_s=0.5, hold_s=0.5)
    assert keys.command(0.0) is None
    assert keys.press('w', 1.0) is True
    cmd = keys.command(1.2)
    assert cmd.linear_m_s == (0.1, 0.0, 0.0) and cmd.yaw_rate_rad_s == 0.0
    assert cmd.gripper_closed is None
    assert keys.press('w', 1.4)                   # key repeat: still held
    assert keys.command(1.8).linear_m_s == (0.1, 0.0, 0.0)
    assert keys.command(1.9) is None              # released (no repeat for hold_s)
    expected = {'s': ((-0.1, 0, 0), 0.0), 'a': ((0, 0.1, 0), 0.0), 'd': ((0, -0.1, 0), 0.0),
                'r': ((0, 0, 0.1), 0.0), 'f': ((0, 0, -0.1), 0.0), 'q': ((0, 0, 0), 0.5),
                'e': ((0, 0, 0), -0.5)}
    for t, (key, (lin, yaw)) in enumerate(expected.items()):
        keys.press(key, 10.0 * (t + 2))
        cmd = keys.command(10.0 * (t + 2))
        assert cmd.linear_m_s == lin and cmd.yaw_rate_rad_s == yaw, key


def test_teleop_gripper_and_stop_keys():
    keys = iv.TeleopKeys(hold_s=0.5)
    keys.press('c', 1.0)
    cmd = keys.command(1.1)
    assert cmd.gripper_closed is True and cmd.linear_m_s == (0.0, 0.0, 0.0)
    keys.press('w', 1.2)                           # moving with the gripper closed
    assert keys.command(1.3).gripper_closed is True
    keys.press(' ', 1.4)                           # stop: a zero twist while held
    cmd = keys.command(1.5)
    assert cmd.linear_m_s == (0.0, 0.0, 0.0) and cmd.yaw_rate_rad_s == 0.0
    keys.press('w', 5.0)                           # a new intervention: no gripper command
    assert keys.command(5.1).gripper_closed is None
    keys.press('o', 5.2)
    assert keys.command(5.3).gripper_closed is False
    assert keys.press('z', 5.4) is False           # not a command key
    assert keys.press('\x03', 5.5) == 'quit' and keys.press('\x04', 5.5) == 'quit'
    with pytest.raises(ValueError):
        iv.TeleopKeys(speed_m_s=0.0)


def test_uppercase_keys_are_not_commands():
    keys = iv.TeleopKeys(hold_s=0.5)
    for key in 'WASDRFQECO':
        assert keys.press(key, 1.0) is False, key
    assert keys.command(1.1) is None


@pytest.mark.parametrize('seq', [b'\x1b[A', b'\x1b[B', b'\x1b[C', b'\x1b[D', b'\x1bOP',
                                 b'\x1bOQ', b'\x1b[H', b'\x1b[15~', b'\x1b[1;5C', b'\x1bw',
                                 b'\x1b[200~'])
def test_escape_sequences_of_arrow_and_function_keys_command_nothing(seq):
    """Fed through KeyStream (as awopt teleop does), an arrow, function or Alt key neither
    moves nor works the gripper; keys typed around it still count."""
    stream, keys = iv.KeyStream(), iv.TeleopKeys(hold_s=0.5)
    typed = stream.feed(seq.decode(), 1.0)
    assert typed == []
    assert not any(keys.press(ch, 1.0) for ch in typed) and keys.command(1.0) is None
    # split across reads (within the escape timeout), then a real key
    stream = iv.KeyStream()
    assert stream.feed(seq[:2].decode(), 2.0) == []
    assert stream.feed(seq[2:].decode() + 'w', 2.01) == ['w']
    assert iv.KeyStream().feed('a' + seq.decode() + 'd', 3.0) == ['a', 'd']


def test_key_stream_lets_quit_through_and_forgets_a_lone_escape():
    stream = iv.KeyStream()
    assert stream.feed('\x1b[1\x03', 1.0) == ['\x03']          # Ctrl-C inside a sequence
    assert stream.feed('\x1b', 2.0) == []                       # the Esc key alone
    assert stream.feed('w', 3.0) == ['w']                        # much later: a key of its own
    assert stream.feed('\x1b\x1b[Aq', 4.0) == ['q']
