"""Read YAML text into plain dicts, lists and strings that remember where they came from.

Why not ``YAML().load``: error messages must name the line and column of the offending
value *after* validation, and the loader must refuse hostile input (alias bombs, huge or
deeply nested documents) before it costs memory. Building the tree from parser events
gives both: every container records the position of its keys and values, and every node,
including each expansion of an alias, is counted against :class:`Limits`.

Scalars are kept as the exact text the user wrote (``pythonVersion: 3.10`` stays
``"3.10"``, never the float 3.1); only plain ``null``/``~``/empty become ``None``. Typing the
text (numbers, booleans, quantities) is the job of the models that know what a field means.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from ame.spec.errors import Problem, SpecError

Mark: TypeAlias = tuple[int, int]
"""1-based (line, column)."""

Node: TypeAlias = "LocDict | LocList | str | None"

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_STANDARD_TAG = "tag:yaml.org,2002:"
_MERGE_KEY = "<<"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep a hostile or broken file from taking the loader down.

    The defaults are far above any real project (a 500-task project is ~150 KiB and ~20,000
    nodes) and low enough that refusing a bad file takes milliseconds.
    """

    max_bytes: int = 4 * 1024 * 1024
    max_nodes: int = 250_000
    max_depth: int = 64


class LocDict(dict[str, Any]):
    """A mapping that knows where it, its keys and its values are in the source file."""

    __slots__ = ("key_marks", "mark", "schema", "synthetic", "tag", "value_marks")

    def __init__(self, mark: Mark, tag: str | None = None) -> None:
        super().__init__()
        self.mark = mark
        self.tag = tag
        self.key_marks: dict[str, Mark] = {}
        self.value_marks: dict[str, Mark] = {}
        # Set by the models while validating: which model read this mapping, so an unknown
        # key can be answered with that model's field names.
        self.schema: type | None = None
        self.synthetic = False

    def put(self, key: str, value: Any, key_mark: Mark, value_mark: Mark) -> None:
        """Store ``value`` under ``key`` together with both positions."""
        self[key] = value
        self.key_marks[key] = key_mark
        self.value_marks[key] = value_mark

    def value_mark(self, key: str) -> Mark:
        """Where the value of ``key`` starts (the mapping itself if unknown)."""
        return self.value_marks.get(key, self.mark)

    def key_mark(self, key: str) -> Mark:
        """Where ``key`` itself is written (the mapping itself if unknown)."""
        return self.key_marks.get(key, self.mark)


class LocList(list[Any]):
    """A sequence that knows where it and each of its items are in the source file."""

    __slots__ = ("item_marks", "mark", "synthetic", "tag")

    def __init__(self, mark: Mark, tag: str | None = None) -> None:
        super().__init__()
        self.mark = mark
        self.tag = tag
        self.item_marks: list[Mark] = []
        # True for lists the normaliser made up (a sequential pipeline step wrapped as a
        # one-task stage); such lists are skipped when a path is shown to the user.
        self.synthetic = False

    def push(self, value: Any, mark: Mark) -> None:
        """Append ``value`` with its position."""
        self.append(value)
        self.item_marks.append(mark)

    def item_mark(self, index: int) -> Mark:
        """Where item ``index`` starts (the list itself if out of range)."""
        return self.item_marks[index] if 0 <= index < len(self.item_marks) else self.mark


def mark_of(node: Any, default: Mark) -> Mark:
    """The position of a container, or ``default`` for scalars (which carry none)."""
    return node.mark if isinstance(node, LocDict | LocList) else default


def read_yaml(text: str, filename: str, limits: Limits | None = None) -> tuple[Any, list[Problem]]:
    """Parse one YAML document into a located tree.

    Returns the tree (``None`` for an empty document) and the non-fatal problems found while
    building it (duplicate keys, non-string keys, stray tags). Syntax errors and exceeded
    limits are fatal and raised.

    Raises:
        SpecError: the text is not YAML, holds several documents, or exceeds ``limits``.
    """
    limits = limits or Limits()
    if len(text) > limits.max_bytes:
        raise SpecError.single(f"file is larger than the {limits.max_bytes // 1024} KiB limit for AME files", filename)
    builder = _TreeBuilder(filename, limits)
    try:
        return builder.build(_events(text)), builder.problems
    except SpecError:
        raise
    except RecursionError:
        raise SpecError.single("document is nested too deeply", filename) from None
    except Exception as error:  # the parser's own errors, whatever their class
        raise _syntax_error(error, text, filename) from None


def _events(text: str) -> Iterator[Any]:
    import ruamel.yaml

    # "safe" uses the libyaml-based C parser when ruamel.yaml.clib is installed (~20x faster
    # than the pure parser) and falls back to the pure one otherwise; both give marks.
    return iter(ruamel.yaml.YAML(typ="safe").parse(text))


