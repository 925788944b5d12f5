"""Which required nodes are silent or refuse episodes (core.liveness), and the logger's
diagnostics contract (ros.diagnostics.logger_refusal); plain pytest, no ROS graph."""
import pytest

from awopt_ros.core.liveness import FAULT, REFUSING, SILENT, STALLED, NodeMonitor, Problem
from awopt_ros.ros.diagnostics import logger_refusal, logger_write_failed

DISK = 'only 3.2 MB free on /x/runs (min_free_disk_mb 50)'


def make():
    return NodeMonitor({'policy': 2.0, 'logger': 3.0},
                       {'policy': '/policy/action', 'logger': 'diagnostics'})


def test_never_heard_from_is_silent_and_refuses_the_start():
    m = make()
    assert [p.node for p in m.silent(100.0)] == ['policy', 'logger']
    refusal = m.start_refusal(100.0)
    assert refusal['nodes'] == ['policy', 'logger'] and refusal['kind'] == SILENT
    assert refusal['error'].startswith('policy, logger not available (policy: nothing '
                                       'received on /policy/action; logger: nothing received')
    assert refusal['error'].endswith('look at the first one')
    m.seen('policy', 100.0)
    m.seen('logger', 100.0)
    assert m.start_refusal(100.5) is None and m.episode_problem(100.5) is None


def test_each_node_has_its_own_timeout_on_the_wall_clock():
    m = make()
    m.seen('policy', 100.0)
    m.seen('logger', 100.0)
    assert m.silent(102.0) == []                         # 2.0 s is not longer than 2.0 s
    assert m.silent(102.5) == [Problem('policy', SILENT, 'no /policy/action for 2.5 s')]
    m.seen('policy', 102.4)
    m.seen('policy', 101.0)                              # late message: never goes back
    assert m.age_s('policy', 102.5) == pytest.approx(0.1)
    outcome, detail = m.episode_problem(103.5)           # logger silent 3.5 s > 3.0 s
    assert outcome == 'node_lost'
    assert detail == 'no data from: logger (no diagnostics for 3.5 s)'
    refusal = m.start_refusal(103.5)
    assert refusal['nodes'] == ['logger'] and refusal['error'] == (
        'logger not available (logger: no diagnostics for 3.5 s): is it running?')
    m.seen('camera', 103.5)                              # not watched: ignored
    assert 'camera' not in m.nodes


def test_refusing_node_refuses_the_start_without_retry_but_lets_an_episode_run():
    m = make()
    m.seen('policy', 100.0)
    m.seen('logger', 100.0)
    m.set_refusing('logger', DISK)
    assert m.problems(100.5) == [Problem('logger', REFUSING, DISK)]
    refusal = m.start_refusal(100.5)
    assert refusal == {'error': f'logger does not accept episodes: {DISK}',
                       'nodes': ['logger'], 'kind': REFUSING}
    assert 'not available' not in refusal['error']       # EpisodeClient does not ask again
    assert m.episode_problem(100.5) is None              # the logger records it still
    write = 'write error: No space left on device writing x.mcap'
    m.set_refusing('logger', write, fault=True)
    assert m.episode_problem(100.5) == ('failed', f'logger: {write}')
    assert m.start_refusal(100.5)['kind'] == FAULT
    m.set_refusing('logger', '')                         # a refusal without a reason
    assert m.problems(100.5)[0].detail == 'no reason given'
    m.set_refusing('logger', None)                       # accepts again
    assert m.start_refusal(100.5) is None
    m.set_refusing('unknown', 'x')                       # not watched: ignored
    assert m.problems(100.5) == []


def test_a_silent_node_outranks_its_last_refusal():
    m = make()
    m.seen('policy', 100.0)
    m.seen('logger', 100.0)
    m.set_refusing('logger', DISK, fault=True)
    m.seen('policy', 104.0)
    assert m.episode_problem(104.0) == ('node_lost',
                                        'no data from: logger (no diagnostics for 4.0 s)')
    assert m.start_refusal(104.0)['kind'] == SILENT


