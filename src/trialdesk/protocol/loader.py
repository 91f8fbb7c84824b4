"""Reads a protocol file and reports every problem in it with its YAML line.

A protocol author fixes a file faster from one complete list of "line 12: visits[2]...: ..."
than from the first pydantic traceback, so nothing here stops at the first problem: YAML
syntax, duplicate keys, each model error and each cross-file check (:mod:`.checks`) become a
:class:`Problem`, and :class:`ProtocolInvalid` carries them all.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trialdesk.domain.errors import TrialError
from trialdesk.protocol.checks import check_protocol
from trialdesk.protocol.models import Protocol

FLAGSHIP_FILE = "flagship.yaml"

PathPart = str | int
_RULE_BRANCHES = {
    "Condition": "a condition (field, op, value)",
    "AllOf": "all: [rules]",
    "AnyOf": "any: [rules]",
    "NotRule": "not: rule",
}
_TAG_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true/false"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a protocol file; ``path`` is e.g. ``visits[2].window_before``."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        parts = [f"line {self.line}"] if self.line is not None else []
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class ProtocolInvalid(TrialError):
    """The protocol file cannot be used; ``problems`` lists everything found, in line order."""

    code = "protocol-invalid"

    def __init__(self, source: str, problems: list[Problem]) -> None:
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        first = f"; first: {problems[0]}" if problems else ""
        super().__init__(f"protocol file {source} has {count} {noun}{first}")
        self.source = source
        self.problems = list(problems)


@dataclass(frozen=True)
class LoadedProtocol:
    """A validated protocol with the fingerprint records point to (PROT-2, PROT-3)."""

    protocol: Protocol
    sha256: str
    text: str
    source: str


def flagship_path() -> Path:
    """The flagship protocol shipped inside the package."""
    return Path(str(resources.files("trialdesk.protocol").joinpath(FLAGSHIP_FILE)))


def load_protocol(path: str | Path | None = None) -> LoadedProtocol:
    """Read and validate a protocol file (the flagship when ``path`` is None).

    Raises :class:`ProtocolInvalid` for anything wrong, including an unreadable file.
    """
    file = flagship_path() if path is None else Path(path)
    source = str(file)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ProtocolInvalid(source, [Problem("", None, "file not found")]) from None
    except IsADirectoryError:
        raise ProtocolInvalid(source, [Problem("", None, "is a directory, not a file")]) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ProtocolInvalid(source, [Problem("", None, f"cannot read: {reason}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded"
        raise ProtocolInvalid(source, [Problem("", line, message)]) from None
    return _parse(text, source, hashlib.sha256(data).hexdigest())


def parse_protocol(text: str, source: str = "<string>") -> LoadedProtocol:
    """Validate protocol text; the fingerprint is the SHA-256 of its UTF-8 bytes."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise ProtocolInvalid(source, [Problem("", line, "not UTF-8 text")]) from None
    return _parse(text, source, hashlib.sha256(data).hexdigest())


