"""Tables and YAML as text: CSV that spreadsheets read as data, not formulas; YAML that refuses a
key given twice; why a YAML file could not be read, in one line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from segmix.errors import first_line

# A cell a spreadsheet would read as a formula (=, +, -, @, a tab or carriage return first), or one
# that starts with the quote that marks such cells as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def _text_cell(value):
    """``value`` for a CSV cell: a string a spreadsheet would run as a formula gets a leading ``'``
    (shown as text); numbers and other strings as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def csv_text(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    """``rows`` as CSV text with a header (``fieldnames``, default the first row's keys). Strings
    that a spreadsheet would run as a formula, such as a class named ``=HYPERLINK(...)``, are
    written as text (a leading ``'``, which :func:`read_csv` takes off again).

    >>> print(csv_text([{"class": "=1+1", "area": -0.5}]), end="")
    class,area
    '=1+1,-0.5
    """
    names = fieldnames or list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names)
    writer.writerow({n: _text_cell(n) for n in names})
    writer.writerows({k: _text_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file that :func:`csv_text` wrote, each cell as it was given to it.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text(csv_text([{"=name": "@x", "n": 3}]))
    >>> read_csv(path)
    [{'=name': '@x', 'n': '3'}]
    """

    def plain(cell: str) -> str:
        return cell[1:] if cell.startswith("'") else cell

    with open(path, newline="") as fh:
        return [{plain(k): plain(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def read_yaml(text: str):
    r"""YAML text as Python data (``yaml.safe_load``), refusing a key given twice in one mapping:
    PyYAML keeps the last silently, and a section written twice would lose the first.

    >>> read_yaml("a: 1\nb: {c: 2}")
    {'a': 1, 'b': {'c': 2}}
    >>> read_yaml("a: 1\na: 2")
    Traceback (most recent call last):
    ...
    yaml.constructor.ConstructorError: ...
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass


def yaml_problem(err: Exception) -> str:
    """Why YAML could not be read, in one line: line, column and problem (no quoted excerpt).

    >>> import yaml
    >>> try:
    ...     read_yaml("a: !!python/name:os.system x")
    ... except yaml.YAMLError as err:
    ...     print(yaml_problem(err))
    line 1, column 4: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'
    """
    if isinstance(err, UnicodeDecodeError):
        return "not a text file"
    if isinstance(err, OSError):
        return err.strerror or first_line(err)
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or first_line(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())
