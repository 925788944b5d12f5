"""awopt_ros/tools/build_interfaces.py without building: stamp, skip rules, tool checks."""
import shutil

import pytest

from awopt_ros.tools import build_interfaces as bi


def _copy_sources(tmp_path):
    dst = tmp_path / 'interfaces'
    shutil.copytree(bi.SOURCE_DIR, dst)
    return dst


def test_definitions_hash_follows_every_definition_file(tmp_path):
    src = _copy_sources(tmp_path)
    first = bi.definitions_hash(src)
    assert bi.definitions_hash(src) == first
    action = src / 'control_msgs' / 'action' / 'FollowJointTrajectory.action'
    action.write_text(action.read_text().replace('int32 multi_dof_index\n', ''))
    edited = bi.definitions_hash(src)
    assert edited != first
    (src / 'tf2_msgs' / 'msg' / 'Extra.msg').write_text('int32 a\n')
    assert bi.definitions_hash(src) not in (first, edited)     # a new file changes it too


def _fake_ros(tmp_path, *packages):
    ros = tmp_path / 'opt_ros'
    for pkg in packages:
        (ros / 'share' / pkg).mkdir(parents=True)
        (ros / 'share' / pkg / 'package.xml').write_text('<package/>')
    return ros


def test_ros_install_on_ament_prefix_path_is_found(tmp_path, monkeypatch):
    prefix = tmp_path / 'venv'
    ros = _fake_ros(tmp_path, 'control_msgs')
    monkeypatch.setenv('AMENT_PREFIX_PATH', f'{prefix}:{ros}')
    assert bi.provided_outside('control_msgs', prefix) == f'{ros} (AMENT_PREFIX_PATH)'
    # An entry that is the prefix itself (the venv we build into) does not count.
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    monkeypatch.setattr(bi.importlib.util, 'find_spec', lambda name: None)
    assert bi.provided_outside('control_msgs', prefix) is None


def test_build_skipped_when_a_ros_install_provides_every_package(tmp_path, monkeypatch, capsys):
    ros = _fake_ros(tmp_path, *bi.PACKAGES)
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(ros))
    monkeypatch.setattr(bi, 'check_tools', pytest.fail)   # nothing may be built
    assert bi.build(tmp_path / 'venv', 'python3') == 'skipped-ros'
    assert 'provided by a ROS install' in capsys.readouterr().out


def _installed_prefix(tmp_path, stamp_text):
    prefix = tmp_path / 'venv'
    for pkg in bi.PACKAGES:
        index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
        index.mkdir(parents=True, exist_ok=True)
        (index / pkg).write_text('')
        site = prefix / 'lib' / 'python3.11' / 'site-packages' / pkg
        site.mkdir(parents=True)
        (site / '__init__.py').write_text('')
    (prefix / bi.STAMP_NAME).write_text(stamp_text)
    return prefix


def test_up_to_date_only_when_stamp_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(bi, 'provided_outside', lambda pkg, prefix: None)
    prefix = _installed_prefix(tmp_path, bi.definitions_hash() + '\n')
    monkeypatch.setattr(bi, 'check_tools', pytest.fail)
    assert bi.build(prefix, 'python3') == 'up-to-date'

    # Changed definitions (another stamp): a rebuild; a failed step leaves no stamp behind.
    (prefix / bi.STAMP_NAME).write_text('0' * 64 + '\n')
    built = []

    def fail_build(pkg, *args):
        built.append(pkg)
        raise bi.BuildError(f'{pkg}: build failed')

    monkeypatch.setattr(bi, 'check_tools', lambda python, prefix: {})
    monkeypatch.setattr(bi, 'build_package', fail_build)
    with pytest.raises(bi.BuildError):
        bi.build(prefix, 'python3')
    assert built == [bi.PACKAGES[0]]
    assert not (prefix / bi.STAMP_NAME).exists()


def test_missing_cmake_and_compiler_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(bi.shutil, 'which', lambda name: None)
    monkeypatch.delenv('CC', raising=False)
    monkeypatch.delenv('CXX', raising=False)
    with pytest.raises(bi.BuildError) as err:
        bi.check_tools(bi.sys.executable, tmp_path)
    text = str(err.value)
    assert 'cmake' in text and 'compiler' in text and 'rosidl wheels' in text


def test_main_reports_errors_with_exit_status_1(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise bi.BuildError('missing: cmake (apt-get install cmake)')

    monkeypatch.setattr(bi, 'build', fail)
    assert bi.main(['--prefix', str(tmp_path)]) == 1
    assert 'apt-get install cmake' in capsys.readouterr().err
