"""Paths built from data stay inside their folder outside the frame cache too: THUMOS14 ids
from the official text files are one safe file name each (a bad one is one line naming the file
and line, and the video lookup never leaves the --videos folders), and Synth-TAL writes only
inside OUT, with every number of its config within physical bounds."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from lofi.runtime.errors import LofiError
from lofi.trainer.synth import SynthConfig, generate
from lofi.trainer.thumos import convert_thumos, read_annotation_file

from tests.conftest import TINY
from tests.test_thumos import cli


def thumos_dir(tmp_path: Path, tiny_synth: Path, ids: list[str]) -> tuple[Path, Path]:
    """One class's val file listing `ids`, an empty test file, and a --videos folder with one
    good video; tmp/esc.mp4 and tmp/outside/abs.mp4 lie where bad ids would lead a lookup."""
    ann, videos = tmp_path / "ann", tmp_path / "videos"
    ann.mkdir()
    videos.mkdir()
    source = tiny_synth / "videos" / "synth_val_0000.mp4"
    for where in (videos / "good.mp4", tmp_path / "esc.mp4", tmp_path / "outside" / "abs.mp4"):
        where.parent.mkdir(exist_ok=True)
        shutil.copy(source, where)
    (ann / "BaseballPitch_val.txt").write_text("".join(f"{v} 1.0 2.0\n" for v in ids))
    (ann / "BaseballPitch_test.txt").write_text("")
    return ann, videos


@pytest.mark.parametrize(
    "vid, shown_as",
    [
        ("../esc", "'../esc'"),
        ("a/../../esc", "'a/../../esc'"),
        ("..", "'..'"),
        ("\x1b[2J", "'\\x1b[2J'"),
        ("x" * 400, "'xxxxxxxx"),
    ],
)
def test_a_bad_thumos_id_is_one_line_and_the_lookup_never_leaves_the_folder(
    tmp_path, tiny_synth, vid, shown_as
):
    ann, videos = thumos_dir(tmp_path, tiny_synth, ["good", vid])
    with pytest.raises(LofiError) as err:
        convert_thumos(ann, [videos])
    line = str(err.value)
    assert line.startswith(f"{ann / 'BaseballPitch_val.txt'}:2: video id {shown_as}"), line
    assert "expected" in line and "\x1b" not in line and len(line) < 400


def test_an_absolute_thumos_id_is_refused_too(tmp_path, tiny_synth):
    outside = str(tmp_path / "outside" / "abs")  # videos / '/.../abs.mp4' is that file
    ann, videos = thumos_dir(tmp_path, tiny_synth, [outside])
    with pytest.raises(LofiError, match="BaseballPitch_val.txt:1: video id '/.*cannot name a file"):
        convert_thumos(ann, [videos])


def test_the_thumos_cli_refuses_a_bad_id_in_one_line_and_writes_nothing(tmp_path, tiny_synth):
    ann, videos = thumos_dir(tmp_path, tiny_synth, ["good", "../esc"])
    out = tmp_path / "out.json"
    p = cli("lofi-data", "convert-thumos", str(ann), str(out), "--videos", str(videos), ok=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "BaseballPitch_val.txt:2: video id '../esc' cannot name a file" in p.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "line, expected",
    [
        ("good 1e300 2.0", "start and end must be seconds in 0..604800"),
        ("good 1.0 inf", "start and end must be seconds in 0.."),
        ("good nan 2.0", "start and end must be seconds in 0.."),
        ("good -1 2.0", "start and end must be seconds in 0.."),
        ("good 1.0 " + "9" * 5000, "start and end must be seconds in 0..604800, got 'good 1.0 999"),
    ],
)
def test_thumos_times_have_physical_bounds(tmp_path, line, expected):
    (tmp_path / "A_val.txt").write_text(line + "\n")
    with pytest.raises(LofiError, match=expected) as err:
        read_annotation_file(tmp_path / "A_val.txt")
    assert len(str(err.value)) < 300


def test_thumos_times_at_their_bounds_are_read(tmp_path):
    (tmp_path / "A_val.txt").write_text("a 0 0\n\nb 604800 604800\n  \nc 0.5 1\n")
    assert read_annotation_file(tmp_path / "A_val.txt") == [
        ("a", 0.0, 0.0),
        ("b", 604800.0, 604800.0),
        ("c", 0.5, 1.0),
    ]


def test_good_thumos_ids_still_convert(tmp_path, tiny_synth):
    ann, videos = thumos_dir(tmp_path, tiny_synth, ["good", "video_validation_0000051"])
    conv = convert_thumos(ann, [videos])
    assert list(conv.database) == ["good"] and conv.missing == ["video_validation_0000051"]


SMALL = replace(TINY, train_videos=1, val_videos=1, clip_classes=2, clips_per_class=1)


def test_synth_never_writes_through_a_symlink_out_of_out(tmp_path):
    """OUT/videos (or a file OUT writes) that is a symlink leading outside OUT is refused in one
    line before anything is written; nothing appears where it points."""
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "videos").symlink_to(elsewhere)
    with pytest.raises(LofiError, match="'videos' resolves outside"):
        generate(out, SMALL)
    assert not list(elsewhere.iterdir()) and not (out / "annotations.json").exists()
    (out / "videos").unlink()
    (out / "clips.json").symlink_to(elsewhere / "clips.json")
    with pytest.raises(LofiError, match="'clips.json' resolves outside"):
        generate(out, SMALL)
    assert not list(elsewhere.iterdir()) and not (out / "videos").exists()


def test_synth_writes_only_what_it_lists_inside_out(tmp_path):
    paths = generate(tmp_path / "out", SMALL)
    written = {p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*")}
    assert written == {
        Path("videos"),
        Path("videos/synth_train_0000.mp4"),
        Path("videos/synth_val_0000.mp4"),
        Path("clips"),
        Path("clips/clip_00000.mp4"),
        Path("clips/clip_00001.mp4"),
        Path("annotations.json"),
        Path("clips.json"),
    }
    assert set(json.loads(paths["annotations"].read_text())["database"]) == {
        "synth_train_0000",
        "synth_val_0000",
    }


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"fps": float("nan")}, "fps = nan: expected a number >= 0.01 and <= 1000"),
        ({"fps": 1e300}, "fps = 1e\\+300"),
        ({"train_videos": 10**12}, "train_videos = 1000000000000: expected an integer >= 1"),
        ({"clips_per_class": 10**6}, "clips_per_class = 1000000"),
        ({"max_duration": 1e300}, "max_duration = 1e\\+300: expected a number"),
        ({"min_action": 1e-300}, "min_action = 1e-300"),
        ({"height": 10**6}, "height = 1000000"),
        ({"seed": -1}, "seed = -1: expected an integer >= 0"),
        ({"seed": 2**40}, "seed = 1099511627776"),
        ({"difficulty": float("inf")}, "difficulty = inf"),
        (
            {"height": 2048, "width": 2048, "max_duration": 3600.0, "fps": 60.0},
            "one video would take 2.7e\\+12 bytes of frames",
        ),
    ],
)
def test_synth_config_numbers_have_physical_bounds(tmp_path, change, expected):
    cfg = replace(SMALL, **change)
    with pytest.raises(LofiError, match=expected):
        generate(tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


def test_synth_config_defaults_and_edges_are_within_bounds():
    SynthConfig().validate()
    from lofi.trainer.synth import CLIP_MOTIONS, MAX_VIDEO_BYTES, UNTRIMMED_MOTIONS

    for n in (2, len(UNTRIMMED_MOTIONS)):
        replace(SMALL, classes=n).validate()
    for n in (2, len(CLIP_MOTIONS)):
        replace(SMALL, clip_classes=n).validate()
    for bad in (1, len(UNTRIMMED_MOTIONS) + 1):
        with pytest.raises(LofiError, match="--classes must be in 2..8"):
            replace(SMALL, classes=bad).validate()
    for bad in (1, len(CLIP_MOTIONS) + 1):
        with pytest.raises(LofiError, match="--clip-classes must be in 2..8"):
            replace(SMALL, clip_classes=bad).validate()
    replace(SMALL, height=16, width=16).validate()
    replace(SMALL, min_duration=12.0, max_duration=12.0, min_action=2.0, max_action=2.0).validate()
    with pytest.raises(LofiError, match="min duration <= max duration"):
        replace(SMALL, min_duration=12.5, max_duration=12.0).validate()
    with pytest.raises(LofiError, match="min action <= max action"):
        replace(SMALL, min_action=2.5, max_action=2.0).validate()
    for side in ({"height": 14}, {"width": 14}, {"height": 17}, {"width": 17}):
        with pytest.raises(LofiError, match="even and >= 16"):
            replace(SMALL, **side).validate()
    edge = MAX_VIDEO_BYTES // (64 * 64 * 3)  # frames of 64x64 that fill the limit exactly
    replace(SMALL, height=64, width=64, fps=8.0, max_duration=edge / 8).validate()
    with pytest.raises(LofiError, match="one video would take"):
        replace(SMALL, height=64, width=64, fps=8.0, max_duration=(edge + 1) / 8).validate()
