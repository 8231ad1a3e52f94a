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
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

# What a key of a lost experiment gets instead of "unknown key" (its code went; git and docs keep it).
REMOVED_NOTE = "removed: an experiment that lost where it was measured (CHANGELOG.md, docs/results/)"


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


def first_line(err: BaseException) -> str:
    """The reason quoted in a one-line user error: the first line of an exception's message (its
    type name when it has none). A pydantic error gives its keys and problems instead of its
    header ("1 validation error for ..."), and a message whose first line only announces the
    next (torch's "Error(s) in loading state_dict for Unet:") gives that next line too.

    >>> first_line(ValueError("bad value\\nmore detail"))
    'bad value'
    >>> first_line(RuntimeError("Error(s) in loading state_dict for Unet:\\n\\tsize mismatch for w"))
    'Error(s) in loading state_dict for Unet: size mismatch for w'
    """
    if isinstance(err, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in err.errors()[:3])
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


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


def validation_problems(
    err: ValidationError, model: type[BaseModel], source: Callable[[str], str] | None = None, show_key: bool = True
) -> list[str]:
    """One line per problem of a pydantic error: ``"<source>: <dotted key>: <message>"``.

    ``source(key)`` names where the value came from (a file, a ``--set``, a command-line flag);
    ``show_key=False`` leaves the key out (when the source is the flag that set it). A key that
    a config's ``moved_keys`` maps to a new place is reported with that place.
    """
    lines = []
    for e in err.errors():
        key = ".".join(map(str, e["loc"])) or "(top)"
        line = f"{key}: {_message(e, model)}" if show_key else _message(e, model)
        lines.append(f"{source(key)}: {line}" if source else line)
    return lines


def _message(e: dict, model: type[BaseModel]) -> str:
    if e.get("type") == "extra_forbidden":
        owner = _owner(model, e["loc"][:-1]) if e["loc"] else object
        new = owner.__dict__.get("moved_keys", {}).get(str(e["loc"][-1]))
        if e["loc"] and str(e["loc"][-1]) in owner.__dict__.get("removed_keys", ()):
            return REMOVED_NOTE
        if not new:
            known = list(getattr(owner, "model_fields", {}))
            return f"unknown key; known here: {', '.join(known)}" if known else "unknown key (see `segmix config show`)"
        # A leading dot per section up: ".curriculum.fixed.level" moved out of its section.
        up = len(new) - len(new.lstrip("."))
        where = "".join(f"{part}." for part in e["loc"][: max(0, len(e["loc"]) - 1 - up)])
        return f"moved to {where}{new.lstrip('.')}"
    return e["msg"].removeprefix("Value error, ")


def _owner(model: type[BaseModel], loc: tuple) -> type:
    """The config class that holds the key at ``loc`` (a nested section's class)."""
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return object
        model = field.annotation
    return model
