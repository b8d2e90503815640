"""What strict image reading costs and finds, and what a very large JPEG costs in prediction.

Three measurements, CPU only, nothing downloaded:

* ``jpeg_check``: seconds of the compressed-data check of ``read_image`` (pure Python) next to
  Pillow's decode, for 800 x 800 JPEGs at several qualities;
* ``detection``: how often the check finds random damage (``--trials`` files per case: 1, 4, 16
  or 64 random bytes written over the compressed data), and how much of the picture the damage
  it misses spoils (share of pixels off by more than 30 grey levels);
* ``predict``: peak resident memory and wall time of ``examples/predict.py`` on one
  ``--side`` x ``--side`` JPEG with a tiny random model (``--image-size`` input side), run in a
  child process. ``--repo`` points at another checkout (e.g. an older commit exported with
  ``git archive``) to measure it the same way; ``--label`` names it in the results.

Run from the repository root::

    python -m benchmarks.image_checks                      # writes results/image_checks.{json,md}
    git archive b23b9d5 | tar -x -C OLD
    python -m benchmarks.image_checks --sections predict --repo OLD --label b23b9d5 --tag image_checks_before
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks._measure import environment
from benchmarks._report import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model of the tests and the picture generator

from uncertainty_rrsis.data._jpeg import JpegDataError, verify_jpeg  # noqa: E402

from helpers.datasets import textured_image  # noqa: E402


def _jpeg(picture: np.ndarray, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def jpeg_check(repeats: int = 5) -> list[dict[str, Any]]:
    rows = []
    picture = textured_image(800, 800, seed=0)
    for quality in (75, 90, 95):
        data = _jpeg(picture, quality=quality)
        check, decode = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            verify_jpeg(data)
            check.append(time.perf_counter() - start)
            start = time.perf_counter()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
            decode.append(time.perf_counter() - start)
        rows.append({"size": "800x800", "quality": quality, "kbytes": round(len(data) / 1024, 1),
                     "check_s": round(float(np.median(check)), 4), "decode_s": round(float(np.median(decode)), 4),
                     "check_s_per_mb": round(float(np.median(check)) / (len(data) / 2**20), 3)})
    return rows


def detection(trials: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(123)
    rows = []
    for size in (128, 512):
        for quality, subsampling in ((60, 0), (90, 2), (98, 1)):
            good = _jpeg(textured_image(size, size, seed=1), quality=quality, subsampling=subsampling)
            reference = np.asarray(Image.open(io.BytesIO(good)).convert("RGB")).astype(int)
            sos = good.index(b"\xff\xda")
            start, end = sos + 2 + int.from_bytes(good[sos + 2 : sos + 4], "big"), len(good) - 2
            for length in (1, 4, 16, 64):
                missed = []
                for _ in range(trials):
                    at = int(rng.integers(start, end - length))
                    damaged = bytearray(good)
                    damaged[at : at + length] = rng.integers(0, 255, length, dtype=np.uint8).tobytes()
                    try:
                        verify_jpeg(bytes(damaged))
                    except JpegDataError:
                        continue
                    decoded = np.asarray(Image.open(io.BytesIO(bytes(damaged))).convert("RGB")).astype(int)
                    missed.append(float((np.abs(decoded - reference).max(axis=2) > 30).mean()))
                rows.append({"size": size, "quality": quality, "subsampling": subsampling, "bytes": length,
                             "found": trials - len(missed), "trials": trials,
                             "worst_missed_share_off": round(max(missed), 4) if missed else None})
    return rows


_TINY_MODEL = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from helpers.tiny import save_tiny_bert, tiny_config
import torch
from transformers import BertTokenizerFast
from uncertainty_rrsis.models import CroBIMU
folder = Path(sys.argv[1])
bert = save_tiny_bert(folder / "bert")
torch.manual_seed(0)
CroBIMU(tiny_config(bert, image_size=int(sys.argv[2]))).eval().save_pretrained(
    folder / "checkpoint", tokenizer=BertTokenizerFast.from_pretrained(str(bert)))
"""


def predict(side: int, image_size: int, repo: Path, label: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", _TINY_MODEL, str(folder), str(image_size), str(ROOT / "tests")],
                       check=True, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True)
        image = folder / "large.jpg"
        band = textured_image(512, side, seed=2)
        picture = np.concatenate([np.roll(band, 37 * k, axis=1) for k in range(-(-side // 512))])[:side]
        Image.fromarray(picture).save(image, quality=90)
        del picture, band
        command = [sys.executable, str(repo / "examples" / "predict.py"), str(folder / "checkpoint"), "--image",
                   str(image), "--sentence", "the white ship", "--output-dir", str(folder / "out"), "--device", "cpu"]
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        stderr = child.stderr.read().decode(errors="replace")
        return {"side": side, "image_size": image_size, "jpeg_mbytes": round(image.stat().st_size / 2**20, 1),
                "checkout": label, "exit_status": os.waitstatus_to_exitcode(status),
                "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "wall_s": round(wall, 1),
                "stderr_tail": stderr[-500:] if status else ""}


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# Image checks ({result['environment'].get('git_commit', '?')})", ""]
    if "jpeg_check" in result:
        lines += ["## JPEG data check vs decode (800 x 800)", "",
                  "| quality | KB | check s | decode s | check s/MB |", "|---|---|---|---|---|"]
        lines += [f"| {r['quality']} | {r['kbytes']} | {r['check_s']} | {r['decode_s']} | {r['check_s_per_mb']} |"
                  for r in result["jpeg_check"]]
        lines.append("")
    if "detection" in result:
        lines += ["## Random damage found", "", "| side | quality | subsampling | bytes | found | worst missed: share "
                  "of pixels off > 30 |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['quality']} | {r['subsampling']} | {r['bytes']} | {r['found']}/{r['trials']} "
                  f"| {r['worst_missed_share_off']} |" for r in result["detection"]]
        lines.append("")
    if "predict" in result:
        r = result["predict"]
        lines += ["## examples/predict.py on one large JPEG", "",
                  f"{r['checkout']}: {r['side']} x {r['side']} JPEG ({r['jpeg_mbytes']} MB), model input "
                  f"{r['image_size']} px: "
                  f"peak RSS {r['peak_rss_gb']} GB, {r['wall_s']} s (exit status {r['exit_status']})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="jpeg_check,detection,predict")
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--side", type=int, default=10000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose examples/predict.py is measured")
    parser.add_argument("--label", default="this checkout", help="how the results name the --repo checkout")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks" / "results")))
    parser.add_argument("--tag", default="image_checks")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--repo" in shown:  # a path of this machine: keep it out of the results
        shown[shown.index("--repo") + 1] = "OLD"
    result: dict[str, Any] = {"environment": environment(torch.device("cpu")),
                              "command": " ".join(["python -m benchmarks.image_checks", *shown])}
    if "jpeg_check" in sections:
        result["jpeg_check"] = jpeg_check()
    if "detection" in sections:
        result["detection"] = detection(args.trials)
    if "predict" in sections:
        result["predict"] = predict(args.side, args.image_size, args.repo.resolve(), args.label)
    write_result(args.out, args.tag, result, _markdown(result))
    print(_markdown(result))
    return result


if __name__ == "__main__":
    main()