class _TreeBuilder:
    def __init__(self, filename: str, limits: Limits) -> None:
        self.filename = filename
        self.limits = limits
        self.problems: list[Problem] = []
        self.nodes = 0
        self.anchors: dict[str, tuple[Any, int]] = {}

    def build(self, events: Iterator[Any]) -> Any:
        root: Any = None
        documents = 0
        for event in events:
            kind = type(event).__name__
            if kind == "DocumentStartEvent":
                documents += 1
                if documents > 1:
                    self._fatal(
                        event,
                        "an AME file holds a single YAML document; remove the '---' separator "
                        "and put each project in its own directory",
                    )
                root, _ = self._node(next(events), events, 0)
        return root

    def _node(self, event: Any, events: Iterator[Any], depth: int) -> tuple[Any, int]:
        """Build the node that starts with ``event``; return it and its size in nodes."""
        if depth > self.limits.max_depth:
            self._fatal(event, f"document is nested more than {self.limits.max_depth} levels deep")
        kind = type(event).__name__
        if kind == "AliasEvent":
            return self._alias(event)
        self._count(event, 1)
        if kind == "ScalarEvent":
            node, size = self._scalar(event), 1
        elif kind == "SequenceStartEvent":
            node, size = self._sequence(event, events, depth)
        elif kind == "MappingStartEvent":
            node, size = self._mapping(event, events, depth)
        else:  # pragma: no cover - the parser guarantees a node here
            self._fatal(event, f"unexpected YAML event {kind}")
        if getattr(event, "anchor", None):
            self.anchors[event.anchor] = (node, size)
        return node, size

    def _alias(self, event: Any) -> tuple[Any, int]:
        if event.anchor not in self.anchors:
            self._fatal(event, f"unknown alias '*{event.anchor}'")
        node, size = self.anchors[event.anchor]
        # Aliases are shared, not copied, but each use counts in full: this is what stops a
        # "billion laughs" document after a few thousand events instead of after 10**9.
        self._count(event, size)
        return node, size

    def _scalar(self, event: Any) -> Any:
        tag = _tag(event.tag)
        plain = bool(event.implicit[0]) and not event.style
        value: str = event.value
        if tag is None:
            return None if plain and value in _NULLS else value
        if tag.startswith(_STANDARD_TAG):
            return None if tag == _STANDARD_TAG + "null" else value
        if value == "":
            # `executor: !mlflow` with nothing after it: a tagged empty mapping.
            return LocDict(_mark(event), tag=tag)
        self._problem(event, f"the tag !{tag.lstrip('!')} must be followed by a mapping of its fields")
        return value

    def _sequence(self, event: Any, events: Iterator[Any], depth: int) -> tuple[LocList, int]:
        node = LocList(_mark(event), tag=_custom_tag(event.tag))
        size = 1
        for item_event in events:
            if type(item_event).__name__ == "SequenceEndEvent":
                break
            item, item_size = self._node(item_event, events, depth + 1)
            node.push(item, _mark(item_event))
            size += item_size
        return node, size

    def _mapping(self, event: Any, events: Iterator[Any], depth: int) -> tuple[LocDict, int]:
        node = LocDict(_mark(event), tag=_custom_tag(event.tag))
        size = 1
        merged: list[LocDict] = []
        for key_event in events:
            if type(key_event).__name__ == "MappingEndEvent":
                break
            key, key_size = self._node(key_event, events, depth + 1)
            value_event = next(events)
            value, value_size = self._node(value_event, events, depth + 1)
            size += key_size + value_size
            if key == _MERGE_KEY and type(key_event).__name__ == "ScalarEvent" and key_event.implicit[0]:
                merged.extend(self._merge_sources(value, value_event))
                continue
            if not isinstance(key, str):
                self._problem(key_event, "mapping keys must be plain text")
                continue
            if key in node:
                line, column = node.key_mark(key)
                self._problem(key_event, f"duplicate key '{key}' (first given at line {line}, column {column})")
                continue
            node.put(key, value, _mark(key_event), _mark(value_event))
        for source in merged:  # YAML merge keys: explicit keys win over merged ones
            for key, value in source.items():
                if key not in node:
                    node.put(key, value, source.key_mark(key), source.value_mark(key))
        return node, size

    def _merge_sources(self, value: Any, event: Any) -> list[LocDict]:
        sources = value if isinstance(value, LocList) else [value]
        if all(isinstance(source, LocDict) for source in sources):
            return list(sources)
        self._problem(event, "'<<' merges a mapping or a list of mappings")
        return []

    def _count(self, event: Any, size: int) -> None:
        self.nodes += size
        if self.nodes > self.limits.max_nodes:
            self._fatal(
                event,
                f"document expands to more than {self.limits.max_nodes} YAML nodes "
                "(too many aliases or a far too large file)",
            )

    def _problem(self, event: Any, message: str) -> None:
        line, column = _mark(event)
        self.problems.append(Problem(self.filename, line, column, message))

    def _fatal(self, event: Any, message: str) -> Any:
        line, column = _mark(event)
        raise SpecError.single(message, self.filename, line, column)


