"""Seconds-long smoke run of ``benchmarks/latency.py`` (CI runs this, never the benchmark itself).

The smallest configuration on CPU: the benchmark-only ``micro`` model (C = 32, one decoder layer,
a one-layer random BERT) at 64 and 96 pixels, Base and Full, two timed calls. It checks that every
section the GPU script relies on writes its JSON and the Markdown tables, and the FLOP formulas.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]  # `benchmarks` imports from here (pytest's pythonpath)

pytest.importorskip("einops")


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_grid_sample_flop_formula():
    from benchmarks._flops import count_flops

    n, c, h, w, ho, wo = 2, 3, 8, 8, 5, 4
    x = torch.randn(n, c, h, w, requires_grad=True)
    grid = (torch.rand(n, ho, wo, 2) * 2 - 1).requires_grad_(True)
    fwd = count_flops(lambda: F.grid_sample(x, grid, mode="bilinear", align_corners=False))
    assert fwd["total"] == 2 * 4 * n * c * ho * wo  # 4 multiply-adds per output element, 2 FLOPs each
    both = count_flops(lambda: F.grid_sample(x, grid, mode="bilinear", align_corners=False).sum().backward())
    assert both["total"] == 2 * 4 * n * c * ho * wo * (1 + 1 + 2)  # forward + grad_input + grad_grid


def test_grouped_convolution_backward_costs_twice_the_forward():
    from benchmarks._flops import count_flops

    conv = torch.nn.Conv2d(16, 16, 7, padding=3, groups=16)  # depthwise, as in ConvNeXt
    x = torch.randn(1, 16, 12, 12, requires_grad=True)
    fwd = count_flops(lambda: conv(x))["total"]
    assert fwd == 2 * 16 * 12 * 12 * 49
    assert count_flops(lambda: conv(x).sum().backward())["total"] == 3 * fwd  # + grad_input + grad_weight


def test_attention_counted_through_math_path():
    from benchmarks._flops import count_flops

    b, g, q, k, e = 1, 2, 6, 5, 4
    qs, ks, vs = torch.randn(b, g, q, e), torch.randn(b, g, k, e), torch.randn(b, g, k, e)
    counted = count_flops(lambda: F.scaled_dot_product_attention(qs, ks, vs))
    assert counted["total"] == 2 * (2 * b * g * q * k * e)  # Q K^T and A V


def test_count_launches_skips_views_and_counts_in_place_and_backward_ops():
    from benchmarks._syncs import count_launches

    x = torch.randn(4, 4, requires_grad=True)
    views = count_launches(lambda: (x.view(16), x.t(), x[1:], x.unsqueeze(0).expand(3, 4, 4), x.detach()))
    assert views == {"total": 0, "by_op": {}}
    got = count_launches(lambda: x.t().mm(x).relu_().sum().backward(), top=20)
    assert got["total"] == sum(got["by_op"].values())
    # forward mm + its two gradients; relu_ in place and its backward; sum; the seed gradient
    assert got["by_op"]["mm"] == 3 and got["by_op"]["relu_"] == 1 and got["by_op"]["threshold_backward"] == 1
    assert not {"t", "expand", "view", "transpose"} & set(got["by_op"])


def test_fit_exponent_is_the_log_log_slope():
    from benchmarks.latency import fit_exponent

    xs = [320**2, 480**2, 640**2, 800**2]
    fit = fit_exponent(xs, [3.0 * x**1.0 for x in xs])
    assert fit["exponent"] == pytest.approx(1.0) and fit["r2"] == pytest.approx(1.0)
    assert fit_exponent(xs[:1], [1.0]) is None


def test_out_defaults_to_env(monkeypatch, tmp_path):
    from benchmarks.latency import parse_args

    monkeypatch.setenv("OUT", str(tmp_path))
    args = parse_args(["--device", "cpu", "--preset", "micro", "--quick"])
    assert args.out == str(tmp_path) and args.out_display == "$OUT"
    assert args.image_sizes == [64] and args.batch_sizes == [1]
    assert args.sections == ["syncs", "modules", "rows", "sweep", "batch"]
    monkeypatch.delenv("OUT")
    assert Path(parse_args(["--device", "cpu"]).out) == ROOT / "benchmarks" / "results"


def test_every_section_has_a_module_with_run():
    import importlib

    from benchmarks import latency, sections

    assert latency.SECTIONS == sections.SECTIONS
    for name in sections.SECTIONS:
        assert callable(importlib.import_module(f"benchmarks.sections.{name}").run), name
    with pytest.raises(ValueError, match="unknown section"):
        sections.run("bogus", None)


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path, one_thread):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    from benchmarks.latency import main

    run = main([
        "--device", "cpu", "--preset", "micro", "--threads", "1", "--quick",
        "--sections", "syncs,modules,rows,sweep,channels_last", "--image-sizes", "64,96",
        "--variants", "Base,Full", "--warmup", "1", "--repeats", "2", "--out", str(tmp_path), "--tag", "smoke",
    ])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke.json", "smoke.md"]  # one JSON + one Markdown
    combined = json.loads((tmp_path / "smoke.json").read_text())
    assert set(combined["sections"]) == {"syncs", "modules", "rows", "sweep", "channels_last"}
    assert combined["environment"]["torch"] == torch.__version__
    commit = combined["environment"]["git_commit"]
    assert all(s["git_commit"] == commit for s in combined["sections"].values())
    assert combined["load_average_start"] is None or len(combined["load_average_start"]) == 3

    mods = run["sections"]["modules"]
    assert {r["module"] for r in mods["records"]} == {"RUS", "UGF", "UDLR", "OnlineErrorLoss"}
    assert all(r["latency"]["n"] >= 2 and r["latency"]["median_ms"] > 0 for r in mods["records"])
    udlr = next(f for f in mods["fits"] if f["module"] == "UDLR" and f["mode"] == "fwd")
    assert udlr["flops"]["exponent"] == pytest.approx(1.0, abs=0.02)  # convolutions: linear in the pixels

    rows = {(r["variant"], r["mode"]): r for r in run["sections"]["rows"]["records"]}
    assert set(rows) == {("Base", "infer"), ("Full", "infer"), ("Base", "train"), ("Full", "train")}
    base, full = rows[("Base", "infer")], rows[("Full", "infer")]
    assert full["params"]["total"] - base["params"]["total"] == full["params"]["uncertainty"] > 0
    assert full["gflops_per_image"] > base["gflops_per_image"] > 0
    parts = full["flops"]["by_module"]
    assert parts["rus"] > 0 and parts["ugf"] > 0 and parts["udlr"] > 0
    assert rows[("Full", "train")]["memory"]["peak_delta_mib"] > 0

    syncs = run["sections"]["syncs"]["records"]
    assert {(r["variant"], r["mode"]) for r in syncs} == set(rows)
    for r in syncs:  # nothing of this library blocks the host; transformers may (padding-mask check)
        assert all(h["where"].startswith("transformers/") for h in r["sync_prone_ops"]), r["sync_prone_ops"]
    launches = {(r["variant"], r["mode"]): r["launches"]["total"] for r in syncs}
    for mode in ("infer", "train"):  # the modules add launches; a training step launches more than inference
        assert launches[("Full", mode)] > launches[("Base", mode)] > 0
    assert launches[("Base", "train")] > launches[("Base", "infer")]

    sweep = run["sections"]["sweep"]
    assert {r["image_size"] for r in sweep["records"]} == {64, 96}
    assert all(f["flops"] is not None for f in sweep["fits"])

    md = (tmp_path / "smoke.md").read_text()
    for heading in ("## Full vs Base", "## Ablation rows", "## Modules alone", "## Image size", "## channels_last",
                    "## Host-device synchronisations"):
        assert heading in md


@pytest.mark.slow
def test_compile_section_reports_graph_breaks_and_paired_full_vs_base(tmp_path, one_thread):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    from benchmarks.latency import main

    run = main([
        "--device", "cpu", "--preset", "micro", "--threads", "1", "--quick", "--sections", "compile,cudagraphs",
        "--compile-backend", "eager", "--compile-min-seconds", "0", "--warmup", "1", "--repeats", "3",
        "--batch-sizes", "1,3", "--queued-calls", "4", "--out", str(tmp_path), "--tag", "smoke",
    ])
    for section, mode in (("compile", "default"), ("cudagraphs", "reduce-overhead")):
        records = {r["variant"]: r for r in run["sections"][section]["records"]}
        assert set(records) == {"Full", "Base"}
        for rec in records.values():
            assert rec["fullgraph"] is True and rec["graph_breaks"] == 0, rec.get("fullgraph_error")
            assert rec["compile_s"] > 0 and rec["speedup"] > 0
            assert rec["compile_mode"] == mode and rec["batch"] == 3  # the compile batch: the largest listed
            assert len(rec["eager"]["times_ms"]) == len(rec["compiled"]["times_ms"]) == 3  # one interleaved table
            for kind in ("eager", "compiled"):  # steady state: 4 calls of 3 images queued
                queued = rec["throughput_queued"][kind]
                assert queued["calls"] == 4 and queued["items_per_s"] == pytest.approx(12 / queued["seconds"])
    md = (tmp_path / "smoke.md").read_text()
    assert "## torch.compile (inference, fp32, batch 3, 64px)" in md
    assert "## torch.compile with CUDA graphs (inference" in md
    assert "Full/Base compiled" in md and "paired" in md and "Compiled images/s queued" in md


@pytest.mark.slow
def test_training_section_finds_the_largest_batch_within_a_memory_limit(tmp_path, one_thread):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    from benchmarks.latency import main

    limit_gib = 0.02
    run = main([
        "--device", "cpu", "--preset", "micro", "--threads", "1", "--quick", "--sections", "training",
        "--train-variants", "Full", "--batch-sizes", "2,4", "--memory-limit-gib", str(limit_gib),
        "--compile-backend", "eager", "--compile-min-seconds", "0", "--min-section-seconds", "0",
        "--queued-calls", "3", "--out", str(tmp_path), "--tag", "smoke",
    ])
    sec = run["sections"]["training"]
    assert "partial" not in sec and sec["memory_limit_mib"] == pytest.approx(limit_gib * 1024)
    assert [(r["variant"], r["kind"]) for r in sec["records"]] == [("Full", "eager"), ("Full", "compiled")]
    for rec in sec["records"]:
        assert rec["batch"] == 4 and rec["throughput_queued"]["items_per_s"] > 0 and rec["peak_delta_mib"] > 0
        big = rec["largest_batch"]
        tried = {t["batch"]: t for t in big["tried"]}
        fits, fails = big["fits"], big["fails"]
        # a bracket: the step at `fits` stayed within the limit, the one at `fails` did not, and both ran
        assert 4 <= fits < fails and fits in tried and fails in tried
        assert tried[fits]["peak_delta_mib"] <= limit_gib * 1024 < tried[fails]["peak_delta_mib"]
        assert all(t["fits"] == (t["peak_delta_mib"] <= limit_gib * 1024) for t in big["tried"])
        assert not any(fits < b < fails and t["fits"] for b, t in tried.items())
    md = (tmp_path / "smoke.md").read_text()
    assert "## Training throughput and the largest batch (fp32, 64px)" in md


@pytest.mark.slow
def test_image_checks_benchmark_runs(tmp_path):
    from benchmarks.image_checks import main

    result = main(["--sections", "jpeg_check,detection,predict", "--trials", "1", "--side", "600",
                   "--image-size", "64", "--out", str(tmp_path)])
    assert {r["quality"] for r in result["jpeg_check"]} == {75, 90, 95}
    assert all(r["trials"] == 1 for r in result["detection"])
    assert result["predict"]["exit_status"] == 0 and result["predict"]["peak_rss_gb"] > 0
    assert (tmp_path / "image_checks.md").read_text().startswith("# Image checks")


def test_connected_components_benchmark_shapes_and_the_replaced_labeller():
    from benchmarks.connected_components import SHAPES, draw, iterative_components, same_partition, time_before
    from uncertainty_rrsis.scenes import connected_components

    for shape in SHAPES:
        mask = draw(shape, 40)
        ours, count = connected_components(mask)
        theirs, _ = iterative_components(mask)
        assert mask.any() and same_partition(ours, theirs)
        assert (count == 1) == (shape != "blobs")  # rivers, road networks and serpentines are one piece
    assert not same_partition(ours, ours.clamp(max=1))
    seconds, labels = time_before("serpentine", 24, 60.0)
    assert seconds is not None and same_partition(torch.from_numpy(labels), connected_components(draw("serpentine",
                                                                                                    24))[0])


def test_loader_benchmark_runs(tmp_path):
    from benchmarks.loader import main

    main(["--images", "3", "--side", "96", "--epochs", "1", "--image-size", "32", "--results", str(tmp_path)])
    result = json.loads((tmp_path / "loader.json").read_text())
    rows = result["seconds_per_sample"]
    assert set(rows) >= {"check, first epoch", "check, later epochs", "no check"}
    assert 0 < result["record_share_of_later_epoch"] < 1
    assert (tmp_path / "loader.md").read_text().startswith("# Data loading")


def test_large_raster_scene_and_its_referents(tmp_path):
    pytest.importorskip("rasterio")
    import rasterio

    from benchmarks.large_rasters import target_iou, target_rows, write_scene

    write_scene(tmp_path / "s.tif", 200)
    with rasterio.open(tmp_path / "s.tif") as src:
        assert (src.count, src.width, src.height, src.dtypes[0]) == (4, 200, 200, "uint16") and src.crs is not None
        profile = dict(src.profile, count=1, dtype="uint8")
        river = target_rows("thin", 200, 0, 200)
        blue = src.read(3).astype(int) - src.read(1).astype(int)
    assert blue[river].mean() > 1000 and blue[~river].mean() < 0  # the river is drawn where it is said to be
    with rasterio.open(tmp_path / "m.tif", "w", **profile) as dst:
        dst.write((river * 255).astype("uint8"), 1)
    assert target_iou(str(tmp_path / "m.tif"), 200, "thin") == 1.0
    assert target_iou(str(tmp_path / "m.tif"), 200, "compact") == 0.0
