"""YAML configs with dotted command-line overrides (`--set lofi.epochs=3`), loaded into the typed
`Config` of trainer/schema.py: the one place where a config file becomes what the trainer reads."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lofi.runtime.errors import LofiError
from lofi.trainer.schema import Config, field_type, validate


def _one_line(text: str) -> str:
    return text if text.isprintable() else repr(text)


def read_yaml(path: str | Path) -> dict:
    """A config file's mapping: UTF-8 text, valid YAML, a mapping at the top level (or empty)."""
    p = Path(path)
    if not p.is_file():
        raise LofiError(f"config not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LofiError(
            f"config {p} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LofiError(f"config {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise LofiError(f"config {p} is nested too deeply") from None
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


def _override_value(key: str, text: str) -> Any:
    """`--set KEY=TEXT` as YAML, except that a string field keeps TEXT as written (a file named
    2024 stays '2024')."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    kind = field_type(key)
    if kind in (str, str | None) and value is not None and not isinstance(value, str):
        return text
    return value


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file, then each `--set key.path=value`, each step checked against
    the schema before the next, so a bad key or value is one line naming where it came from, the
    key, the value and what was expected - before any work, not a traceback later."""
    typed = Config()
    if path:
        merged = _deep_merge(typed.to_dict(), read_yaml(path))
        typed = validate(merged, f"config {_one_line(str(path))}")
    for item in overrides:
        if "=" not in item:
            raise LofiError(f"--set {item!r}: an override must look like key.path=value")
        key, text = item.split("=", 1)
        cfg = typed.to_dict()
        parts = key.split(".")
        node = cfg
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node or field_type(key) is None:
            raise LofiError(f"--set {_one_line(item)}: unknown config key {key!r}")
        node[parts[-1]] = _override_value(key, text)
        typed = validate(cfg, f"--set {_one_line(item)}")
    return typed
