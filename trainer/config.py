"""YAML configs with dotted command-line overrides (`--set lofi.epochs=3`), loaded into the typed
`Config` of trainer/schema.py: the one place where a config file becomes what the trainer reads.

YAML is read with document limits, like every JSON document (runtime/documents.py): a bounded
size and nesting depth, aliases that may not stand for more than a bounded number of nodes (a
few lines of anchors otherwise expand to billions: "billion laughs"), integers of sane length
(Python refuses to convert one of thousands of digits), and a key given twice in a mapping is
refused instead of the last one silently winning. `--set` takes the same YAML for its values.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml
from lofi.runtime.bounds import MAX_NUMBER_CHARS, OptionError
from lofi.runtime.documents import MAX_DEPTH, read_text
from lofi.runtime.errors import SHOWN_CHARS, LofiError, shown
from lofi.trainer.schema import Config, field_type, validate

MAX_CONFIG_BYTES = 1024**2
# nodes a document may hold once its aliases are expanded (a full config has about 150)
MAX_NODES = 10_000
MERGE = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """A document limit, raised while composing or constructing; the caller names the source."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the document limits (module docstring)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # expanded node count of each composed node

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values once its aliases are expanded")

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            node = self.anchors.get(self.peek_event().anchor)
            if node is not None:
                if id(node) not in self._sizes:
                    raise _Refused(f"alias {shown(self.peek_event().anchor)} refers to itself")
                self._count(self._sizes[id(node)])
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested too deeply (more than {MAX_DEPTH} levels)")
        before = self._nodes
        self._count(1)
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[id(node)] = self._nodes - before
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE:
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                twice = key in seen
            except TypeError:  # an unhashable key: PyYAML's own error names it
                continue
            if twice:
                raise _Refused(
                    f"key {shown(key)} is given twice (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: Any) -> int:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise _Refused(
                f"an integer of {len(node.value)} characters (line {node.start_mark.line + 1}, "
                f"at most {MAX_NUMBER_CHARS})"
            )
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


def _load(text: str, where: str) -> Any:
    """YAML text -> Python values within the document limits (a limit is one LofiError line
    starting with `where`); text that is not YAML raises yaml.YAMLError."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise LofiError(f"{where}: {exc}") from None


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python values within the document limits, or one LofiError line starting
    with `where`."""
    try:
        return _load(text, where)
    except yaml.YAMLError as exc:
        raise LofiError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None


def _one_line(text: str, cut: bool = True) -> str:
    """Text for an error line: as written when short and printable, else escaped (and cut to a
    short prefix, except a path the user named)."""
    if text.isprintable() and (len(text) <= SHOWN_CHARS or not cut):
        return text
    return shown(text) if cut else repr(text)


def read_yaml(path: str | Path) -> dict:
    """A config file's mapping: UTF-8 text of at most MAX_CONFIG_BYTES, valid YAML within the
    document limits, a mapping at the top level (or empty)."""
    p = Path(path)
    text = read_text(p, "config", MAX_CONFIG_BYTES, ": save it as UTF-8")
    data = parse_yaml(text, f"config {p}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LofiError(
            f"config {p}: the top level must be a mapping of sections (data:, model:, ...), "
            f"got {type(data).__name__}"
        )
    return data


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        both = isinstance(out.get(k), dict) and isinstance(v, dict)
        out[k] = _deep_merge(out[k], v) if both else copy.deepcopy(v)
    return out


def _override_value(key: str, text: str, where: str) -> Any:
    """`--set KEY=TEXT` as YAML, except that a string field keeps TEXT as written (a file named
    2024 stays '2024'), as does text that is not YAML (the schema then says what was expected).
    A document limit (an alias bomb, a key given twice) is refused."""
    try:
        value = _load(text, where)
    except yaml.YAMLError:
        value = text
    kind = field_type(key)
    if kind in (str, str | None) and value is not None and not isinstance(value, str):
        return text
    return value


def _key(item: str) -> str:
    return item.split("=", 1)[0]


def distinct_overrides(items: Sequence[str]) -> None:
    """Refuse a key given twice on one command line: two `--set` of one key, or of a section and
    a key inside it. The last one would silently win; which of them was meant is not known."""
    seen: dict[str, str] = {}
    for item in items:
        key = _key(item)
        for other, first in seen.items():
            if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                raise LofiError(
                    f"--set {_one_line(item)}: {_one_line(key)} is given twice "
                    f"(--set {first} before it)"
                )
        seen[key] = _one_line(item)


def overrides_once(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    """The `--set` option's click callback: `distinct_overrides` as a one-line usage error."""
    try:
        distinct_overrides(value)
    except LofiError as exc:
        raise OptionError(str(exc)) from None
    return value


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file, then each `--set key.path=value`, each step checked against
    the schema before the next, so a bad key or value is one line naming where it came from, the
    key, the value and what was expected - before any work, not a traceback later. A section's
    override (`--set model.gtad={dim: 8}`) is merged into the section, as the file is.

    Overrides apply in order, so a caller may layer its own under the user's (lofi-demo); the
    command line's own `--set` options are checked by `overrides_once` first."""
    typed = Config()
    if path:
        merged = _deep_merge(typed.to_dict(), read_yaml(path))
        typed = validate(merged, f"config {_one_line(str(path), cut=False)}")
    for item in overrides:
        where = f"--set {_one_line(item)}"
        if "=" not in item:
            raise LofiError(f"{where}: an override must look like key.path=value")
        key, text = item.split("=", 1)
        cfg = typed.to_dict()
        parts = key.split(".")
        node = cfg
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node or field_type(key) is None:
            raise LofiError(f"{where}: unknown config key {shown(key)}")
        value = _override_value(key, text, where)
        both = isinstance(node[parts[-1]], dict) and isinstance(value, dict)
        node[parts[-1]] = _deep_merge(node[parts[-1]], value) if both else value
        typed = validate(cfg, where)
    return typed
