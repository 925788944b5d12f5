"""Command-line helpers shared by the ``awopt`` commands: option types, one-line usage
errors, the help formatter, and the guard that keeps outputs from overwriting files.

Bad input ends a command with one line on stderr in argparse's own form, naming the option,
and exit status 2 (as argparse does for a malformed option)::

    awopt train: error: argument --dataset-id: no dataset 'awopt/x-v0' under runs/collect; ...

Checks that argparse can make itself (a count that must be >= 1) are option types
(:func:`count`); checks that need the file system (a dataset, a model file, an output that
exists) raise :class:`UsageError` in the command, which :func:`usage_error` prints.
"""
import argparse
import re
import sys
from pathlib import Path


class UsageError(ValueError):
    """Bad command-line input: ``option`` (e.g. ``'--dataset-id'``, or '' when no single
    option is at fault) and a message. ``str()`` is argparse's ``argument OPTION: message``."""

    def __init__(self, option, message):
        """Store ``option`` and ``message`` (str)."""
        super().__init__(message)
        self.option = str(option or '')
        self.message = str(message)

    def __str__(self):
        return f'argument {self.option}: {self.message}' if self.option else self.message


def usage_error(prog, error):
    """Print ``<prog>: error: <error>`` (one line, stderr) and return exit status 2.

    ``error`` is a :class:`UsageError`, another exception or a string; line breaks in it are
    folded so that the error stays on one line.
    """
    text = ' '.join(str(error).split())
    print(f'{prog}: error: {text}', file=sys.stderr)
    return 2


def count(minimum=1, kind=int):
    """Return an argparse ``type`` that parses ``kind`` (int or float) and rejects values below
    ``minimum`` with ``must be >= minimum, got VALUE`` (argparse then names the option)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'expected {"an integer" if kind is int else "a number"}, got {text!r}') from None
        if not value >= minimum:          # also rejects NaN
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {text}')
        return value
    parse.__name__ = f'{kind.__name__} >= {minimum}'
    return parse


#: Option types: integers >= 1 and >= 0, numbers >= 0.
positive_int = count(1)
nonnegative_int = count(0)
nonnegative_float = count(0.0, float)


def probability(text):
    """argparse ``type``: a number in [0, 1]."""
    value = nonnegative_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f'must be in [0, 1], got {text}')
    return value


def require_file(option, path, what='file'):
    """Return ``Path(path)``; :class:`UsageError` naming ``option`` when it is not a file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(option, f'{what} not found: {path}' if not p.exists()
                         else f'{path} is not a file')
    return p


def check_outputs(outputs, force=False, keep=()):
    """Refuse to overwrite files without ``--force``.

    Args:
        outputs: iterable of ``(option, path)``: the files a command will write and the
            option that chose each (e.g. ``('--out', 'runs/train/x/grasp_bc.onnx')``).
        force: ``--force`` was given: nothing is refused.
        keep: paths that may be replaced without ``--force`` (e.g. the checkpoint a
            ``--resume`` continues), unless they are shipped files
            (:func:`awopt_ros.core.paths.is_shipped`).

    Raises:
        UsageError: the first output that exists (naming it and its option), or, without
            ``force``, a shipped file among ``keep``.
    """
    from awopt_ros.core.paths import is_shipped
    if force:
        return
    kept = {Path(p).absolute() for p in keep}
    for option, path in outputs:
        p = Path(path)
        if not p.exists():
            continue
        shipped = is_shipped(p)
        if p.absolute() in kept and not shipped:
            continue
        what = 'a shipped model file' if shipped else 'it exists'
        raise UsageError(option, f'{path} would be overwritten ({what}); pass --force to '
                                 'overwrite it, or choose another path')


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default: ``(default: X)`` is appended to an option's
    help unless the help already says its default (or the option is an on/off flag or
    required)."""

    _SAYS_DEFAULT = re.compile(r'%\(default\)|\bdefault\b', re.IGNORECASE)

    def __init__(self, prog, indent_increment=2, max_help_position=30, width=None):
        """argparse's formatter with room for the longest command name
        (``collect-success-frames``) before its help."""
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action):
        text = action.help or ''
        if (action.default is argparse.SUPPRESS or action.required
                or self._SAYS_DEFAULT.search(text) or isinstance(action.const, bool)
                or action.nargs == 0):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL,
                                                     argparse.ZERO_OR_MORE):
            return f'{text} (default: %(default)s)'
        return text

    def add_argument(self, action):
        """Also count the indent of a command list's entries (argparse leaves it out, so a
        long command name would push its help onto a second line)."""
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.help != argparse.SUPPRESS:
            longest = max((len(self._format_action_invocation(a))
                           for a in action._get_subactions()), default=0)
            self._action_max_length = max(self._action_max_length, longest
                                          + self._current_indent + self._indent_increment)
