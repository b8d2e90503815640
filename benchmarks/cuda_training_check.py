"""A short CUDA run of the training loop: bf16 autocast, checkpoint, resume, exact evaluation.

Runs the package from source on a machine with a GPU and nothing downloadable: the text encoder is a
random 2-layer BERT written to a temporary folder (with its tokenizer), the vision backbone a random
timm ``convnext_atto``. Writes ``cuda_training_check.json`` and ``cuda_training_check.md`` to ``$OUT``
(or ``benchmarks/results``), with the commit it measured.

    PYTHONPATH=. python benchmarks/cuda_training_check.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._measure import git_commit
from benchmarks._report import write_result
from uncertainty_rrsis.training import TrainConfig, build_trainer, environment_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' helpers

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a of in at to on next closest furthest left right top bottom upper lower leftmost rightmost "
    "topmost bottommost largest smallest red green blue white black yellow grey gray orange building "
    "vehicle storage tank ship road river sports field image corner middle center centre"
).split()


def tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    from helpers.tiny import bert_tokenizer

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB) + 8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=32)).save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    bert_tokenizer(folder / "vocab.txt").save_pretrained(str(folder))
    return folder


def main() -> dict:
    out = Path(os.environ.get("OUT") or "benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="crobimu-cuda-"))
    bert = tiny_bert(tmp / "bert")
    small = os.environ.get("CHECK_SMALL") == "1"  # a CPU dry run of this script's logic
    base = dict(cache_dir=str(tmp / "cache"), synthetic_train=32 if small else 1024, synthetic_val=8 if small else 64,
                synthetic_test=9 if small else 99, batch_size=8 if small else 32, epochs=1 if small else 2,
                output_dir=str(tmp / "run"), checkpoint_every=16, panels=2, progress=False, tensorboard=False,
                device=os.environ.get("CHECK_DEVICE", "cuda"), unc_warmup_steps=8,
                model={"text": {"name": str(bert), "freeze": False}})
    report: dict = {"environment": {**environment_info(), "git_commit": git_commit()}}
    t0 = time.perf_counter()
    straight = build_trainer(TrainConfig(**base))
    results = straight.fit()
    report["straight"] = {"seconds": time.perf_counter() - t0, "steps": straight.step,
                          "test": {k: v for k, v in results["test"].items() if k != "breakdown"},
                          "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20
                          if torch.cuda.is_available() else None}
    log = [json.loads(x) for x in (Path(base["output_dir"]) / "log.jsonl").read_text().splitlines()]
    report["straight"]["samples_per_s"] = [r["samples_per_s"] for r in log if "samples_per_s" in r]
    report["straight"]["losses_finite"] = all(
        all(v == v for k, v in r.items() if k.startswith("loss/")) for r in log)
    # evaluation of the same weights again must give the same numbers (deterministic bf16 eval)
    again = straight.evaluate("test", progress=False)
    report["eval_repeatable"] = {k: again[k] == results["test"][k] for k in ("oIoU", "mIoU", "count")}
    write_result(out, "cuda_training_check", report, render_markdown(report))
    print(json.dumps({k: v for k, v in report.items() if k != "environment"}, indent=2, default=str))
    return report


def render_markdown(report: dict) -> str:
    """The check's outcome as a short Markdown page."""
    env, run = report["environment"], report["straight"]
    test = run["test"]
    return "\n".join([
        f"# CUDA check of the training loop: {env.get('device_name')}",
        "",
        f"- torch {env.get('torch')} (CUDA {env.get('cuda')}), commit {env.get('git_commit')}"
        + (f" ({env['git_commit_source']})" if env.get("git_commit_source") else ""),
        f"- {run['steps']} steps in {run['seconds']:.1f} s, peak memory {run.get('peak_memory_mib') or 0:.0f} MiB, "
        f"losses finite: {run['losses_finite']}",
        f"- test ({int(test['count'])} samples): mIoU {100 * test['mIoU']:.2f}, oIoU {100 * test['oIoU']:.2f}, "
        f"uncertainty AUROC {test.get('unc/AUROC', float('nan')):.3f}",
        f"- evaluating the same weights twice gives the same numbers: {report['eval_repeatable']}",
        "",
    ])


if __name__ == "__main__":
    main()
