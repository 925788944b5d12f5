"""core.residual: P-controller, bounded residual command, insertion state, force limit."""
import numpy as np
import pytest

from awopt_ros.core import residual, spec
from awopt_ros.core.residual import ResidualConfig
from awopt_ros.core.task import get_task


def test_p_controller_moves_toward_the_goal_with_the_paper_gains():
    x = np.array([0.51, 0.49, 0.20])
    goal = np.array([0.50, 0.50, 0.10])
    base = residual.p_controller(x, goal)
    assert residual.KP == (1.0, 1.0, 0.3)
    np.testing.assert_allclose(base, [-0.01, 0.01, -0.03])
    # each axis points from x toward the goal
    assert np.all(np.sign(base) == np.sign(goal - x))
    np.testing.assert_allclose(residual.p_controller(x, goal, kp=(2.0, 0.5, 1.0)),
                               [-0.02, 0.005, -0.1])
    np.testing.assert_array_equal(residual.p_controller(goal, goal), np.zeros(3))


@pytest.mark.parametrize('x, goal', [((0.0, 0.0), (0.0, 0.0, 0.0)),
                                     ((0.0, 0.0, np.nan), (0.0, 0.0, 0.0)),
                                     ((0.0, 0.0, 0.0), (0.0, np.inf, 0.0))])
def test_p_controller_refuses_bad_input(x, goal):
    with pytest.raises(ValueError):
        residual.p_controller(x, goal)


def test_residual_off_is_the_clipped_p_controller():
    off = ResidualConfig(residual_enabled=False)
    base = np.array([0.003, -0.02, 0.004])
    u = residual.command(base, (1.0, 1.0, -1.0), off)
    np.testing.assert_allclose(u, [0.003, -0.01, 0.004])
    np.testing.assert_allclose(residual.command(base, None, ResidualConfig()), u)


def test_command_adds_alpha_times_residual_and_bounds_it():
    config = ResidualConfig(alpha_m=0.002, max_step_m=0.01)
    base = np.array([0.001, -0.001, 0.0])
    np.testing.assert_allclose(residual.command(base, (0.5, -0.25, 1.0), config),
                               [0.002, -0.0015, 0.002])
    # a residual beyond [-1, 1] adds at most alpha per axis
    np.testing.assert_allclose(residual.command(base, (50.0, -50.0, 3.0), config),
                               [0.003, -0.003, 0.002])
    # the sum is clipped per axis to max_step
    np.testing.assert_allclose(residual.command((0.0095, -0.0095, 0.0), (1, -1, 0), config),
                               [0.01, -0.01, 0.0])
    with pytest.raises(ValueError, match='residual'):
        residual.command(base, (np.nan, 0.0, 0.0), config)
    with pytest.raises(ValueError, match='residual'):
        residual.command(base, (0.0, 0.0), config)


@pytest.mark.parametrize('kwargs', [dict(kp=(1.0, 1.0)), dict(kp=(1.0, 0.0, 0.3)),
                                    dict(kp=(1.0, np.nan, 0.3)), dict(alpha_m=-0.001),
                                    dict(max_step_m=0.0), dict(force_limit_n=0.0),
                                    dict(back_off_m=-0.005), dict(alpha_m=np.inf)])
def test_config_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        ResidualConfig(**kwargs)


def test_config_defaults_follow_the_contract():
    c = ResidualConfig()
    assert (c.kp, c.alpha_m, c.max_step_m, c.force_limit_n, c.back_off_m) == \
        ((1.0, 1.0, 0.3), 0.002, 0.01, 40.0, 0.005)
    assert c.residual_enabled
    assert ResidualConfig(alpha_m=0).alpha_m == 0.0