def test_stalled_node_refuses_the_start_and_ends_an_episode_after_its_grace():
    """A success detector heard from but scoring nothing (status ERROR) refuses starts with
    its message; in an episode its reports count only once the grace given at the start is
    over (a report sent before it saw the start describes the idle time before it)."""
    m = NodeMonitor({'policy': 2.0, 'success_detector': 3.0})
    m.seen('policy', 100.0)
    m.seen('success_detector', 100.0)
    stall = 'status ERROR: no frame scored for 1.4 s'
    m.set_stalled('success_detector', stall, 100.0)
    assert m.problems(100.5) == [Problem('success_detector', STALLED, stall)]
    assert m.start_refusal(100.5) == {'error': f'success_detector is not working: {stall}',
                                      'nodes': ['success_detector'], 'kind': STALLED}
    lost = ('node_lost', f'not working: success_detector ({stall})')
    assert m.episode_problem(100.5) == lost
    m.grace('success_detector', 101.0)                   # an episode starts at 100.0
    assert m.episode_problem(100.5) is None              # the report came before: stale
    m.set_stalled('success_detector', stall, 100.9)      # still within the grace
    assert m.episode_problem(101.5) is None
    assert m.start_refusal(101.5)['kind'] == STALLED     # a start is still refused
    m.set_stalled('success_detector', stall, 101.2)      # after the grace: it counts
    assert m.episode_problem(101.5) == lost
    m.set_stalled('success_detector', None, 101.9)       # scoring again
    assert m.episode_problem(102.0) is None and m.start_refusal(102.0) is None
    m.set_stalled('success_detector', '', 102.0)         # no message
    assert m.problems(102.0)[0].detail == 'no reason given'
    m.seen('policy', 105.0)                              # a silent node outranks its report
    assert m.episode_problem(105.0)[1].startswith('no data from: success_detector')
    m.set_stalled('unknown', 'x', 105.0)                 # not watched: ignored
    m.grace('unknown', 106.0)
    assert [p.kind for p in m.problems(105.0)] == [SILENT]


def test_expect_from_restarts_the_timeout_of_paused_inputs():
    m = make()
    m.seen('policy', 100.0)
    m.seen('logger', 100.0)
    m.expect_from(('policy', 'camera'), 105.0)           # the reset paused the policy
    assert [p.node for p in m.silent(106.0)] == ['logger']
    m.expect_from(('policy',), 104.0)                    # earlier than heard: no change
    assert m.age_s('policy', 106.0) == pytest.approx(1.0)


@pytest.mark.parametrize('timeouts', [{}, {'policy': 0.0}, {'policy': -1.0}, {'': 1.0}])
def test_bad_monitor_config_raises(timeouts):
    with pytest.raises(ValueError):
        NodeMonitor(timeouts)


def test_logger_refusal_reads_the_loggers_diagnostics():
    ok = {'accepting_episodes': 'true', 'free_disk_mb': '5000.0', 'min_free_disk_mb': '50',
          'write_errors': '0'}
    assert logger_refusal(ok, '') is None
    assert logger_refusal({}, 'idle') is None            # a logger without the check
    refusing = dict(ok, accepting_episodes='false', free_disk_mb='3.2')
    assert logger_refusal(refusing, DISK) == DISK
    assert logger_refusal(refusing, '') == '3.2 MB free (min_free_disk_mb 50)'
    assert logger_refusal({'accepting_episodes': 'False', 'write_errors': '2'}) == \
        '2 write errors'
    assert logger_refusal({'accepting_episodes': 'false'}) == \
        'the logger reports accepting_episodes false'
    assert logger_write_failed({'write_errors': '1'}) and not logger_write_failed(ok)
    assert not logger_write_failed({}) and not logger_write_failed({'write_errors': 'x'})


def test_clock_paced_node_is_silent_only_on_both_clocks():
    """The logger's status timer runs on the node clock: at a quarter of real time it comes
    every 4 wall seconds, which is not a dead logger; a dead one is silent on both clocks."""
    m = NodeMonitor({'logger': 3.0}, clock_paced=('logger',))
    m.seen('logger', 100.0, clock_s=50.0)
    assert m.silent(104.0, clock_s=51.0) == []           # 4 s wall, 1 s simulated
    assert m.silent(104.0) != []                         # without the node clock: wall only
    assert [p.node for p in m.silent(113.0, clock_s=53.25)] == ['logger']
    m.seen('logger', 113.5, clock_s=53.3)
    assert m.silent(114.0, clock_s=53.5) == []
    plain = NodeMonitor({'camera': 2.0})                 # data-paced: wall clock alone
    plain.seen('camera', 100.0, clock_s=50.0)
    assert [p.node for p in plain.silent(102.5, clock_s=50.1)] == ['camera']


def test_a_node_clock_that_goes_back_does_not_keep_a_silent_node_live():
    """A simulator restarted while the manager runs starts its clock at 0 again: neither the
    old clock nor a maximum of both may make a silent logger look live on the node clock."""
    m = NodeMonitor({'logger': 3.0}, clock_paced=('logger',))
    m.seen('logger', 100.0, clock_s=500.0)
    # restarted simulator, the logger silent since wall 100: the wall clock decides
    assert [p.node for p in m.silent(104.0, clock_s=1.0)] == ['logger']
    assert m.silent(102.0, clock_s=1.0) == []            # within its timeout on the wall clock
    m.seen('logger', 105.0, clock_s=0.2)                 # heard again on the new clock
    assert m.silent(109.0, clock_s=1.0) == []            # slow simulated time: still live
    assert [p.node for p in m.silent(109.0, clock_s=3.5)] == ['logger']   # 3.3 s on both