def _mark(event: Any) -> Mark:
    return (event.start_mark.line + 1, event.start_mark.column + 1)


def _tag(tag: Any) -> str | None:
    if tag is None:
        return None
    text = str(getattr(tag, "value", tag))
    return text or None


def _custom_tag(tag: Any) -> str | None:
    text = _tag(tag)
    return None if text is None or text.startswith(_STANDARD_TAG) else text


def _syntax_error(error: Exception, text: str, filename: str) -> SpecError:
    """Turn a parser exception into a positioned, readable problem."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    context_mark = getattr(error, "context_mark", None)
    problem = str(getattr(error, "problem", None) or error).strip()
    context = getattr(error, "context", None)
    message = f"invalid YAML: {problem}"
    if context:
        message = f"invalid YAML: {problem} ({context})"
    if mark is None:
        return SpecError.single(message, filename)
    line, column = mark.line + 1, mark.column + 1
    lines = text.splitlines()
    current = lines[mark.line] if mark.line < len(lines) else ""
    hint = ""
    if context and "alias" in context:
        hint = ". A value starting with '*' is read as a YAML alias; quote it, e.g. schedule: \"*/5 * * * *\""
    elif "mapping values are not allowed" in problem:
        hint = _indentation_hint(lines, mark.line)
        if hint:
            # Point at the key that is too deep, not at its colon.
            column = len(current) - len(current.lstrip(" ")) + 1
        else:
            hint = ". A ': ' inside a value starts a new key; quote the value if it contains ': '"
    elif context_mark is not None and "block" in (context or "") and _indent(current) != context_mark.column:
        hint = (
            f". This line starts in column {_indent(current) + 1}, but the block it belongs to "
            f"(line {context_mark.line + 1}) has its entries in column {context_mark.column + 1}; "
            "entries of one block must line up"
        )
    elif _after_bare_tag(lines, mark.line):
        hint = (
            ". A tag such as !poetry and the fields after it must be indented under 'executor:' "
            "(two spaces deeper), and the task's fields under its '- name:' line"
        )
    elif "\t" in current:
        hint = ". YAML indentation must use spaces, not tabs"
    return SpecError.single(message + hint, filename, line, column)


def _indentation_hint(lines: list[str], line: int) -> str:
    """Explain the classic slip of indenting a key deeper than its siblings.

    ``- name: preprocessing`` followed by a line indented further (``    executor:``) makes
    YAML read ``executor`` as the continuation of the value ``preprocessing``.
    """
    current = lines[line] if line < len(lines) else ""
    indent = len(current) - len(current.lstrip(" "))
    key = current.strip().split(":", 1)[0]
    for previous_index in range(line - 1, -1, -1):
        previous = lines[previous_index]
        stripped = previous.strip()
        if not stripped or stripped.startswith("#"):
            continue
        body = previous.lstrip(" ")
        key_column = len(previous) - len(body)
        while body.startswith("- "):
            rest = body[2:]
            body = rest.lstrip(" ")
            key_column += 2 + len(rest) - len(body)
        previous_key, _, previous_value = body.partition(":")
        # Only a key that already has a value on its own line can be "continued" by mistake;
        # `executor:` followed by a deeper line is an ordinary nested mapping.
        if not previous_value.split("#", 1)[0].strip() or key_column >= indent:
            return ""
        extra = indent - key_column
        return (
            f". '{key}:' is indented {extra} more space{'s' if extra != 1 else ''} than "
            f"'{previous_key}:' on line {previous_index + 1}, so YAML reads it as part of the value of "
            f"'{previous_key}'. If '{key}' belongs to the same item as '{previous_key}', start it in "
            f"column {key_column + 1} (remove {extra} space{'s' if extra != 1 else ''} from it and "
            "from every line of its block)"
        )
    return ""


def _after_bare_tag(lines: list[str], line: int) -> bool:
    """Whether a line just above ``line`` is a tag standing alone at the start of the line.

    That is what copying the examples from the rendered docs (indentation lost) produces.
    """
    for index in range(min(line, len(lines) - 1), max(line - 3, -1), -1):
        stripped = lines[index].strip()
        if stripped.startswith("!") and " " not in stripped and not lines[index].startswith(" "):
            return True
    return False


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))