def test_insertion_state_layout():
    tool = np.array([0.6, 0.1, 0.2])
    goal = np.array([0.601, 0.099, 0.15])
    vel = np.array([0.01, 0.02, 0.03])
    wrench = np.arange(1.0, 7.0)
    base = residual.p_controller(tool, goal)
    s = residual.insertion_state(tool, goal, vel, wrench, base)
    assert s.dtype == np.float32 and s.shape == (residual.STATE_DIM,) == (15,)
    names = residual.STATE_NAMES
    np.testing.assert_allclose(s[names.index('rel_x'):names.index('rel_z') + 1], tool - goal,
                               atol=1e-7)
    np.testing.assert_allclose(s[names.index('vel_x'):names.index('vel_z') + 1], vel)
    np.testing.assert_allclose(s[names.index('force_x'):names.index('torque_z') + 1], wrench)
    np.testing.assert_allclose(s[names.index('base_x'):], base, atol=1e-7)
    with pytest.raises(ValueError, match='wrench6'):
        residual.insertion_state(tool, goal, vel, wrench[:3], base)
    with pytest.raises(ValueError, match='tool_vel'):
        residual.insertion_state(tool, goal, (np.nan, 0, 0), wrench, base)


def test_state_names_match_the_insertion_task():
    insertion = get_task('insertion')
    assert tuple(insertion.state_names) == residual.STATE_NAMES
    assert tuple(insertion.action_names) == residual.RESIDUAL_NAMES


def test_force_limit_uses_the_force_magnitude_only():
    assert not residual.force_exceeded((0, 0, -40.0, 0, 0, 0), 40.0)
    assert residual.force_exceeded((0, 0, -40.01, 0, 0, 0), 40.0)
    # 30, 30, 0 N: 42.4 N in norm, above 40 though no single axis is
    assert residual.force_exceeded((30.0, 30.0, 0, 0, 0, 0), 40.0)
    # torques do not count
    assert not residual.force_exceeded((0, 0, 0, 100.0, 100.0, 100.0), 40.0)
    with pytest.raises(ValueError):
        residual.force_exceeded((0, 0, 0), 40.0)
    with pytest.raises(ValueError):
        residual.force_exceeded((0,) * 6, 0.0)


def test_arm_actions_use_the_spec_layout():
    a = residual.arm_action((0.001, -0.002, 0.003))
    assert a.dtype == np.float32 and a.shape == (spec.ACTION_DIM,)
    np.testing.assert_allclose(a, [0.001, -0.002, 0.003, 0, 0, 0, 0])
    assert spec.validate_action(a) is not None
    back = residual.back_off_action(ResidualConfig(back_off_m=0.004))
    np.testing.assert_allclose(back, [0, 0, 0.004, 0, 0, 0, 0])
    end = residual.terminate_action()
    np.testing.assert_array_equal(end, [0, 0, 0, 0, 0, 0, 1])
    assert spec.is_set(end[spec.IDX_TERMINATE]) and not spec.is_set(back[spec.IDX_TERMINATE])
    # the largest command fits the arm action bounds
    assert ResidualConfig().max_step_m <= float(spec.ACTION_HIGH[2])


def test_force_window_ignores_an_impact_spike_but_not_a_push():
    """At 100 Hz, one 65 N sample among 5 N ones (an impact) stays under 40 N averaged over
    50 ms; 45 N held for the window trips it; window 0 is each sample alone."""
    w = residual.ForceWindow(0.05)
    f = lambda n: [0.0, 0.0, -n, 0.0, 0.0, 0.0]   # noqa: E731
    for k in range(5):
        assert w.add(0.01 * k, f(5.0)) == pytest.approx(5.0)
    assert w.add(0.05, f(65.0)) < 40.0
    assert w.add(0.06, f(5.0)) < 40.0
    w.reset()
    means = [w.add(1.0 + 0.01 * k, f(45.0)) for k in range(6)]
    assert all(m > 40.0 for m in means)
    single = residual.ForceWindow(0.0)
    assert single.add(0.0, f(5.0)) == pytest.approx(5.0)
    assert single.add(0.01, f(65.0)) == pytest.approx(65.0)
    with pytest.raises(ValueError, match='window_s'):
        residual.ForceWindow(-0.1)