def format_path(parts: tuple[PathPart, ...] | list[PathPart]) -> str:
    """``("visits", 2, "window_before")`` -> ``visits[2].window_before``."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _parse(text: str, source: str, sha256: str) -> LoadedProtocol:
    problems: list[Problem] = []
    if not text.strip():
        raise ProtocolInvalid(source, [Problem("", None, "file is empty")])
    lines: dict[str, int] = {"": 1}
    try:
        data = _read_yaml(_FAST_LOADER, text, lines, problems)
    except Exception:  # libyaml refused it: the pure loader names the problem as always
        lines, problems = {"": 1}, []
        data = _read_python_yaml(text, source, lines, problems)
    if data is None:
        raise ProtocolInvalid(source, [Problem("", None, "file is empty")])
    if not isinstance(data, dict):
        kind = _describe_input(data)
        message = f"the top level must be a mapping of keys (name, version, ...), not {kind}"
        raise ProtocolInvalid(source, [Problem("", 1, message)])

    protocol: Protocol | None = None
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        for path, message in _model_problems(exc, data):
            problems.append(Problem(path, _line_of(path, lines), message))
    except RecursionError:
        problems.append(Problem("", 1, "the file refers to itself (recursive YAML alias)"))
    if protocol is not None:
        for path, message in check_protocol(protocol):
            problems.append(Problem(path, _line_of(path, lines), message))
    if problems or protocol is None:
        problems.sort(key=lambda p: p.line if p.line is not None else 0)
        raise ProtocolInvalid(source, problems)
    return LoadedProtocol(protocol=protocol, sha256=sha256, text=text, source=source)


_FAST_LOADER: type[Any] | None = getattr(yaml, "CSafeLoader", None)
"""libyaml's loader when PyYAML was built with it: about ten times faster on the flagship
file. Only a document it reads without error is taken from it; anything it refuses is read
again by the pure-Python loader, whose messages the refusals quote."""


def _read_yaml(
    loader_class: type[Any] | None,
    text: str,
    lines: dict[str, int],
    problems: list[Problem],
) -> Any:
    if loader_class is None:
        raise LookupError("no libyaml")
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _map_lines(loader, node, (), lines, problems, set())
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _read_python_yaml(
    text: str, source: str, lines: dict[str, int], problems: list[Problem]
) -> Any:
    try:
        loader = yaml.SafeLoader(text)  # reads the first chunk: may refuse a character
    except yaml.reader.ReaderError as exc:
        raise ProtocolInvalid(source, [_reader_problem(text, exc)]) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _map_lines(loader, node, (), lines, problems, set())
        return loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ProtocolInvalid(source, [_yaml_problem(exc)]) from None
    except yaml.reader.ReaderError as exc:
        raise ProtocolInvalid(source, [_reader_problem(text, exc)]) from None
    except yaml.YAMLError as exc:
        raise ProtocolInvalid(source, [Problem("", None, f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = ": ".join(part for part in (exc.context, exc.problem) if part) or "not valid YAML"
    return Problem("", mark.line + 1 if mark is not None else None, f"YAML syntax: {what}")


def _reader_problem(text: str, exc: yaml.reader.ReaderError) -> Problem:
    """A character YAML does not allow (a control character), with its line."""
    line = text.count("\n", 0, exc.position) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return Problem("", line, f"character U+{ord(char):04X} is not allowed in a protocol file")


def _map_lines(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: tuple[PathPart, ...],
    lines: dict[str, int],
    problems: list[Problem],
    seen: set[int],
) -> None:
    """Record the line of every key and item, and each duplicate key (PyYAML keeps the last)."""
    if id(node) in seen:  # an alias: its lines are recorded where the anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                earlier = first.get(key)
            except TypeError:
                continue
            child = (*path, key)
            if earlier is not None:
                message = f"duplicate key '{key}' (first at line {earlier})"
                problems.append(Problem(format_path(child), line, message))
            else:
                first[key] = line
            lines[format_path(child)] = line
            _map_lines(loader, value_node, child, lines, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[format_path(child)] = item.start_mark.line + 1
            _map_lines(loader, item, child, lines, problems, seen)


_LAST_PART = re.compile(r"(\.[^.\[\]]*|\[\d+\])$")


def _line_of(path: str, lines: dict[str, int]) -> int | None:
    """The line of ``path``, or of its nearest ancestor present in the file."""
    while True:
        if path in lines:
            return lines[path]
        shorter = _LAST_PART.sub("", path)
        if shorter == path:
            return lines.get("")
        path = shorter


def _model_problems(exc: ValidationError, data: dict[str, Any]) -> list[tuple[str, str]]:
    """Map pydantic errors to (yaml path, message), one per real problem.

    Unions (a rule is a condition, all, any or not) make pydantic report an error per branch;
    the branch the author meant is the one whose key is present, and a value fitting no branch
    is one problem, not five.
    """
    errors = exc.errors(include_url=False)
    located = [_locate(err["loc"], data, err["type"]) for err in errors]
    tags_at: dict[tuple[PathPart, ...], list[str]] = {}
    for _, points in located:
        for point, tag in points:
            tags = tags_at.setdefault(point, [])
            if tag not in tags:
                tags.append(tag)

    out: list[tuple[str, str]] = []
    collapsed: set[tuple[PathPart, ...]] = set()
    for err, (path, points) in zip(errors, located, strict=True):
        keep = True
        for point, tag in points:
            value = _value_at(data, point)
            chosen = _chosen_branch(value, tags_at[point])
            if chosen is None:
                keep = False
                if point not in collapsed:
                    collapsed.add(point)
                    out.append((format_path(point), _union_message(tags_at[point], value)))
                break
            if tag != chosen:
                keep = False
                break
        if keep:
            out.append((format_path(path), _message(err, path, data)))
    return out


def _locate(
    loc: tuple[PathPart, ...], data: Any, err_type: str
) -> tuple[tuple[PathPart, ...], list[tuple[tuple[PathPart, ...], str]]]:
    """Split a pydantic ``loc`` into the data path and the union branches it went through."""
    path: list[PathPart] = []
    points: list[tuple[tuple[PathPart, ...], str]] = []
    current: Any = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if _has_child(current, part):
            current = current[part]
        elif isinstance(current, dict) and last and err_type in ("missing", "extra_forbidden"):
            pass
        elif isinstance(part, str) and (not isinstance(current, dict) or _is_tag(part)):
            points.append((tuple(path), part))
            continue
        else:  # pydantic and the data disagree; keep the rest of loc as the path
            path.extend(loc[index:])
            break
        path.append(part)
    return tuple(path), points


def _has_child(current: Any, part: PathPart) -> bool:
    if isinstance(current, dict):
        return part in current
    return isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)


def _is_tag(part: str) -> bool:
    return part in _RULE_BRANCHES or part in _TAG_WORDS or "[" in part


def _value_at(data: Any, path: tuple[PathPart, ...]) -> Any:
    current = data
    for part in path:
        current = current[part]
    return current


def _chosen_branch(value: Any, tags: list[str]) -> str | None:
    if not isinstance(value, dict) or not set(tags) <= set(_RULE_BRANCHES):
        return None
    for key, branch in (("all", "AllOf"), ("any", "AnyOf"), ("not", "NotRule")):
        if key in value:
            return branch
    return "Condition" if {"field", "op", "value"} & set(value) else None


def _union_message(tags: list[str], value: Any) -> str:
    message = f"expected {_describe_tags(tags)}; got {_describe_input(value)}"
    if isinstance(value, dict) and value:
        keys = [str(key) for key in value]
        message += f" with {', '.join(repr(key) for key in keys)}"
        words = ["field", "op", "value", "all", "any", "not"]
        close = [m for key in keys for m in difflib.get_close_matches(key, words, n=1)]
        if set(tags) <= set(_RULE_BRANCHES) and close:
            message += f" (did you mean '{close[0]}'?)"
    return message


def _describe_tags(tags: list[str]) -> str:
    words: list[str] = []
    for tag in tags:
        if tag in _RULE_BRANCHES:
            word = _RULE_BRANCHES[tag]
        elif tag.startswith("list["):
            word = "a list of those"
        else:
            word = _TAG_WORDS.get(tag, tag)
        if word not in words:
            words.append(word)
    if "a whole number" in words and "a number" in words:
        words.remove("a whole number")
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _describe_input(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text {shown!r}"
    if isinstance(value, int | float):
        return str(value)
    return f"{type(value).__name__} {value!s:.40}"


def _message(err: Any, path: tuple[PathPart, ...], data: Any) -> str:
    err_type: str = err["type"]
    if err_type == "missing":
        return "required key missing"
    if err_type == "extra_forbidden":
        message = "unknown key"
        allowed = _keys_at(tuple(err["loc"]))
        if allowed and isinstance(path[-1], str):
            close = difflib.get_close_matches(path[-1], allowed, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean '{close[0]}'?)"
            else:
                message += f" (allowed: {', '.join(allowed)})"
        return message
    if err_type == "invalid_key":
        return "keys must be text"
    msg = str(err["msg"]).removeprefix("Value error, ")
    message = msg[:1].lower() + msg[1:]
    value = err.get("input")
    if err_type == "string_type" and value is not None and not isinstance(value, dict | list):
        return f"{message}; got {_describe_input(value)}: put it in quotes"
    if not isinstance(value, dict | list):
        message += f"; got {_describe_input(value)}"
    return message


def _keys_at(loc: tuple[PathPart, ...]) -> list[str] | None:
    """The keys the model at ``loc[:-1]`` accepts, for a "did you mean" hint."""
    tp: Any = Protocol
    for part in loc[:-1]:
        tp = _unwrap(tp, part)
        if tp is None:
            return None
    tp = _unwrap(tp, None)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return None


def _unwrap(tp: Any, part: PathPart | None) -> Any:
    """One step down the model types: a field of a model, an item of a list, a union branch."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            named = [arg for arg in args if getattr(arg, "__name__", None) == part]
            if named:
                return named[0]
            if len(args) == 1:
                tp = args[0]
                continue
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if part is None or not models:
                return None
            tp = models[0] if len(models) == 1 else None
            if tp is None:
                return None
            continue
        break
    if part is None:
        return tp
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
        for name, info in tp.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    if typing.get_origin(tp) is list and isinstance(part, int):
        return typing.get_args(tp)[0]
    return None
