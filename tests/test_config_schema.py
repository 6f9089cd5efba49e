"""The training config is checked against its schema before any work: one line naming where the
value came from, the key, the value and what was expected. Property tests: any YAML document or
override either loads into a config the schema accepts or raises LofiError."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lofi.runtime.errors import LofiError
from lofi.trainer.checkpoint import checkpoint_config
from lofi.trainer.config import load_config
from lofi.trainer.schema import Config, validate

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def test_stored_configs_read_back_through_the_schema():
    # what run folders and checkpoints store reads back to the same typed config; an older
    # checkpoint's config without a newer key takes the schema's default; a damaged one is a line
    cfg = load_config(None, ["lofi.epochs=3", "head.crop=null", "model.head_norm=true"])
    assert validate(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["model"]["head_norm"], old["head"]["ema"], old["train"]
    back = checkpoint_config({"config": old}, "old.pt")
    assert back.model.head_norm is False and back.head.ema == 0.999 and back.lofi.epochs == 3
    assert back.train == Config().train and back.head.crop is None
    for bad, expected in [
        (None, "'the config' must be a mapping"),
        ({"model": {"width": "8"}}, "model.width = '8': expected an integer"),
        ({"lofi": {"epochz": 1}}, "unknown config key 'lofi.epochz'"),
    ]:
        with pytest.raises(LofiError, match="^checkpoint old.pt: ") as err:
            checkpoint_config({"config": bad}, "old.pt")
        assert expected in str(err.value)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_pass(path):
    assert load_config(path).model.head in ("pyramid", "gtad")


def write(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize(
    "raw, overrides, expected",
    [
        (b"lofi:\n  epochs: \xff\n", [], "is not UTF-8 text (byte 16)"),
        (b"- data\n- model\n", [], "the top level must be a mapping of sections"),
        (b"lofi: [1, 2\n", [], "is not valid YAML"),
        (b"lofi:\n  epochz: 3\n", [], "unknown config key 'lofi.epochz'"),
        (b"lofi: 3\n", [], "'lofi' must be a mapping"),
        (b"lofi:\n  lr: .nan\n", [], "lofi.lr = nan: expected a number > 0"),
        (
            b"data:\n  mode: windowed\n",
            [],
            "data.mode = 'windowed': expected one of window, resize",
        ),
        (
            b"",
            ["head.epochs=abc"],
            "--set head.epochs=abc: head.epochs = 'abc': expected an integer",
        ),
        (b"", ["head.epochs=-1"], "head.epochs = -1: expected an integer >= 0"),
        (b"", ["postprocess.iou_threshold=1.5"], "expected a number >= 0 and <= 1"),
        (b"", ["train.checkpointing=chunks:0"], "expected none, stages or chunks:N (1 <= N <= 99999)"),
        (b"", ["train.channels_last=yes please"], "expected true or false"),
        (b"", ["lofi.st_ratio=[2]"], "lofi.st_ratio = [2]: expected a list of 2 numbers"),
        (b"", ["head.nope=1"], "--set head.nope=1: unknown config key 'head.nope'"),
        (b"", ["seed"], "an override must look like key.path=value"),
    ],
)
def test_bad_configs_are_one_line(tmp_path, raw, overrides, expected):
    path = write(tmp_path, raw) if raw else None
    with pytest.raises(LofiError) as err:
        load_config(path, overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)
    if raw:
        assert str(path) in str(err.value)


def test_overrides_are_typed():
    cfg = load_config(None, ["lofi.epochs=3", "data.cache=2024", "head.crop=null", "lofi.lr=1e-3"])
    assert cfg.lofi.epochs == 3 and cfg.data.cache == "2024"
    assert cfg.head.crop is None and cfg.lofi.lr == 1e-3 and isinstance(cfg.lofi.lr, float)


SECTIONS = {
    name: sorted(value) for name, value in Config().to_dict().items() if isinstance(value, dict)
}
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.floats(-2, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
KEYS = st.sampled_from(
    [f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys] + ["seed", "lofi.zzz", "a.b.c"]
)


def _assert_sane(typed: Config) -> None:
    assert validate(typed.to_dict()) == typed
    assert all(math.isfinite(x) for x in (typed.lofi.lr, typed.head.lr, typed.pretrain.lr))
    assert typed.lofi.epochs >= 0 and typed.data.window >= 1


@FUZZ
@given(
    st.lists(st.tuples(KEYS, st.one_of(ODD.map(yaml.safe_dump), st.text(max_size=10))), max_size=3)
)
def test_any_override_loads_or_refuses_in_one_line(items):
    overrides = [f"{k}={v.strip()}" for k, v in items]
    try:
        cfg = load_config(None, overrides)
    except LofiError as exc:
        assert "\n" not in str(exc)
        return
    _assert_sane(cfg)


DOCUMENT = st.one_of(
    st.binary(max_size=48),
    st.recursive(
        ODD,
        lambda inner: st.dictionaries(
            st.sampled_from([*SECTIONS, "seed", "zzz"]), inner, max_size=3
        ),
        max_leaves=6,
    ).map(lambda d: yaml.safe_dump(d).encode()),
    st.dictionaries(
        st.sampled_from(list(SECTIONS)),
        st.dictionaries(
            st.sampled_from(sorted({k for v in SECTIONS.values() for k in v})), ODD, max_size=3
        ),
        max_size=3,
    ).map(lambda d: yaml.safe_dump(d).encode()),
)


def test_any_config_file_loads_or_refuses_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"

    @FUZZ
    @given(DOCUMENT)
    def check(raw: bytes) -> None:
        path.write_bytes(raw)
        try:
            cfg = load_config(path)
        except LofiError as exc:
            assert "\n" not in str(exc)
            return
        _assert_sane(cfg)

    check()
