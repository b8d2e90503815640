"""Parameters and FLOPs that RUS + UGF + UDLR add to the field's decoders (Full over Base).

The two decoders of ``examples/wrap_your_decoder.py`` (a LAVT / RMSIN-style ``SimpleDecoding``
and a CARIS / Mask2Former-style ``PixelDecoder``) are wrapped at Swin-B widths
(128, 256, 512, 1024), BERT-base text (768 wide, 20 tokens) and a 480 x 480 image, once as the
Base row (``use_fusion=False, use_refinement=False``, which adds nothing) and once as Full, in
the placements the example uses and in leaner ones. FLOPs per image follow
``benchmarks/_flops.py`` (2 FLOPs per multiply-add, math attention path); the training count is
forward + ``RiskGuidedLoss`` + backward.

For scale, the parameters of a Swin-B backbone (timm ``swin_base_patch4_window12_384``) and of
BERT-base without its pooler are counted too (random weights, nothing downloaded): the modules'
share of a whole LAVT-like model.

Run from the repository root::

    python -m benchmarks.wrapper_overhead            # writes results/wrapper_overhead.{json,md}
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks._flops import FLOP_CONVENTION, count_flops
from benchmarks._measure import environment
from benchmarks._report import write_result
from uncertainty_rrsis import RiskGuidedLoss

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (128, 256, 512, 1024)  # Swin-B, finest first
TEXT_DIM, TOKENS, SIZE, PIXEL_DIM = 768, 20, 480, 256


def _example():
    spec = importlib.util.spec_from_file_location("wrap_your_decoder", ROOT / "examples" / "wrap_your_decoder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _configs(ex) -> list[tuple[str, str, str, Any]]:
    """(decoder, variant, description, build(**row_options))."""
    simple = lambda **kw: ex.wrap_simple_decoding(WIDTHS[-1], TEXT_DIM, **kw)  # noqa: E731
    pixel = lambda **kw: ex.wrap_pixel_decoder(WIDTHS, PIXEL_DIM, TEXT_DIM, **kw)  # noqa: E731
    lean_scorer = {"scorer_kwargs": {"hidden_dim": 256}}
    return [
        ("SimpleDecoding", "example",
         "UGF on the backbone levels 256/512/1024 (one UGF per width); RUS at 1024; UDLR on F (512)", simple),
        ("SimpleDecoding", "lean",
         "RUS MLP hidden 256; one shared UGF inside the decoder (fuse_at fuse_c3, fuse_c2; width 512)",
         lambda **kw: simple(fuse_at=("fuse_c3", "fuse_c2"), fusion_dim=512,
                             **lean_scorer, **kw)),
        ("PixelDecoder", "example",
         "one shared UGF on input_convs.0-2 (width 256); RUS at 1024; UDLR on mask_features (256)", pixel),
        ("PixelDecoder", "lean", "as example, RUS MLP hidden 256",
         lambda **kw: pixel(**lean_scorer, **kw)),
    ]


def _params(model: torch.nn.Module) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    return {"decoder": count(model.decoder), "rus": count(model.scorer), "ugf": count(model.fusion),
            "udlr": count(model.refinement), "total": count(model)}


def _flops(model: torch.nn.Module, ex) -> dict[str, int]:
    features, text, pad, target = ex.random_batch(WIDTHS, TEXT_DIM, SIZE, batch=1, length=TOKENS,
                                                  generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        inference = count_flops(lambda: model(features, text, pad))["total"]
    model.train()
    criterion = RiskGuidedLoss()

    def step():
        criterion(model(features, text, pad), target, step=0).total.backward()

    training = count_flops(step)["total"]
    model.zero_grad(set_to_none=True)
    return {"inference": inference, "training": training}


def _context_params() -> dict[str, int | None]:
    out: dict[str, int | None] = {"swin_base": None, "bert_base": None}
    try:
        import timm

        out["swin_base"] = sum(p.numel() for p in timm.create_model(
            "swin_base_patch4_window12_384", pretrained=False, num_classes=0).parameters())
    except Exception:  # noqa: BLE001 - context only
        pass
    try:
        from transformers import BertConfig, BertModel

        out["bert_base"] = sum(p.numel() for p in BertModel(BertConfig(), add_pooling_layer=False).parameters())
    except Exception:  # noqa: BLE001 - context only
        pass
    return out


def run() -> dict[str, Any]:
    ex = _example()
    rows = []
    for decoder, variant, description, build in _configs(ex):
        torch.manual_seed(0)
        base = build(use_fusion=False, use_refinement=False)
        torch.manual_seed(0)
        full = build()
        base_params, full_params = _params(base), _params(full)
        assert base_params["total"] == base_params["decoder"]  # the Base row adds nothing
        base_flops, full_flops = _flops(base, ex), _flops(full, ex)
        rows.append({
            "decoder": decoder, "variant": variant, "description": description,
            "params": {"base": base_params, "full": full_params},
            "flops": {"base": base_flops, "full": full_flops},
        })
        print(f"{decoder:15s} {variant:8s} params +{full_params['total'] - base_params['total']:,} "
              f"({full_params['total'] / base_params['total']:.3f}x); FLOPs inference "
              f"{full_flops['inference'] / base_flops['inference']:.3f}x, training "
              f"{full_flops['training'] / base_flops['training']:.3f}x")
    return {
        "settings": {"widths": WIDTHS, "text_dim": TEXT_DIM, "tokens": TOKENS, "image_size": SIZE,
                     "pixel_decoder_dim": PIXEL_DIM, "batch": 1, "dtype": "float32"},
        "flop_convention": FLOP_CONVENTION,
        "environment": environment(torch.device("cpu")),
        "context_params": _context_params(),
        "rows": rows,
    }


def render_markdown(run: dict[str, Any]) -> str:
    ctx = run["context_params"]
    backbone = (ctx["swin_base"] or 0) + (ctx["bert_base"] or 0)
    env = run["environment"]
    lines = [
        "# RUS + UGF + UDLR on the field's decoders: parameters and FLOPs",
        "",
        f"Swin-B widths {tuple(run['settings']['widths'])}, text {run['settings']['text_dim']} wide x "
        f"{run['settings']['tokens']} tokens, {run['settings']['image_size']} x {run['settings']['image_size']}, "
        f"batch 1, fp32. Commit {env.get('git_commit')}, torch {env.get('torch')}.",
        f"Context: Swin-B {ctx['swin_base']:,} + BERT-base {ctx['bert_base']:,} parameters."
        if ctx["swin_base"] and ctx["bert_base"] else "",
        "",
        "| decoder | placement | decoder params | added (RUS / UGF / UDLR) | added / decoder | "
        "added / (Swin-B + BERT + decoder) | FLOPs Full/Base inference | FLOPs Full/Base training |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in run["rows"]:
        b, f = row["params"]["base"], row["params"]["full"]
        added = f["total"] - b["total"]
        whole = f"{100 * added / (backbone + b['total']):.1f} %" if backbone else "-"
        fl = row["flops"]
        lines.append(
            f"| {row['decoder']} | {row['variant']}: {row['description']} | {b['total'] / 1e6:.2f} M | "
            f"{added / 1e6:.2f} M ({f['rus'] / 1e6:.2f} / {f['ugf'] / 1e6:.2f} / {f['udlr'] / 1e6:.2f}) | "
            f"{100 * added / b['total']:.1f} % | {whole} | "
            f"{fl['full']['inference'] / fl['base']['inference']:.3f} "
            f"({fl['base']['inference'] / 1e9:.1f} -> {fl['full']['inference'] / 1e9:.1f} G) | "
            f"{fl['full']['training'] / fl['base']['training']:.3f} |"
        )
    lines += ["", run["flop_convention"], ""]
    return "\n".join(line for line in lines if line is not None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = run()
    write_result(args.out, "wrapper_overhead", result, render_markdown(result))
    print(f"wrote {args.out / 'wrapper_overhead.json'} and .md")


if __name__ == "__main__":
    main()
