"""Locate the package's shared files (config/, models/, urdf/, launch/); tell shipped models.

Works for a colcon install (ament index share directory) and for a pip/editable install in a
venv (the source tree next to the ``awopt_ros`` Python package).
"""
import os
from contextlib import suppress
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def share_dir():
    """Return the directory holding config/, models/, urdf/ and launch/ (a ``Path``)."""
    if (_SOURCE_ROOT / 'config').is_dir() and (_SOURCE_ROOT / 'package.xml').is_file():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('awopt_ros'))
    except Exception as exc:  # noqa: BLE001 - any lookup failure means the same thing here
        raise FileNotFoundError(
            'cannot find the awopt_ros share directory (no source tree, no ament index entry)'
        ) from exc


def resolve(path):
    """Resolve ``path``: absolute paths as they are, relative ones against the share dir."""
    p = Path(path)
    return p if p.is_absolute() else share_dir() / p


def models_dir():
    """Return the shipped models folder, ``<share dir>/models`` (a ``Path``; None when the
    share directory cannot be found)."""
    try:
        return share_dir() / 'models'
    except FileNotFoundError:
        return None


def is_shipped(path):
    """Return True when ``path`` is a file inside the shipped models folder
    (:func:`models_dir`, links resolved): the models the package ships and ``make demo``
    runs, which no command may overwrite without being told (``--force``)."""
    folder = models_dir()
    if folder is None:
        return False
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def fsync_dir(path):
    """fsync every file directly in directory ``path``, then the directory itself (best
    effort for the directory), so that what was written there survives a power cut.

    Raises:
        OSError: a file could not be opened or synced.
    """
    for file in Path(path).iterdir():
        if file.is_file():
            with file.open('rb') as stream:
                os.fsync(stream.fileno())
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
