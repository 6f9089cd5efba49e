"""The training config is checked against its schema before any work: one line naming where the
value came from, the key, the value and what was expected. Property tests: any YAML document or
override either loads into a config the schema accepts or raises LofiError."""

from __future__ import annotations

import math
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lofi.runtime.bounds import Bound
from lofi.runtime.errors import LofiError
from lofi.trainer.config import distinct_overrides, load_config
from lofi.trainer.schema import Config, validate

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def test_stored_configs_read_back_through_the_schema():
    from lofi.trainer.checkpoint import checkpoint_config  # torch: only this test needs it

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
        (
            b"",
            ["train.checkpointing=chunks:0"],
            "expected none, stages or chunks:N (1 <= N <= 99999)",
        ),
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


def _numbers(cls: type = Config, prefix: str = ""):
    """(dotted key, declared type, bound, list length) of every number the schema holds."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        if is_dataclass(kind):
            yield from _numbers(kind, f"{prefix}{f.name}.")
            continue
        inner = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        base = inner[0]
        item = typing.get_args(base)[0] if typing.get_origin(base) is list else base
        if item in (int, float):
            yield f"{prefix}{f.name}", item, f.metadata.get("bound"), f.metadata.get("length")


NUMBERS = list(_numbers())


def _get(cfg: Config, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


SECTIONS = {
    name: sorted(value) for name, value in Config().to_dict().items() if isinstance(value, dict)
}
# numbers YAML can write (a 5000-digit one cannot be dumped; YAML_TEXT below writes it)
HOSTILE = [10**45, -(10**40), 2**63, 1e300, -1e300, 1e-300, 5e-324]


ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.sampled_from(HOSTILE),
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
    for key, _, bound, _ in NUMBERS:
        value = _get(typed, key)
        for x in value if isinstance(value, list) else [] if value is None else [value]:
            assert bound.holds(x), (key, x)


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


# every number has physical bounds, both ways; the lower ones are what the audit found unguarded


def test_every_number_has_finite_bounds_of_its_kind():
    assert len(NUMBERS) > 50  # the walk reaches every section, model.gtad included
    for key, kind, bound, _ in NUMBERS:
        assert isinstance(bound, Bound), f"{key} has no bound"
        assert math.isfinite(bound.low) and math.isfinite(bound.high), key
        assert bound.integer == (kind is int), key


@pytest.mark.parametrize(
    "override, expected",
    [
        ("lofi.lr=-0.001", "lofi.lr = -0.001: expected a number > 0 and <= 100"),
        ("lofi.lr=0", "lofi.lr = 0: expected a number > 0"),
        ("pretrain.lr=-1", "pretrain.lr = -1: expected a number > 0"),
        ("head.lr=-1e-9", "head.lr = -1e-09: expected a number > 0"),
        ("lofi.head_lr=-1", "lofi.head_lr = -1: expected a number > 0"),
        ("lofi.weight_decay=-0.1", "lofi.weight_decay = -0.1: expected a number >= 0"),
        ("head.momentum=-0.5", "head.momentum = -0.5: expected a number >= 0"),
        ("head.epochs=-1", "head.epochs = -1: expected an integer >= 0"),
        ("lofi.batch_size=0", "lofi.batch_size = 0: expected an integer >= 1"),
        ("data.window=0", "data.window = 0: expected an integer >= 1"),
        ("data.std=[0.2, 0.2, 0]", "expected a list of 3 numbers >= 0.001"),
        ("head.crop=[0, 1]", "head.crop = [0, 1]: expected a list of 2 numbers >= 0.001"),
        ("lofi.s_ratio=0.5", "lofi.s_ratio = 0.5: expected a number >= 1"),
        ("postprocess.sigma=1e-300", "postprocess.sigma = 1e-300: expected a number >= 0.001"),
        ("postprocess.score_threshold=-0.1", "expected a number >= 0 and <= 1"),
        ("seed=-1", "seed = -1: expected an integer >= 0 and <= 4294967295"),
    ],
)
def test_lower_bounds_are_refused(override, expected):
    with pytest.raises(LofiError) as err:
        load_config(None, [override])
    assert expected in str(err.value), str(err.value)


def _inside(bound: Bound, kind: type):
    """Values on and just inside each edge of `bound` (those the schema must take)."""
    step = 1 if kind is int else 1e-9 * max(1.0, abs(bound.high))
    low = bound.low + step if bound.open_low else bound.low
    high = bound.high - step if bound.open_high else bound.high
    return [kind(low), kind(high)]


def _outside(bound: Bound, kind: type):
    """Values on or just past each edge, and the hostile ones the issue names."""
    step = 1 if kind is int else 1e-6 * max(1.0, abs(bound.high))
    low = bound.low if bound.open_low else bound.low - step
    high = bound.high if bound.open_high else bound.high + step
    values = [kind(low), kind(high), 10**5000, -(10**5000), 1e300, -1e300]
    return values + ([1e-300] if bound.low > 0 else [])


def _with(key: str, value, length):
    cfg = Config().to_dict()
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = [value] * length if length else value
    return cfg


@pytest.mark.parametrize("key, kind, bound, length", NUMBERS, ids=[n[0] for n in NUMBERS])
def test_each_number_is_held_to_its_bounds(key, kind, bound, length):
    for value in _inside(bound, kind):
        got = _get(validate(_with(key, value, length)), key)
        assert got == ([value] * length if length else value)
    for value in _outside(bound, kind):
        with pytest.raises(LofiError) as err:
            validate(_with(key, value, length), "c.yaml")
        line = str(err.value)
        expected = bound.expected().replace("a number", "numbers" if length else "a number")
        assert line.startswith(f"c.yaml: {key} = ") and expected in line, line
        assert len(line) < 300 and "\n" not in line


def test_integers_are_not_floats_and_floats_are_stored_as_floats():
    with pytest.raises(LofiError, match="lofi.epochs = 3.0: expected an integer"):
        validate(_with("lofi.epochs", 3.0, None))
    with pytest.raises(LofiError, match="lofi.epochs = True: expected an integer"):
        validate(_with("lofi.epochs", True, None))
    lr = validate(_with("lofi.lr", 1, None)).lofi.lr
    assert lr == 1.0 and isinstance(lr, float)
    assert validate(_with("lofi.crop_scale", None, None)).lofi.crop_scale is None
    with pytest.raises(LofiError, match=r"lofi.crop_scale = \[0.9\]: expected a list of 2"):
        validate(_with("lofi.crop_scale", [0.9], None))


@pytest.mark.parametrize(
    "value, ok",
    [("anet", True), ("thumos", True), ("0.3,0.5", True), ("1", True), ("0", False)]
    + [("0.5,7", False), ("", False), ("x", False), ("9" * 5000, False), (3, False)],
)
def test_tiou_is_checked_by_the_runtime_parser(value, ok):
    cfg = _with("data.tiou", value, None)
    if ok:
        assert validate(cfg).data.tiou == value
        return
    with pytest.raises(LofiError) as err:
        validate(cfg)
    assert "expected anet, thumos or thresholds like 0.3,0.5" in str(err.value)
    assert len(str(err.value)) < 200


def test_choices_patterns_and_strings():
    assert validate(_with("train.checkpointing", "chunks:99999", None)).train.checkpointing
    for bad in ("chunks:100000", "chunks:0", "chunks:" + "9" * 5000, "none ", 5):
        with pytest.raises(LofiError, match="expected none, stages or chunks:N"):
            validate(_with("train.checkpointing", bad, None))
    with pytest.raises(LofiError, match="expected one of soft, hard"):
        validate(_with("postprocess.nms", "Soft", None))
    with pytest.raises(LofiError, match="data.cache = 5: expected a string or null"):
        validate(_with("data.cache", 5, None))
    with pytest.raises(LofiError, match="model.head_norm = 1: expected true or false"):
        validate(_with("model.head_norm", 1, None))


def test_unknown_keys_of_any_kind_are_one_short_line():
    for key, shown_key in [
        ("\x1b[2J" * 50, "'\\x1b[2J"),
        (10**5000, "'<integer of about 5000 digits>'"),
        (("a",), "\"('a',)\""),
    ]:
        with pytest.raises(LofiError) as err:
            validate({"lofi": {key: 1}})
        line = str(err.value)
        assert f"unknown config key {shown_key}" in line.replace("lofi.", ""), line
        assert "\x1b" not in line and len(line) < 400


# documents: YAML limits and keys given twice


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"lofi:\n  epochs: 1\n  epochs: 2\n", "key 'epochs' is given twice (line 3)"),
        (b"lofi: {epochs: 1}\nhead: {}\nlofi: {lr: 0.1}\n", "key 'lofi' is given twice (line 3)"),
        (b"lofi: {epochs: 1, epochs: 1}\n", "key 'epochs' is given twice"),
        (b"lofi:\n  epochs: " + b"9" * 5000 + b"\n", "an integer of 5000 characters"),
        (b"seed: " + b"1" * 41 + b"\n", "an integer of 41 characters (line 1, at most 40)"),
        (b"a: " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply (more than 64 levels)"),
        (b"".join(b"  " * i + b"k:\n" for i in range(70)), "nested too deeply"),
        (b"a: &a [*a]\n", "alias 'a' refers to itself"),
        (b"a: *nowhere\n", "is not valid YAML: found undefined alias"),
        (b"#" + b"x" * (1024**2), "is larger than 1048576 bytes"),
    ],
)
def test_yaml_document_limits(tmp_path, raw, expected):
    path = write(tmp_path, raw)
    with pytest.raises(LofiError) as err:
        load_config(path)
    line = str(err.value)
    assert line.startswith(f"config {path}") and expected in line and "\n" not in line, line


def laughs(levels: int, width: int = 9) -> bytes:
    """The YAML billion laughs: each level a list of `width` aliases of the level below."""
    lines = [b"l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        items = b", ".join([b"*l%d" % (i - 1)] * width)
        lines.append(b"l%d: &l%d [%s]" % (i, i, items))
    lines.append(b"lofi: {epochs: *l%d}" % levels)
    return b"\n".join(lines) + b"\n"


def test_alias_expansion_is_bounded(tmp_path):
    # nine levels stand for 9**10 = 3.5e9 values; refused while composing, at once
    path = write(tmp_path, laughs(9))
    with pytest.raises(LofiError, match="more than 10000 values once its aliases are expanded"):
        load_config(path)
    # two levels (about 1,700 values expanded) are a document like any other: the schema reads it
    with pytest.raises(LofiError, match="unknown config key 'l0'"):
        load_config(write(tmp_path, laughs(2)))


def test_aliases_and_merge_keys_in_sane_use(tmp_path):
    raw = b"lofi: &opt {lr: 0.01, batch_size: 4}\nhead:\n  <<: *opt\n  lr: 0.02\n"
    cfg = load_config(write(tmp_path, raw))
    assert cfg.lofi.lr == 0.01 and cfg.head.lr == 0.02 and cfg.head.batch_size == 4


def test_overrides_have_the_same_limits():
    with pytest.raises(LofiError, match=r"^--set lofi.lr=\{a: 1, a: 2\}: key 'a' is given twice"):
        load_config(None, ["lofi.lr={a: 1, a: 2}"])
    with pytest.raises(LofiError) as err:
        load_config(None, ["lofi.epochs=" + "9" * 5000])
    line = str(err.value)
    assert "an integer of 5000 characters" in line and len(line) < 200
    with pytest.raises(LofiError, match="nested too deeply"):
        load_config(None, ["lofi.epochs=" + "[" * 1000 + "]" * 1000])
    bomb = laughs(9).decode().replace("\n", ", ").replace("lofi: ", "x: ")
    with pytest.raises(LofiError, match="aliases are expanded"):
        load_config(None, ["model.gtad={" + bomb + "}"])
    # a string field keeps what is not YAML as its text
    assert load_config(None, ["data.cache=[not yaml"]).data.cache == "[not yaml"


def test_a_section_override_merges_into_the_section(tmp_path):
    path = write(tmp_path, b"model:\n  gtad:\n    dim: 64\n    k: 5\n")
    cfg = load_config(path, ["model.gtad={dim: 8}"])
    assert cfg.model.gtad.dim == 8 and cfg.model.gtad.k == 5  # k stays the file's
    with pytest.raises(LofiError, match="'model.gtad' must be a mapping"):
        load_config(path, ["model.gtad=3"])


@pytest.mark.parametrize(
    "items, first",
    [
        (["lofi.epochs=1", "lofi.epochs=2"], "lofi.epochs=1"),
        (["lofi.epochs=1", "head.lr=0.1", "lofi.epochs=1"], "lofi.epochs=1"),
        (["model.gtad={dim: 8}", "model.gtad.dim=3"], "model.gtad={dim: 8}"),
        (["model.gtad.dim=3", "model.gtad={k: 2}"], "model.gtad.dim=3"),
    ],
)
def test_a_key_given_twice_on_the_command_line_is_refused(items, first):
    with pytest.raises(LofiError) as err:
        distinct_overrides(items)
    assert str(err.value).endswith(f"is given twice (--set {first} before it)")


def test_distinct_overrides_pass():
    distinct_overrides(["lofi.epochs=1", "lofi.epochs_x=2", "head.epochs=3", "model.gtad.k=1"])
    distinct_overrides(["model.gtad.dim=1", "model.gtad.k=2", "model.width=3", "seed=1"])
    # programmatic layering (lofi-demo's own overrides under the user's) still applies in order
    assert load_config(None, ["lofi.epochs=1", "lofi.epochs=2"]).lofi.epochs == 2


YAML_TEXT = st.one_of(
    st.text(alphabet="ab:{}[],&*!- \n0123456789.e", max_size=40),
    st.builds(
        lambda key, n: f"{key}: " + "[" * n + "]" * n,
        st.sampled_from(["lofi", "seed"]),
        st.integers(0, 200),
    ),
    st.builds(lambda n: laughs(n).decode(), st.integers(0, 10)),
    st.builds(lambda n: "{epochs: " + "9" * n + "}", st.integers(1, 5000)),
    st.builds(
        lambda s, k, v, w: f"{s}:\n  {k}: {v}\n  {k}: {w}\n",
        st.sampled_from(list(SECTIONS)),
        st.sampled_from(["epochs", "lr", "k"]),
        st.sampled_from(["1", "1e300", "-1", "9" * 50]),
        st.sampled_from(["2", ".nan", "*x"]),
    ),
)


def test_any_yaml_text_loads_or_refuses_in_one_line(tmp_path):
    # malformed text, deep nesting, alias bombs, huge integers and keys given twice, as a file
    # and as an override's value: a config the schema accepts, or one line
    path = tmp_path / "c.yaml"

    @FUZZ
    @given(YAML_TEXT)
    def check(text: str) -> None:
        path.write_text(text)
        for attempt in (lambda: load_config(path), lambda: load_config(None, [f"lofi={text}"])):
            try:
                cfg = attempt()
            except LofiError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 600
            else:
                _assert_sane(cfg)

    check()


def test_the_documented_ranges():
    # docs/RELIABILITY.md lists the schema's ranges; a changed one must change the table too
    import lofi.trainer.schema as schema

    documented = {
        "FRAMES": (1, 1024, True),
        "SNIPPETS": (1, 100_000, True),
        "CHANNELS": (1, 16384, True),
        "LAYERS": (0, 64, True),
        "EPOCHS": (0, 100_000, True),
        "EVERY": (1, 100_000, True),
        "BATCH": (1, 100_000, True),
        "STEPS": (0, 10**9, True),
        "LR": (0, 100, False),
        "DECAY": (0, 10, False),
        "MOMENTUM": (0, 1, False),
        "NORM": (0, 1e6, False),
        "RATIO": (1, 64, False),
        "AREA": (0.001, 1, False),
        "MEAN": (0, 1, False),
        "STD": (0.001, 1, False),
        "SIGMA": (0.001, 100, False),
    }
    for name, (low, high, integer) in documented.items():
        b = getattr(schema, name)
        assert (b.low, b.high, b.integer) == (low, high, integer), name
        assert (b.open_low, b.open_high) == (name == "LR", name == "MOMENTUM"), name


def test_yaml11_exponents_in_lists_and_unknown_top_level_keys():
    # YAML 1.1 reads 2e0 (no dot) as a string: a list of numbers takes it as the number too
    assert load_config(None, ["lofi.st_ratio=[2e0, 1.5]"]).lofi.st_ratio == [2.0, 1.5]
    assert load_config(None, ["lofi.crop_scale=[5e-1, 1]"]).lofi.crop_scale == [0.5, 1]
    with pytest.raises(LofiError) as err:
        validate({"lofy": {}}, "c.yaml")
    assert str(err.value).startswith(
        "c.yaml: unknown config key 'lofy' (known under 'the top level': seed, data, model,"
    )


def test_a_partial_config_takes_defaults_for_what_it_lacks_only():
    # an older checkpoint's config lacks keys: each missing one takes its default, and the keys
    # after it are still read
    cfg = validate({"model": {"width": 8}, "lofi": {"epochs": 3}})
    assert cfg.seed == 0 and cfg.model.width == 8 and cfg.lofi.epochs == 3
    assert cfg.model.head_dim == Config().model.head_dim
