"""Parameters and FLOPs that RUS + UGF + UDLR add to the field's published decoders (Full over Base).

Each of the six decoders of ``examples/field_decoders.py`` (look-alikes with the real classes'
layers, names and parameter shapes) is built at Swin-B widths (128, 256, 512, 1024) with BERT-base
text (768 wide, 20 tokens) on a 480 x 480 image, and wrapped with its named recipe
(``RiskGuidedDecoder.from_recipe``) twice: as the Base row (``use_fusion=False,
use_refinement=False``, which adds nothing) and as Full. One more row puts UGF on the backbone
levels of LAVT's decoder instead (``fused_levels=(1, 2, 3)``, one UGF per width) for comparison.
FLOPs per image follow ``benchmarks/_flops.py`` (2 FLOPs per multiply-add, math attention path);
the training count is forward + ``RiskGuidedLoss`` + backward.

For scale, the parameters of a Swin-B backbone (timm ``swin_base_patch4_window12_384``) and of
BERT-base without its pooler are counted too (random weights, nothing downloaded): the modules'
share of a whole model.

Run from the repository root::

    python -m benchmarks.wrapper_overhead            # writes results/wrapper_overhead.{json,md}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from benchmarks._examples import field_decoders
from benchmarks._flops import FLOP_CONVENTION, count_flops
from benchmarks._measure import environment
from benchmarks._report import write_result
from uncertainty_rrsis import RiskGuidedDecoder, RiskGuidedLoss
from uncertainty_rrsis.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (128, 256, 512, 1024)  # Swin-B, finest first
TEXT_DIM, TOKENS, SIZE = 768, 20, 480


def _configs() -> list[tuple[str, str, dict[str, Any]]]:
    """(recipe name, variant, extra wrapper arguments)."""
    rows = [(name, "recipe", {}) for name in field_decoders().DECODERS]
    rows.insert(1, ("lavt", "backbone levels", {"fused_levels": (1, 2, 3)}))
    return rows


def _build(name: str, options: dict[str, Any], **row) -> RiskGuidedDecoder:
    torch.manual_seed(0)
    decoder = field_decoders().build_decoder(name, WIDTHS, TEXT_DIM)
    return RiskGuidedDecoder.from_recipe(name, decoder, WIDTHS, text_dim=TEXT_DIM, **options, **row)


def _placement(model: RiskGuidedDecoder) -> str:
    if model.fuse_at:
        where = f"UGF at {', '.join(model.fuse_at)} (width {model.fusion_dim})"
    else:
        where = f"UGF on backbone levels {model.fused_levels} (widths {[WIDTHS[i] for i in model.fused_levels]})"
    return f"{where}; F from {model.mask_feature_from} ({model.mask_feature_dim})"


def _params(model: torch.nn.Module) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    return {"decoder": count(model.decoder), "rus": count(model.scorer), "ugf": count(model.fusion),
            "udlr": count(model.refinement), "total": count(model)}


def _flops(model: torch.nn.Module) -> dict[str, int]:
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(1, c, SIZE // s, SIZE // s, generator=g) for c, s in zip(WIDTHS, (4, 8, 16, 32))]
    text = torch.randn(1, TOKENS, TEXT_DIM, generator=g)
    pad = torch.arange(TOKENS)[None] >= 12  # 12 real tokens, True = padding
    target = torch.rand(1, SIZE, SIZE, generator=g) > 0.8
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
    rows = []
    for name, variant, options in _configs():
        base = _build(name, options, use_fusion=False, use_refinement=False)
        full = _build(name, options)
        base_params, full_params = _params(base), _params(full)
        assert base_params["total"] == base_params["decoder"]  # the Base row adds nothing
        base_flops, full_flops = _flops(base), _flops(full)
        rows.append({
            "decoder": name, "class": get_recipe(name).decoder, "variant": variant,
            "description": _placement(full),
            "params": {"base": base_params, "full": full_params},
            "flops": {"base": base_flops, "full": full_flops},
        })
        print(f"{name:13s} {variant:16s} params +{full_params['total'] - base_params['total']:,} "
              f"({full_params['total'] / base_params['total']:.3f}x); FLOPs inference "
              f"{full_flops['inference'] / base_flops['inference']:.3f}x, training "
              f"{full_flops['training'] / base_flops['training']:.3f}x")
    return {
        "settings": {"widths": WIDTHS, "text_dim": TEXT_DIM, "tokens": TOKENS, "image_size": SIZE,
                     "batch": 1, "dtype": "float32"},
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
        "| recipe | placement | decoder params | added (RUS / UGF / UDLR) | added / decoder | "
        "added / (Swin-B + BERT + decoder) | added GFLOPs | FLOPs Full/Base inference | FLOPs Full/Base training |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in run["rows"]:
        b, f = row["params"]["base"], row["params"]["full"]
        added = f["total"] - b["total"]
        whole = f"{100 * added / (backbone + b['total']):.1f} %" if backbone else "-"
        fl = row["flops"]
        lines.append(
            f"| `{row['decoder']}` | {'' if row['variant'] == 'recipe' else row['variant'] + ': '}"
            f"{row['description']} | {b['total'] / 1e6:.2f} M | "
            f"{added / 1e6:.2f} M ({f['rus'] / 1e6:.2f} / {f['ugf'] / 1e6:.2f} / {f['udlr'] / 1e6:.2f}) | "
            f"{100 * added / b['total']:.1f} % | {whole} | "
            f"{(fl['full']['inference'] - fl['base']['inference']) / 1e9:.1f} | "
            f"{fl['full']['inference'] / fl['base']['inference']:.3f} "
            f"({fl['base']['inference'] / 1e9:.1f} -> {fl['full']['inference'] / 1e9:.1f} G) | "
            f"{fl['full']['training'] / fl['base']['training']:.3f} |"
        )
    lines += ["", "Decoder parameters: the look-alikes of `examples/field_decoders.py`, which have the real classes' "
              "layers and parameter shapes. Added GFLOPs: Full minus Base, inference, per image.", "",
              run["flop_convention"], ""]
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
