"""The frame cache never reads or writes outside its folder, and loads no byte its index does not
vouch for: video ids from an annotation file must be safe file names (a bad one is one line and
a count; the good videos are still cached), a relative `path` stays inside VIDEO_ROOT, the index
is bounded and checked, packed files are checked against their size, every file against its
SHA-256, and planted symlinks never redirect a write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lofi.runtime.errors import LofiError
from lofi.trainer.data import FrameCache, prepare_cache
from lofi.trainer.frame_store import JpegFrames, write_frames

BAD_IDS = {
    "up": "../../escape",
    "separator": "a/b",
    "dotdot": "..",
    "dot": ".",
    "nul": "nul\x00byte",
    "escape": "red\x1b[31m",
    "newline": "two\nlines",
    "long": "y" * 250,  # a file name itself, but not with '.npy.tmp' added
    "surrogate": "half\ud800",
    "empty": "",
}


def annotation(path: Path, entries: dict[str, dict]) -> Path:
    db = {
        v: {
            "subset": "training",
            "duration": 10.0,
            "annotations": [{"segment": [1.0, 3.0], "label": "a"}],
            **extra,
        }
        for v, extra in entries.items()
    }
    path.write_text(json.dumps({"database": db}))
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def layout(tmp_path: Path, tiny_synth: Path) -> dict[str, Path]:
    """tmp/work/videos (two good videos), tmp/work/cache, and videos where the bad ids would
    lead a lookup outside VIDEO_ROOT (so only the defence keeps them out of the cache)."""
    work, video = tmp_path / "work", tiny_synth / "videos" / "synth_val_0000.mp4"
    (work / "videos").mkdir(parents=True)
    for name in ("good", "fine"):
        shutil.copy(video, work / "videos" / f"{name}.mp4")
    shutil.copy(video, tmp_path / "escape.mp4")  # videos/../../escape.mp4
    (work / "videos" / "a").mkdir()
    shutil.copy(video, work / "videos" / "a" / "b.mp4")  # videos/a/b.mp4
    return {"root": tmp_path, "videos": work / "videos", "cache": work / "cache", "video": video}


def test_bad_video_ids_are_one_line_each_and_the_good_videos_are_cached(layout):
    root = layout["root"]
    outside = str(root / "outside" / "abs")  # an absolute id: ROOT / '/x' is '/x'
    (root / "outside").mkdir()
    shutil.copy(layout["video"], outside + ".mp4")
    ids = ["good", *BAD_IDS.values(), outside, "fine"]
    ann = annotation(root / "gt.json", {v: {} for v in ids})
    before = files_under(root) - files_under(layout["cache"])
    seen: list[tuple[str, str]] = []
    report = prepare_cache(
        ann, layout["videos"], layout["cache"], 8.0, (16, 16), skip_bad=True,
        on_skip=lambda v, r: seen.append((v, r)),
    )  # fmt: skip
    assert sorted(report.decoded) == ["fine", "good"]
    assert set(report.skipped) == set(BAD_IDS.values()) | {outside}
    for _vid, reason in seen:
        assert reason.startswith(f"{ann}: video id "), reason
        assert "expected" in reason or "must be a non-empty string" in reason
        assert "\n" not in reason and "\x1b" not in reason
        assert len(reason) < 400, reason  # the long id is shown as a short prefix
    assert files_under(root) - files_under(layout["cache"]) == before  # nothing outside
    index = json.loads((layout["cache"] / "index.json").read_text())
    assert set(index["videos"]) == {"good", "fine"}
    assert set(index["skipped"]) == set(BAD_IDS.values()) | {outside}
    assert len(FrameCache(layout["cache"]).frames("fine")) > 0


def test_the_longest_id_that_fits_is_cached_one_byte_more_is_refused():
    from lofi.trainer.frame_cache import cache_name

    assert cache_name("x" * 246, "jpeg", "gt.json") == "x" * 246 + ".jpgs"  # 255 with .tmp
    assert cache_name("x" * 247, "npy", "gt.json") == "x" * 247 + ".npy"
    with pytest.raises(LofiError, match="too long to name a cache file: expected at most 246 "):
        cache_name("x" * 247, "jpeg", "gt.json")
    with pytest.raises(LofiError, match="gt.json: video id 'x.* at most 247 bytes"):
        cache_name("x" * 248, "npy", "gt.json")
    assert cache_name("é" * 123, "jpeg", "gt.json")  # bytes in UTF-8 count, not characters
    with pytest.raises(LofiError, match="too long"):
        cache_name("é" * 124, "jpeg", "gt.json")


def test_a_bad_id_in_strict_mode_refuses_before_any_work(layout):
    ann = annotation(layout["root"] / "gt.json", {"good": {}, "../../escape": {}})
    with pytest.raises(LofiError, match=r"gt.json: video id '../../escape' cannot name a file"):
        prepare_cache(ann, layout["videos"], layout["cache"], 8.0, (16, 16))
    assert not layout["cache"].exists()


def prepare_cli(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from lofi.trainer.cli import data_cli; "
        "sys.argv = ['lofi-data', *sys.argv[1:]]; data_cli()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "prepare", *args], capture_output=True, text=True, timeout=120
    )


def test_prepare_cli_escapes_bad_ids_and_never_blocks_on_a_fifo(layout):
    """One escaped `error:` line per refused video, exit 1, the good video cached; a `path`
    naming a FIFO is refused at once instead of blocking a decoder forever (timeout 120 s)."""
    root = layout["root"]
    os.mkfifo(root / "pipe.mp4")
    entries = {
        "good": {},
        "red\x1b[31m": {},
        "piped": {"path": str(root / "pipe.mp4")},
        "climbs": {"path": "../../escape.mp4"},
        "absolute": {"path": str(root / "escape.mp4")},  # the user's own choice: read
    }
    ann = annotation(root / "gt.json", entries)
    p = prepare_cli(str(ann), str(layout["videos"]), str(layout["cache"]), "--size", "16x16")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "\x1b" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 3, p.stderr
    assert lines[0].startswith("error: skipped video 'red\\x1b[31m': ")
    assert "'piped'" in lines[1] and "is not a video file" in lines[1]
    assert "'climbs'" in lines[2] and "points outside" in lines[2]
    assert "2 decoded, 0 already there, 3 skipped" in p.stdout


def test_a_relative_path_stays_inside_video_root_an_absolute_one_is_read(layout):
    root = layout["root"]
    (layout["videos"] / "link.mp4").symlink_to(root / "escape.mp4")
    entries = {
        "inside": {"path": "good.mp4"},
        "absolute": {"path": str(root / "escape.mp4")},
        "climbs": {"path": "../../escape.mp4"},
        "linked": {"path": "link.mp4"},  # a symlink in VIDEO_ROOT to outside it
    }
    ann = annotation(root / "gt.json", entries)
    report = prepare_cache(ann, layout["videos"], layout["cache"], 8.0, (16, 16), skip_bad=True)
    assert sorted(report.decoded) == ["absolute", "inside"]
    assert "points outside" in report.skipped["climbs"]
    assert "resolves outside" in report.skipped["linked"]


@pytest.fixture
def cache(layout) -> Path:
    ann = annotation(layout["root"] / "gt.json", {"good": {}, "fine": {}})
    prepare_cache(ann, layout["videos"], layout["cache"], 8.0, (16, 16), fmt="jpeg")
    return layout["cache"]


def edit_index(cache: Path, change) -> None:
    index = json.loads((cache / "index.json").read_text())
    change(index)
    (cache / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda i: i.update(fps=1e300),
            r"index fps = 1e\+300: expected a number >= 0.01 and <= 1000",
        ),
        (lambda i: i.update(fps=1e-300), "index fps = 1e-300: expected"),
        (
            lambda i: i.update(height=10**20),
            "index height = 100000000000000000000: expected an integer >= 1 and <= 16384",
        ),
        (lambda i: i.update(width=0), "index width = 0: expected an integer >= 1"),
        (
            lambda i: i.update(quality=1000),
            "index quality = 1000: expected an integer >= 1 and <= 100",
        ),
        (lambda i: i.update(format="raw"), "'format' is 'raw'"),
        (lambda i: i.update(videos=[]), "'videos' is not an object"),
        (lambda i: i.pop("fps"), "no 'fps'"),
    ],
)
def test_a_damaged_index_header_is_one_line(cache, layout, change, expected):
    edit_index(cache, change)
    with pytest.raises(LofiError, match=f"frame cache index .*is damaged .*{expected}"):
        FrameCache(cache)
    ann = layout["root"] / "gt.json"
    with pytest.raises(LofiError, match=expected):  # and prepare will not add to it either
        prepare_cache(ann, layout["videos"], cache, 8.0, (16, 16), fmt="jpeg")


def test_index_duplicate_keys_and_deep_nesting_are_refused(cache):
    text = (cache / "index.json").read_text()
    (cache / "index.json").write_text(text.replace('"fps"', '"fps": 8.0, "fps"', 1))
    with pytest.raises(LofiError, match="key 'fps' is given twice"):
        FrameCache(cache)
    (cache / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LofiError, match="nested too deeply"):
        FrameCache(cache)


ENTRY_DAMAGE = [
    (lambda e: e.update(file="../../escape.mp4"), "'file' is '../../escape.mp4', expected"),
    (lambda e: e.update(file="/etc/hostname"), "'file' is '/etc/hostname'"),
    (lambda e: e.update(file="fine.jpgs"), "'file' is 'fine.jpgs', expected 'good.jpgs'"),
    (
        lambda e: e.update(frames=10**12),
        "'frames' is 1000000000000, expected an integer >= 1 and <= 100000000",
    ),
    (lambda e: e.update(frames=0), "'frames' is 0"),
    (lambda e: e.update(bytes=-1), "'bytes' is -1"),
    (lambda e: e.update(bytes=2**60), "'bytes' is 1152921504606846976"),
    (lambda e: e.pop("sha256"), "no SHA-256"),
    (lambda e: e.update(sha256="0" * 63), "'sha256' is '000"),
]


@pytest.mark.parametrize("change, expected", ENTRY_DAMAGE)
def test_a_damaged_index_entry_is_one_line_and_prepare_decodes_it_again(cache, change, expected):
    edit_index(cache, lambda i: change(i["videos"]["good"]))
    with pytest.raises(LofiError, match=f"damaged \\(video 'good': {expected}.*prepare again"):
        FrameCache(cache)
    ann = cache.parent.parent / "gt.json"
    report = prepare_cache(ann, cache.parent / "videos", cache, 8.0, (16, 16), fmt="jpeg")
    assert report.decoded == ["good"] and report.resumed == ["fine"]
    assert len(FrameCache(cache).frames("good")) == report.frames // 2


def test_an_index_entry_under_a_hostile_id_is_refused(cache):
    entry = json.loads((cache / "index.json").read_text())["videos"]["good"]
    edit_index(cache, lambda i: i["videos"].update({"../good": entry}))
    with pytest.raises(LofiError, match=r"video '../good': index: video id '../good' cannot"):
        FrameCache(cache)


def test_every_loaded_byte_is_checked_against_the_index(cache):
    file = cache / "good.jpgs"
    data = bytearray(file.read_bytes())
    data[len(data) // 3] ^= 0xFF  # the same size, one byte changed
    file.write_bytes(bytes(data))
    with pytest.raises(LofiError, match="cannot read video 'good' .*SHA-256 differs.*delete good"):
        FrameCache(cache).frames("good")
    file.write_bytes(bytes(data[:-1]))
    with pytest.raises(LofiError, match=r"cannot read video 'good' \(\d+ bytes, the index says"):
        FrameCache(cache).frames("good")
    assert len(FrameCache(cache).frames("fine")) > 0  # the other video still reads
    edit_index(
        cache, lambda i: i["videos"]["fine"].update(frames=i["videos"]["fine"]["frames"] + 1)
    )
    with pytest.raises(LofiError, match=r"cannot read video 'fine' \(\d+ frames, the index says"):
        FrameCache(cache).frames("fine")


def test_a_cache_file_swapped_for_a_symlink_outside_is_not_read(cache, layout):
    outside = layout["root"] / "secret.jpgs"
    shutil.copy(cache / "good.jpgs", outside)
    (cache / "good.jpgs").unlink()
    (cache / "good.jpgs").symlink_to(outside)
    with pytest.raises(LofiError, match="file 'good.jpgs' resolves outside"):
        FrameCache(cache).frames("good")


def test_a_finished_file_swapped_for_a_symlink_is_decoded_again_not_resumed(cache, layout):
    outside = layout["root"] / "copy.jpgs"
    shutil.copy(cache / "good.jpgs", outside)  # the very bytes and size the index records
    (cache / "good.jpgs").unlink()
    (cache / "good.jpgs").symlink_to(outside)
    ann = layout["root"] / "gt.json"
    report = prepare_cache(ann, layout["videos"], cache, 8.0, (16, 16), fmt="jpeg")
    assert report.decoded == ["good"] and report.resumed == ["fine"]
    assert not (cache / "good.jpgs").is_symlink() and outside.is_file()


def test_planted_symlinks_never_redirect_a_write(layout):
    """A symlink where prepare writes its temporary files or a finished file is replaced, never
    written through: the files it points at keep their bytes."""
    cache, victim = layout["cache"], layout["root"] / "victim.txt"
    cache.mkdir()
    victim.write_text("keep me")
    for name in ("good.npy.tmp", "fine.npy", "index.json.tmp"):
        (cache / name).symlink_to(victim)
    ann = annotation(layout["root"] / "gt.json", {"good": {}, "fine": {}})
    report = prepare_cache(ann, layout["videos"], cache, 8.0, (16, 16))
    assert sorted(report.decoded) == ["fine", "good"] and victim.read_text() == "keep me"
    assert not (cache / "fine.npy").is_symlink() and len(FrameCache(cache).frames("fine")) > 0


def packed(tmp_path: Path, n: int = 3) -> tuple[Path, bytes]:
    frames = np.full((n, 8, 8, 3), 128, np.uint8)
    write_frames(tmp_path / "v.jpgs", frames, "jpeg")
    return tmp_path / "v.jpgs", (tmp_path / "v.jpgs").read_bytes()


@pytest.mark.parametrize(
    "tail",
    [
        lambda d, n: d[:-8] + np.int64(2**62).tobytes(),  # a count of frames beyond the file
        lambda d, n: d[:-8] + np.int64(-1).tobytes(),
        lambda d, n: d[:-8] + np.int64(n - 1).tobytes(),  # offsets misread
        lambda d, n: d[: -8 * (n + 2)] + np.int64(5).tobytes() + d[-8 * (n + 1) :],  # not at 0
        lambda d, n: (
            d[: -8 * (n + 1)]  # an offset past the next (a slice running backwards)
            + np.asarray([0, 10**6, 10, len(d) - 8 * (n + 2)], np.int64).tobytes()
            + d[-8:]
        ),
        lambda d, n: d[:15],
    ],
)
def test_a_packed_file_is_checked_against_its_size_before_a_frame_is_read(tmp_path, tail):
    path, data = packed(tmp_path)
    path.write_bytes(tail(data, 3))
    with pytest.raises(ValueError, match="not a packed JPEG frame file"):
        JpegFrames(path)


def test_frames_of_another_size_than_the_cache_are_refused(tmp_path):
    path, _ = packed(tmp_path)
    assert len(JpegFrames(path, (8, 8))[0]) == 8
    with pytest.raises(ValueError, match="frame 1 is 8x8"):
        JpegFrames(path, (16, 8))[1]
    write_frames(tmp_path / "v.npy", np.zeros((2, 8, 8, 3), np.uint8), "npy")
    from lofi.trainer.frame_store import open_frames

    with pytest.raises(ValueError, match=r"holds uint8 \(2, 8, 8, 3\), not uint8 frames"):
        open_frames(tmp_path / "v.npy", "npy", (8, 4))


@pytest.mark.parametrize(
    "fps, size, expected",
    [
        (1e300, (16, 16), r"frame cache fps = 1e\+300: expected a number >= 0.01"),
        (float("nan"), (16, 16), "frame cache fps = nan"),
        (
            8.0,
            (10**9, 16),
            "frame cache height = 1000000000: expected an integer >= 1 and <= 16384",
        ),
        (8.0, (16, 0), "frame cache width = 0"),
    ],
)
def test_prepare_bounds_fps_and_size(layout, fps, size, expected):
    ann = annotation(layout["root"] / "gt.json", {"good": {}})
    with pytest.raises(LofiError, match=expected):
        prepare_cache(ann, layout["videos"], layout["cache"], fps, size)
    assert not layout["cache"].exists()


def test_a_non_square_cache_records_height_and_width_in_order(layout):
    ann = annotation(layout["root"] / "gt.json", {"good": {}})
    prepare_cache(ann, layout["videos"], layout["cache"], 8.0, (16, 24), fmt="jpeg")
    index = json.loads((layout["cache"] / "index.json").read_text())
    assert (index["height"], index["width"]) == (16, 24)
    cache = FrameCache(layout["cache"])
    assert cache.size == (16, 24) and np.asarray(cache.frames("good")).shape[1:] == (16, 24, 3)
    again = prepare_cache(ann, layout["videos"], layout["cache"], 8.0, (16, 24), fmt="jpeg")
    assert again.resumed == ["good"]
    with pytest.raises(
        LofiError, match="decoded at 8 fps, 16x24, jpeg; asked for 8 fps, 24x16, jpeg"
    ):
        prepare_cache(ann, layout["videos"], layout["cache"], 8.0, (24, 16), fmt="jpeg")


def test_a_missing_or_cut_cache_file_is_decoded_again(cache, layout):
    (cache / "fine.jpgs").unlink()
    data = (cache / "good.jpgs").read_bytes()
    (cache / "good.jpgs").write_bytes(data[:-1])
    ann = layout["root"] / "gt.json"
    report = prepare_cache(ann, layout["videos"], cache, 8.0, (16, 16), fmt="jpeg")
    assert sorted(report.decoded) == ["fine", "good"] and not report.resumed
    assert (cache / "good.jpgs").read_bytes() == data


def test_hashing_refuses_a_fifo_at_once(tmp_path):
    from lofi.trainer.frame_store import sha256

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ValueError, match="pipe is not a regular file"):
        sha256(tmp_path / "pipe")
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
