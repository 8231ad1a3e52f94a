"""The errors a user can cause, and how each becomes one line.

Every error a person can fix (a bad file, folder, config, model file) is a :class:`UserError`:
the command line prints its message as one line and exits with code 2. Anything else is a bug
and keeps its traceback (shown with ``segmix -v`` or ``SEGMIX_DEBUG=1``).

Errors raised inside DataLoader worker processes reach the main process re-wrapped by torch
(the original class rebuilt from the formatted traceback, or a ``RuntimeError`` when that
fails); :func:`user_message` recovers the original one-line message from either form.
"""

from __future__ import annotations

import re
from pathlib import Path


class UserError(ValueError):
    """Something the user can fix; the message names the file, folder or key, and the problem."""


class ConfigError(UserError):
    """A config file or override is invalid; the message names the file (or ``--set``) and the key."""


class OutputError(UserError):
    """An output folder or file cannot be written, or would replace something it must not."""


class ModelFileError(UserError):
    """A model or weights file is missing, unreadable, unsafe to load or of the wrong kind."""


class MissingModelFile(ModelFileError, FileNotFoundError):
    """A model or weights file does not exist."""


class DatasetError(UserError):
    """A dataset file or folder cannot be used; the message names it and says why."""

    def __init__(self, path: str | Path, problem: str | None = None) -> None:
        if problem is None:  # rebuilt from a message alone (torch re-raising a worker's error)
            self.path, self.problem = None, str(path)
            super().__init__(str(path))
            return
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# Torch's wrapper text: "Caught <Class> in DataLoader worker process N.\nOriginal Traceback ...
# \n<module>.<Class>: <message>\n"; the last line holds the original message.
_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.", re.S)


def _user_error_names() -> set[str]:
    names, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def user_message(err: BaseException) -> str | None:
    """The one-line message of a user error, also when it was raised in a DataLoader worker;
    ``None`` when ``err`` is not a user error (a bug)."""
    text = str(err)
    match = _WORKER.match(text)
    if match:
        if match.group(1) not in _user_error_names():
            return None
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    if isinstance(err, UserError):
        return text
    return None
