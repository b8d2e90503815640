"""``evaluate()`` without a Trainer: the field's metrics, text blanking, sharding, reports, panels,
and ``examples/evaluate.py`` on a checkpoint (one process and two gloo ranks)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from uncertainty_rrsis import RiskGuidedOutput
from uncertainty_rrsis.training import (
    blank_sentences,
    evaluate,
    evaluation_loader,
    final_report,
    format_breakdown,
    format_metrics,
    save_panels,
    write_metrics,
)

from helpers.examples import load_example

SIZE = 16
N = 7


class Spy(nn.Module):
    """Foreground logits = the image's first channel; U = its 4x4 average; records the token ids it saw."""

    def __init__(self, *, uncertainty: bool = True) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.uncertainty = uncertainty
        self.seen: list[torch.Tensor] = []
        self.modes: list[bool] = []

    def forward(self, images, input_ids, text_padding_mask=None):
        self.seen.append(input_ids.clone())
        self.modes.append(self.training)
        logits = images[:, :1] * self.scale
        unc = F.avg_pool2d(logits.abs(), 4) - 0.5 if self.uncertainty else None
        return RiskGuidedOutput(logits, logits, unc)


def samples(n: int = N, *, orig: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(5)
    out = []
    for i in range(n):
        image = torch.randn(3, SIZE, SIZE, generator=g)
        mask = torch.rand(SIZE, SIZE, generator=g) < 0.4
        sample = {"image": image, "mask": mask, "sentence": f"object {i}", "id": str(i), "orig_size": (SIZE, SIZE),
                  "tags": {"thin": i % 2 == 0}, "input_ids": torch.full((6,), 7), "text_padding_mask":
                  torch.tensor([False, False, False, True, True, True])}
        if orig:
            sample["orig_mask"] = torch.rand(20, 24, generator=g) < 0.4
        out.append(sample)
    return out


def hand_metrics(preds: list[torch.Tensor], targets: list[torch.Tensor]) -> dict:
    inter = [float((p & t).sum()) for p, t in zip(preds, targets, strict=True)]
    union = [float((p | t).sum()) for p, t in zip(preds, targets, strict=True)]
    iou = [i / u if u else 0.0 for i, u in zip(inter, union, strict=True)]
    return {"oIoU": sum(inter) / sum(union), "mIoU": sum(iou) / len(iou),
            "Pr@0.5": sum(v >= 0.5 for v in iou) / len(iou), "count": len(iou)}


# ------------------------------------------------------------------ evaluate()


def test_evaluate_without_a_trainer_gives_the_fields_metrics():
    data = samples()
    model = Spy().train()
    result = evaluate(model, evaluation_loader(data, batch_size=3), device="cpu")
    expected = hand_metrics([s["image"][0] > 0 for s in data], [s["mask"] for s in data])
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert set(result["breakdown"]) == {"thin=true", "thin=false"} and result["breakdown"]["thin=true"]["count"] == 4
    assert {"unc/AUROC", "unc/AUPRC", "unc/caught@5%", "unc/error_rate", "unc/pixels"} <= set(result)
    assert result["unc/pixels"] == N * SIZE * SIZE
    assert model.modes == [False] * 3 and model.training  # evaluated in eval mode, then put back


def test_a_model_without_uncertainty_map_reports_no_uncertainty_metrics():
    result = evaluate(Spy(uncertainty=False), evaluation_loader(samples(), batch_size=4), device="cpu")
    assert result["count"] == N and not any(k.startswith("unc/") for k in result)
    result = evaluate(Spy(), evaluation_loader(samples(), batch_size=4), device="cpu", uncertainty=False)
    assert not any(k.startswith("unc/") for k in result)


def test_at_original_size_scores_against_the_original_masks():
    data = samples(orig=True)
    result = evaluate(Spy(), evaluation_loader(data, batch_size=2), device="cpu", at_original_size=True)
    preds = [F.interpolate(s["image"][None, :1], size=(20, 24), mode="bilinear", align_corners=False)[0, 0] > 0
             for s in data]
    expected = hand_metrics(preds, [s["orig_mask"] for s in data])
    assert result["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-12)
    assert result["oIoU"] == pytest.approx(expected["oIoU"], abs=1e-12)


def test_blank_text_gives_the_model_the_empty_sentence(tiny_tokenizer):
    model = Spy()
    evaluate(model, evaluation_loader(samples(), batch_size=4), device="cpu", blank_text=True, tokenizer=tiny_tokenizer)
    empty = tiny_tokenizer("", padding="max_length", max_length=6, truncation=True)["input_ids"]
    assert all(row.tolist() == empty for ids in model.seen for row in ids)
    ids, pad = blank_sentences(torch.full((2, 6), 9), torch.zeros(2, 6, dtype=torch.bool), tokenizer=tiny_tokenizer)
    assert ids.shape == (2, 6) and pad.tolist() == [[False, False, True, True, True, True]] * 2
    with pytest.raises(ValueError, match="blank_text=True\\) needs tokenizer="):
        evaluate(Spy(), evaluation_loader(samples(), batch_size=4), device="cpu", blank_text=True)


def test_sharded_loaders_take_every_sample_once():
    data = samples()
    shards = [[sid for batch in evaluation_loader(data, batch_size=2, rank=r, world_size=2) for sid in batch["id"]]
              for r in range(2)]
    assert shards == [["0", "2", "4", "6"], ["1", "3", "5"]]


# ------------------------------------------------------------------ reports and panels


def test_format_metrics_and_breakdown():
    metrics = {"oIoU": 0.5, "mIoU": 0.25, "Pr@0.5": 0.125, "count": 8, "unc/AUROC": 0.75,
               "breakdown": {"thin=true": {"mIoU": 0.5, "oIoU": 0.4, "count": 3}}}
    text = format_metrics(metrics, title="test")
    assert text.splitlines()[0] == "test" and "50.00" in text and "25.00" in text
    assert [line for line in text.splitlines() if line.strip().startswith("U^p (RUS)")][0].split()[2] == "0.750"
    assert text.splitlines()[-1] == "samples: 8"
    full = dict(metrics, **{"unc/margin/AUROC": 0.9, "unc/failure/count": 8, "unc/failure/rate": 0.25,
                            "unc/failure/u_mask/AUROC": 0.6, "unc/failure/oracle/AURC": 0.1})
    lines = format_metrics(full).splitlines()
    assert any(line.split()[-3:] == ["0.900", "-", "-"] for line in lines if "margin of P" in line)
    assert "failed samples (IoU < 0.5): 25.0 % of 8" in lines
    assert [line for line in lines if "predicted mask" in line][0].split()[-3] == "0.600"
    cells = {f"unc/outcome/{k}/{v}": x for k, x in zip(("TP", "FP", "FN", "TN"), (0.9, 0.8, 0.7, 0.1))
             for v in ("u_mean", "margin_mean")}
    lines = format_metrics({**full, **cells, "unc/outcome/FN/margin_mean": float("nan")}).splitlines()
    header = [line for line in lines if "mean over the pixels" in line][0]
    assert header.split()[-4:] == ["TP", "FP", "FN", "TN"]
    u_row, m_row = lines[lines.index(header) + 1], lines[lines.index(header) + 2]
    assert u_row.split()[-4:] == ["0.900", "0.800", "0.700", "0.100"] and m_row.split()[-2:] == ["-", "0.100"]
    assert format_breakdown(metrics) == "  thin=true                    mIoU  50.00  oIoU  40.00  n=3"
    # with failure detection per tag: the share of failures and both detectors' AUROC, "-" where undefined
    tagged = dict(metrics, breakdown={**metrics["breakdown"], "tiny=true": {"mIoU": 0.1, "oIoU": 0.2, "count": 2}},
                  unc_breakdown={"thin=true": {"failure/rate": 0.5, "failure/u_mask/AUROC": 0.25,
                                               "failure/margin/AUROC": 0.875},
                                 "tiny=true": {"failure/rate": 1.0, "failure/u_mask/AUROC": float("nan")}})
    thin, tiny = format_breakdown(tagged).splitlines()
    assert thin.startswith("  thin=true") and thin.split()[-9:] == [
        "failed", "50.0", "%", "fail", "AUROC", "U^p", "0.250", "margin", "0.875"]
    assert tiny.split()[-7:] == ["%", "fail", "AUROC", "U^p", "-", "margin", "-"] and "100.0" in tiny


def test_final_report_states_how_the_numbers_were_measured():
    report = final_report({"test": {"mIoU": 0.5}}, checkpoint="best (val mIoU)", image_size=128, seed=3, steps=10,
                          train_config={"lr": 1e-3})
    assert list(report) == ["checkpoint", "protocol", "resolution", "seed", "steps", "results", "train_config",
                            "environment"]
    assert report["resolution"] == "128x128" and "0 when the union is empty" in report["protocol"]
    assert report["environment"]["torch"] == torch.__version__


def test_write_metrics_writes_json_atomically(tmp_path):
    path = write_metrics(tmp_path / "out" / "metrics.json", {"results": {"test": {"mIoU": 0.5}}, "path": tmp_path})
    assert json.loads(path.read_text())["results"]["test"]["mIoU"] == 0.5
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_save_panels_draws_the_first_samples(tmp_path):
    paths = save_panels(Spy(), samples(3), tmp_path / "panels", split="val", count=5, device="cpu")
    assert [p.name for p in paths] == ["val_000.png", "val_001.png", "val_002.png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


# ------------------------------------------------------------------ examples/evaluate.py on a checkpoint


def make_checkpoint(tmp: Path, tiny_config, tokenizer) -> Path:
    """A saved tiny model, and a trainer_state.json in the previous layout naming small synthetic data."""
    from uncertainty_rrsis.models import CroBIMU

    torch.manual_seed(0)
    folder = tmp / "run" / "checkpoints" / "best"
    CroBIMU(tiny_config).save_pretrained(folder, tokenizer=tokenizer)
    train = {"dataset": "synthetic", "cache_dir": str(tmp / "cache"), "synthetic_train": 2, "synthetic_val": 2,
             "synthetic_test": 5, "batch_size": 2, "progress": False, "device": "cpu", "seed": 1,
             "use_fusion": True, "image_size": None, "freeze_text": False, "resume": True}
    (folder / "trainer_state.json").write_text(json.dumps({"step": 3, "train_config": train}))
    return folder


def test_evaluate_script_evaluates_a_checkpoint_without_a_trainer(tmp_path, tiny_config, tiny_tokenizer, monkeypatch):
    evaluate_script = load_example("evaluate")

    from uncertainty_rrsis.models import CroBIMU
    from uncertainty_rrsis.training import Trainer, build_dataset, load_tokenizer, prepare_data_root
    from uncertainty_rrsis.training.config import TrainConfig

    folder = make_checkpoint(tmp_path, tiny_config, tiny_tokenizer)

    def no_trainer(*args, **kwargs):
        raise AssertionError("examples/evaluate.py must not build a Trainer")

    monkeypatch.setattr(Trainer, "__init__", no_trainer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = evaluate_script.main([str(folder), "--device", "cpu", "--no-progress", "--panels", "2",
                                        "--text-masked", "--output-dir", str(tmp_path / "eval")])
    assert not [w for w in caught if "TrainConfig" in str(w.message)]  # old trainer_state layouts load quietly
    assert results["test"]["count"] == 5 and "unc/AUROC" in results["test"] and "breakdown" in results["test"]
    assert "test/text_masked" in results and not any(k.startswith("unc/") for k in results["test/text_masked"])
    report = json.loads((tmp_path / "eval" / "eval_test.json").read_text())
    assert report["results"]["test"]["mIoU"] == results["test"]["mIoU"] and report["original_size"] is False
    assert sorted(p.name for p in (tmp_path / "eval" / "panels").iterdir()) == ["test_000.png", "test_001.png"]

    model = CroBIMU.from_pretrained(folder)
    cfg = TrainConfig(cache_dir=str(tmp_path / "cache"), synthetic_train=2, synthetic_val=2, synthetic_test=5,
                      progress=False)
    root = prepare_data_root(cfg, image_size=model.config.image_size)
    test = build_dataset("synthetic", root, "test", tokenizer=load_tokenizer(folder / "tokenizer"),
                         model_config=model.config)
    direct = evaluate(model, evaluation_loader(test, batch_size=2), device="cpu")
    for key in ("oIoU", "mIoU", "Pr@0.5", "count", "unc/AUROC", "unc/AUPRC"):
        assert results["test"][key] == pytest.approx(direct[key], abs=1e-12), key

    original = evaluate_script.main([str(folder), "--device", "cpu", "--no-progress", "--panels", "0",
                                     "--original-size", "--split", "val", "--output-dir", str(tmp_path / "eval")])
    assert original["val"]["count"] == 2 and json.loads((tmp_path / "eval" / "eval_val.json").read_text())[
        "original_size"] is True


def _evaluate_rank(rank: int, world: int, store: str, argv: list[str], out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    evaluate_script = load_example("evaluate")  # the script finds the process group torchrun would have made

    results = evaluate_script.main(argv)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    assert not torch.distributed.is_initialized()  # main_guard tore it down


@pytest.mark.slow
@pytest.mark.distributed
def test_evaluate_script_under_two_ranks_counts_every_sample_once(tmp_path, tiny_config, tiny_tokenizer):
    evaluate_script = load_example("evaluate")

    folder = make_checkpoint(tmp_path, tiny_config, tiny_tokenizer)
    argv = [str(folder), "--device", "cpu", "--no-progress", "--panels", "0", "--output-dir", str(tmp_path / "eval")]
    single = evaluate_script.main(argv)  # also builds the synthetic cache once
    mp.spawn(_evaluate_rank, args=(2, f"file://{tmp_path / 'store'}", argv, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)["test"]
        assert got["count"] == 5  # odd split over two ranks: no sample twice, none left out
        for key in ("oIoU", "mIoU", "Pr@0.5", "Pr@0.9"):
            assert got[key] == pytest.approx(single["test"][key], abs=1e-9), (rank, key)
        # U^p of a pixel may differ in the last bits between one batch of 5 and batches of 3 and 2 (another
        # convolution path), enough to move a pixel into the next of the 1000 histogram bins now and then;
        # a sample counted twice or left out would move these by far more
        for key in ("unc/AUROC", "unc/caught@10%"):
            assert got[key] == pytest.approx(single["test"][key], abs=1e-4), (rank, key)
        assert got["breakdown"].keys() == single["test"]["breakdown"].keys()
        for group, values in single["test"]["breakdown"].items():
            assert got["breakdown"][group]["mIoU"] == pytest.approx(values["mIoU"], abs=1e-9), group


