"""The synthetic benchmark: unique referents, non-empty masks, determinism, caching."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from uncertainty_rrsis.data import (
    RISBench,
    SyntheticConfig,
    collate,
    ensure_synthetic,
    generate_synthetic,
    render_sample,
)
from uncertainty_rrsis.data import synthetic as synth
from uncertainty_rrsis.data.synthetic import CATEGORIES, resolve
from uncertainty_rrsis.data.synthetic import cache as synth_cache

SMALL = dict(image_size=64, n_train=10, n_val=4, n_test=4)


def _samples(n: int = 60, **cfg):
    config = SyntheticConfig(**cfg)
    return [render_sample(config, split, i) for split in ("train", "test") for i in range(n // 2)]


def test_every_sentence_refers_to_exactly_one_visible_object():
    for s in _samples(80):
        found = resolve(s.query, s.objects)
        assert [o["id"] for o in found] == [s.target], s.sentence
        target = s.objects[s.target - 1]
        assert s.mask.dtype == bool and s.mask.shape == (96, 96)
        assert s.mask.sum() == target["area"] >= 8  # mask = the target's visible pixels
        assert s.query["category"] in s.sentence and s.tags["category"] == s.query["category"]
        if s.query.get("colour"):
            assert s.query["colour"] in s.sentence
        same = [
            o for o in s.objects if o["category"] == target["category"] and o["id"] != s.target and o["area"]
        ]
        assert s.tags["distractors"] == len(same)
        assert s.tags["thin"] == (target["category"] in ("road", "river"))
        assert s.tags["tiny"] == (target["area"] < 0.01 * 96 * 96)


def test_text_is_needed_and_hard_cases_present():
    samples = _samples(120)
    with_distractors = np.mean([s.tags["distractors"] > 0 for s in samples])
    assert with_distractors >= 0.6  # same-category distractors: the image alone is ambiguous
    assert all(s.tags["objects"] >= 2 for s in samples)  # even category queries pick among objects
    assert any(s.tags["thin"] for s in samples) and any(s.tags["tiny"] for s in samples)
    assert any(s.tags["dense"] for s in samples)
    assert {s.tags["category"] for s in samples} == set(CATEGORIES)
    assert {s.tags["query"] for s in samples} >= {"category", "colour", "region", "position", "size"}


def test_object_scale_makes_targets_larger_and_stays_unique():
    small = _samples(24)
    large = _samples(24, object_scale=1.5)
    for s in large:
        assert [o["id"] for o in resolve(s.query, s.objects)] == [s.target]
    compact = lambda ss: np.mean([s.mask.sum() for s in ss if not s.tags["thin"]])  # noqa: E731
    assert compact(large) > 1.5 * compact(small)


def test_resolve_detects_ambiguity():
    objs = [
        {"id": 1, "category": "ship", "colour": "red", "area": 50, "cx": 0.2, "cy": 0.2, "on_road": False},
        {"id": 2, "category": "ship", "colour": "red", "area": 60, "cx": 0.25, "cy": 0.8, "on_road": False},
        {
            "id": 3,
            "category": "building",
            "colour": "red",
            "area": 300,
            "cx": 0.9,
            "cy": 0.5,
            "on_road": False,
        },
    ]
    assert len(resolve({"category": "ship", "colour": "red"}, objs)) == 2
    assert len(resolve({"category": "ship", "extreme": "leftmost"}, objs)) == 2  # within the margin
    assert len(resolve({"category": "ship", "extreme": "largest"}, objs)) == 2  # ratio < 1.5
    assert [o["id"] for o in resolve({"category": "ship", "region": "upper left"}, objs)] == [1]
    assert [o["id"] for o in resolve({"category": "building"}, objs)] == [3]


def test_same_seed_same_sample_other_seed_differs():
    a = render_sample(SyntheticConfig(seed=3), "val", 5)
    b = render_sample(SyntheticConfig(seed=3), "val", 5)
    c = render_sample(SyntheticConfig(seed=4), "val", 5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.sentence == b.sentence
    assert not np.array_equal(a.image, c.image)
    # (seed, split, index) only: the split sizes do not change a sample
    d = render_sample(SyntheticConfig(seed=3, n_train=7, n_val=9), "val", 5)
    assert np.array_equal(a.image, d.image)


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_writes_byte_identical_files(tmp_path):
    config = SyntheticConfig(seed=11, **SMALL)
    generate_synthetic(tmp_path / "a", config, progress=False)
    generate_synthetic(tmp_path / "b", config, progress=False)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and len(da) == 2 * 18 + 7
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic(tmp_path / "a", config, progress=False)


def test_written_dataset_reads_with_risbench_reader(tmp_path):
    root = generate_synthetic(tmp_path / "syn", SyntheticConfig(seed=1, **SMALL), progress=False)
    lines = (root / "output_phrase_train.txt").read_text().splitlines()
    assert len(lines) == 10 and lines[0].startswith("train_000000.png the ")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distinct val images: no RISBench val warning
        val = RISBench(root, "val", image_size=64)
    ds = RISBench(root, "train", image_size=64, return_orig_mask=True)
    for i in range(len(ds)):
        s = ds[i]
        ref = render_sample(SyntheticConfig(seed=1, **SMALL), "train", i)
        assert s["sentence"] == ref.sentence and s["tags"] == ref.tags
        np.testing.assert_array_equal(s["mask"].numpy(), ref.mask)  # same size: no resize
        assert s["mask"].any()
    assert len(val) == 4
    batch = collate([ds[0], ds[1]])
    assert batch["tags"][0]["category"] in CATEGORIES
    assert json.loads((root / "synthetic.json").read_text())["generator_version"] == synth.GENERATOR_VERSION


def test_ensure_synthetic_caches_and_is_atomic(tmp_path, monkeypatch):
    first = ensure_synthetic(tmp_path, seed=2, progress=False, **SMALL)
    assert (first / "COMPLETE.json").is_file()

    def boom(*args, **kwargs):
        raise AssertionError("should not regenerate")

    monkeypatch.setattr(synth_cache, "generate_synthetic", boom)
    assert ensure_synthetic(tmp_path, seed=2, progress=False, **SMALL) == first
    monkeypatch.undo()

    calls = {"n": 0}
    real_render = synth.render_sample

    def crash_after_three(config, split, index):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real_render(config, split, index)

    monkeypatch.setattr(synth_cache, "render_sample", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path, seed=5, progress=False, **SMALL)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # nothing half-written left

    other = ensure_synthetic(tmp_path, seed=5, progress=False, **SMALL)
    assert other != first and (other / "COMPLETE.json").is_file()
    (other / "COMPLETE.json").write_text("{}")  # a marker that does not match: regenerate
    again = ensure_synthetic(tmp_path, seed=5, progress=False, **SMALL)
    assert again == other and json.loads((again / "COMPLETE.json").read_text())["seed"] == 5


def test_config_validation():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=16)
    with pytest.raises(ValueError, match="object_scale"):
        SyntheticConfig(object_scale=3.0)
    with pytest.raises(ValueError, match="split must be"):
        render_sample(SyntheticConfig(), "testA", 0)
    assert SyntheticConfig().fingerprint() != SyntheticConfig(seed=1).fingerprint()


def _leftover(root, name: str, *, lock: bool = True):
    """What a generation killed mid-way leaves: a half-written temporary folder and its lock file."""
    folder = root / name
    (folder / "img_rgb").mkdir(parents=True)
    (folder / "img_rgb" / "train_000000.png").write_bytes(b"half")
    if lock:
        folder.with_name(name + ".lock").write_text("")
    return folder


@pytest.mark.skipif(synth_cache.fcntl is None, reason="file locks are POSIX-only; elsewhere only the age rule applies")
def test_leftovers_of_killed_generations_are_removed(tmp_path):
    fingerprint = SyntheticConfig(seed=2, **SMALL).fingerprint()
    dead = _leftover(tmp_path, f".synthetic-{fingerprint}-0a1b2c3d4e")
    live = _leftover(tmp_path, f".synthetic-{fingerprint}-9f8e7d6c5b")
    held = synth_cache._try_lock(live.with_name(live.name + ".lock"), create=False)  # a generation still running
    old_style = _leftover(tmp_path, ".synthetic-0123456789ab-k2j4_x8q", lock=False)  # before lock files
    fresh_old_style = _leftover(tmp_path, ".synthetic-0123456789ab-abcdefgh", lock=False)
    week_ago = time.time() - 7 * 24 * 3600
    for path in (old_style, old_style / "img_rgb", old_style / "img_rgb" / "train_000000.png"):
        os.utime(path, (week_ago, week_ago))
    others = [tmp_path / ".synthetic-notours", tmp_path / "synthetic-0123456789ab-kept", tmp_path / ".cache"]
    for path in others:
        path.mkdir()
    (tmp_path / ".synthetic-0123456789ab-gone00.lock").write_text("")  # a lock whose folder is gone
    try:
        ensure_synthetic(tmp_path, seed=2, progress=False, **SMALL)
        assert not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
        assert live.exists() and live.with_name(live.name + ".lock").exists()  # never touched while locked
        assert not old_style.exists() and fresh_old_style.exists()
        assert all(path.exists() for path in others)
        assert not (tmp_path / ".synthetic-0123456789ab-gone00.lock").exists()
    finally:
        held.close()
    assert synth.clean_stale_temporaries(tmp_path) == [live]  # its process has ended now


@pytest.mark.slow
@pytest.mark.skipif(synth_cache.fcntl is None, reason="file locks are POSIX-only")
def test_generation_killed_by_a_signal_is_cleaned_up_by_the_next_call(tmp_path):
    script = (
        "import sys, time\n"
        "from uncertainty_rrsis.data.synthetic import cache as s\n"
        "real = s.render_sample\n"
        "def slow(*a, **k):\n"
        "    print('rendering', flush=True); time.sleep(0.2); return real(*a, **k)\n"
        "s.render_sample = slow\n"
        "s.ensure_synthetic(sys.argv[1], seed=4, image_size=64, n_train=500, n_val=1, n_test=1, progress=False)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert child.stdout.readline().strip() == "rendering"
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".synthetic-")]
        assert len(leftovers) == 2  # the folder and its lock file
        assert synth.clean_stale_temporaries(tmp_path) == []  # alive: kept
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert all(p.exists() for p in leftovers)  # SIGKILL: no clean-up of its own
    ensure_synthetic(tmp_path, seed=4, progress=False, image_size=64, n_train=2, n_val=1, n_test=1)
    assert not any(p.name.startswith(".synthetic-") for p in tmp_path.iterdir())
