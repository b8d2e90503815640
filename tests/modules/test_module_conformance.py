"""Shared conformance tests: every public module through the same battery.

In the spirit of segmentation_models_pytorch's common tests, each entry of ``CASES`` (the four
CroBIM-U modules, the loss with a tensor ``step``, and ``RiskGuidedDecoder`` around a toy
decoder that returns ``(logits, F)`` or only logits with ``F`` captured by a forward hook) runs
through:

1. forward + backward in float32 and float64 (finite outputs, a gradient on every parameter, float64
   outputs equal to float32's);
2. ``torch.autocast("cpu", dtype=torch.bfloat16)`` (expected shapes, outputs equal to float32's within
   a stated bf16 tolerance, finite gradients);
3. channels_last inputs (and modules) give the same numbers as contiguous ones;
4. ``torch.compile(fullgraph=True)`` (Dynamo raises on any graph break): ``aot_eager`` for the
   modules (AOTAutograd also traces the backward), plain Dynamo for the wrappers; outputs and
   gradients equal eager's, no recompilation on new values; one default-inductor test on the
   smallest module (UDLR);
5. ``torch.export.export`` (non-strict and strict, and with dynamic shapes) runs and matches eager;
6. ONNX export (``dynamo=True``) with onnxruntime parity, under ``@pytest.mark.onnx``;
7. the input checks are off while compiling / exporting (``checks_enabled()``, and a spy on every
   ``_check`` during the compile / export tests) and on in eager.

Sizes are tiny (width 16, maps <= 8x8, batch 2); compiling and exporting dominate the run time
(about 1.5 min on two CPU cores, 20 s more when the inductor cache is cold), so each case is
compiled once, and the tests of items 4-7 that compile or export are marked ``slow``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from uncertainty_rrsis import (
    OnlineErrorLoss,
    ReferringUncertaintyScorer,
    RiskGuidedDecoder,
    UncertaintyDrivenRefinement,
    UncertaintyGatedFusion,
)
from uncertainty_rrsis._contracts import checks_enabled

from helpers.decoders import ToyFPNDecoder, ToyPairDecoder

B, D, L, HEADS = 2, 16, 5, 4


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


def _padding_mask() -> torch.Tensor:
    """Row 0 partly padded, row 1 with no padding (an all-padding row is tested elsewhere;
    here it would make RUS's and UGF's text path carry no gradient for that row)."""
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[0, 3:] = True
    return mask


def _wrapper_features(g: torch.Generator) -> list[torch.Tensor]:
    # finest first; the last (2x2) is the one RUS scores, UGF resizes U to 4x4 for levels 1-2
    return [torch.randn(B, D, s, s, generator=g) for s in (8, 4, 4, 2)]


def _build_wrapper(decoder_cls: type[nn.Module], **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return RiskGuidedDecoder(decoder_cls(D), D, num_heads=HEADS, refine_hidden_dim=8, **kwargs)

    return build


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    make_inputs: Callable[[torch.Generator], tuple]  # float32 inputs, may nest a list
    out_shapes: tuple[tuple[int, ...], ...]  # shapes of the tensor leaves of the output
    # indices (among the tensor leaves of the inputs) of float inputs that must get NO gradient
    no_grad_inputs: frozenset[int] = field(default_factory=frozenset)
    uses_conv: bool = False  # module itself also tested in channels_last
    # Dynamo alone ("eager") already proves fullgraph=True; "aot_eager" also traces the backward
    # (twice the compile time, so the wrappers, whose parts are covered one by one, skip it)
    compile_backend: str = "aot_eager"


CASES = [
    Case(
        "scorer",
        lambda: ReferringUncertaintyScorer(D),
        lambda g: (torch.randn(B, D, 4, 4, generator=g), torch.randn(B, L, D, generator=g), _padding_mask()),
        ((B, 1, 4, 4),),
    ),
    Case(
        "gated_fusion",
        lambda: UncertaintyGatedFusion(D, num_heads=HEADS),
        lambda g: (
            torch.randn(B, D, 8, 8, generator=g),
            torch.randn(B, L, D, generator=g),
            torch.randn(B, 1, 4, 4, generator=g),
            _padding_mask(),
        ),
        ((B, D, 8, 8),),
    ),
    Case(
        "refinement",
        lambda: UncertaintyDrivenRefinement(D, hidden_dim=8),
        lambda g: (
            torch.randn(B, D, 4, 4, generator=g),  # F coarser than the logits: resized
            torch.randn(B, 1, 8, 8, generator=g),
            torch.randn(B, 1, 2, 2, generator=g),
        ),
        ((B, 1, 8, 8),),
        uses_conv=True,
    ),
    Case(
        "online_error_loss",
        lambda: OnlineErrorLoss(blur_kernel_size=3),
        lambda g: (
            torch.randn(B, 1, 4, 4, generator=g),
            torch.randn(B, 1, 4, 4, generator=g),
            torch.randn(B, 1, 8, 8, generator=g) > 0,
        ),
        ((),),
        no_grad_inputs=frozenset({1}),  # no gradient reaches seg_logits (Eq. 4)
    ),
    Case(
        "online_error_loss_step",
        lambda: OnlineErrorLoss(warmup_steps=3),
        lambda g: (
            torch.randn(B, 1, 2, 2, generator=g),
            torch.randn(B, 1, 8, 8, generator=g),
            (torch.randn(B, 8, 8, generator=g) > 0).float(),  # (B, H, W) {0, 1} target
            torch.tensor(7),  # past the warm-up: the loss is live
        ),
        ((),),
        no_grad_inputs=frozenset({1, 2}),  # seg_logits (Eq. 4) and the float target
    ),
    Case(
        "wrapper_pair",
        _build_wrapper(ToyPairDecoder),
        lambda g: (_wrapper_features(g), torch.randn(B, L, D, generator=g), _padding_mask()),
        ((B, 1, 8, 8), (B, 1, 8, 8), (B, 1, 2, 2), (B, 1, 8, 8)),
        uses_conv=True,
        compile_backend="eager",
    ),
    Case(
        "wrapper_hook",
        _build_wrapper(ToyFPNDecoder, mask_feature_from="fpn.out"),
        lambda g: (_wrapper_features(g), torch.randn(B, L, D, generator=g), _padding_mask()),
        ((B, 1, 8, 8), (B, 1, 8, 8), (B, 1, 2, 2), (B, 1, 8, 8)),
        uses_conv=True,
        compile_backend="eager",
    ),
]
CASE_IDS = [c.name for c in CASES]
CASES_BY_NAME = {c.name: c for c in CASES}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def build(case: Case, dtype: torch.dtype = torch.float32, *, seed: int = 0) -> nn.Module:
    """The module of ``case`` with every exactly-zero parameter perturbed (zero-initialised last
    layers would otherwise hide the gradients of everything upstream)."""
    torch.manual_seed(seed)
    module = case.build().to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in module.parameters():
            if p.count_nonzero() == 0:
                p.copy_(0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return module


def inputs(case: Case, dtype: torch.dtype = torch.float32, *, seed: int = 0, grad: bool = False) -> tuple:
    g = torch.Generator().manual_seed(seed)
    args = case.make_inputs(g)

    def cast(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.to(dtype)
            if grad:
                t.requires_grad_(True)
        return t

    return tree_map(cast, args)


def tensor_leaves(tree) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


def to_channels_last(args: tuple) -> tuple:
    return tree_map(
        lambda t: t.to(memory_format=torch.channels_last) if isinstance(t, torch.Tensor) and t.dim() == 4 else t,
        args,
    )


def scalar_objective(outputs: list[torch.Tensor]) -> torch.Tensor:
    """A fixed random projection of every differentiable output to one scalar."""
    g = torch.Generator().manual_seed(1234)
    total = 0.0
    for out in outputs:
        if out.requires_grad:
            w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
            total = total + (out * w).sum()
    assert isinstance(total, torch.Tensor), "no output requires grad"
    return total


def forward_backward(fn: Callable, module: nn.Module, args: tuple):
    """Run ``fn(*args)``, back-propagate a fixed scalar, return (outputs, input grads, param grads)."""
    module.zero_grad(set_to_none=True)
    outputs = tensor_leaves(fn(*args))
    scalar_objective(outputs).backward()
    input_grads = [t.grad for t in tensor_leaves(args)]
    param_grads = {n: p.grad for n, p in module.named_parameters()}
    return [o.detach() for o in outputs], input_grads, param_grads


def assert_close_lists(actual, expected, **tol) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"leaf {i}: expected no gradient"
            continue
        torch.testing.assert_close(a, e, msg=lambda m, i=i: f"leaf {i}: {m}", **tol)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles fresh modules: start from an empty Dynamo cache (no stale recompiles)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _boom(*args, **kwargs):
    raise AssertionError("input check ran while tracing")


def forbid_input_checks(module: nn.Module) -> nn.Module:
    """Make every ``_check`` of ``module`` and its submodules raise (an instance attribute
    shadows the method), to show that compile / export never trace them (item 7)."""
    for sub in module.modules():
        if hasattr(sub, "_check"):
            sub._check = _boom
    return module


# --------------------------------------------------------------------------------------------
# 1. forward + backward in float32 / float64
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_backward(case: Case, dtype: torch.dtype) -> None:
    module = build(case, dtype)
    args = inputs(case, dtype, grad=True)
    outputs, input_grads, param_grads = forward_backward(module, module, args)

    assert [tuple(o.shape) for o in outputs] == list(case.out_shapes)
    for out in outputs:
        assert torch.isfinite(out).all()
        if case.out_shapes != ((),):  # the losses compute in float32 by design
            assert out.dtype == dtype

    for i, (leaf, grad) in enumerate(zip(tensor_leaves(args), input_grads)):
        if not leaf.requires_grad:
            continue
        if i in case.no_grad_inputs:
            assert grad is None or not grad.any(), f"input {i} must receive no gradient"
        else:
            assert grad is not None and torch.isfinite(grad).all(), f"input {i}"
            assert grad.any(), f"input {i} got an all-zero gradient"

    for name, grad in param_grads.items():
        assert grad is not None, f"parameter {name} got no gradient"
        assert grad.dtype == dtype and torch.isfinite(grad).all(), name
        assert grad.any(), f"parameter {name} got an all-zero gradient"

    if dtype == torch.float64:  # the same weights and inputs in float32 give the same numbers
        single = build(case, torch.float32)
        with torch.no_grad():
            expected = tensor_leaves(single(*inputs(case, torch.float32)))
        assert_close_lists([o.float() for o in outputs], expected, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# 2. bfloat16 autocast
# --------------------------------------------------------------------------------------------


# Tolerance of |bf16 autocast - float32| on the outputs. bf16 keeps 8 significant bits: a unit
# roundoff u = 2^-9 ~ 2e-3 (about 2.4 decimal digits). The modules run 3-5 bf16 matmuls / convs in
# a row (RUS: projections, scores, attention, MLP; UGF: q/k/v, attention, output projection; the
# wrapper: RUS, UGF, the toy decoder, UDLR), each rounding its inputs and output, so the error is a
# few u times the size of the values (<= 3.2 here): ~5 * 2e-3 * 1 = 1e-2 at most. Measured over five
# seeds: at most 3.7e-3 (UGF 3.7e-3, wrapper logits 3.5e-3, RUS 3.1e-3, UDLR 4.6e-4); the tolerance
# 1.5e-2 is 4x that. The losses compute in float32 under autocast by design: measured 0, tolerance 1e-6.
BF16_ATOL = 1.5e-2
BF16_ATOL_FLOAT32_MATH = 1e-6


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_autocast_bfloat16(case: Case) -> None:
    """Same numbers as float32 within the bf16 tolerance above, finite gradients on every parameter."""
    module = build(case)
    args = inputs(case, grad=True)
    with torch.no_grad():
        expected = tensor_leaves(module(*args))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = tensor_leaves(module(*args))
        loss = scalar_objective(outputs).float()
    assert [tuple(o.shape) for o in outputs] == list(case.out_shapes)
    atol = BF16_ATOL_FLOAT32_MATH if case.out_shapes == ((),) else BF16_ATOL
    for i, (out, want) in enumerate(zip(outputs, expected)):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), want, rtol=0, atol=atol, msg=lambda m, i=i: f"output {i}: {m}")
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# --------------------------------------------------------------------------------------------
# 3. channels_last
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_channels_last_matches_contiguous(case: Case) -> None:
    module = build(case).eval()
    args = inputs(case)
    with torch.no_grad():
        expected = tensor_leaves(module(*args))
        got = tensor_leaves(module(*to_channels_last(args)))
        assert_close_lists(got, expected, rtol=1e-5, atol=1e-5)
        if case.uses_conv:  # the conv weights in channels_last too
            module = module.to(memory_format=torch.channels_last)
            got = tensor_leaves(module(*to_channels_last(args)))
            assert_close_lists(got, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# 4. torch.compile(fullgraph=True)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_compile_fullgraph(case: Case) -> None:
    """fullgraph=True makes Dynamo raise on any graph break; ``aot_eager`` also traces the backward
    through AOTAutograd. Outputs and gradients equal eager's, the input checks are not traced,
    and new values (same shapes) do not recompile."""
    module = build(case)
    eager = build(case)  # same weights, checks left on
    args = inputs(case, grad=True)
    expected = forward_backward(module, module, args)
    for t in tensor_leaves(args):
        t.grad = None

    compiled = torch.compile(forbid_input_checks(module), backend=case.compile_backend, fullgraph=True)
    got = forward_backward(compiled, module, args)
    assert_close_lists(got[0], expected[0], rtol=1e-5, atol=1e-6)
    assert_close_lists(got[1], expected[1], rtol=1e-5, atol=1e-6)
    assert_close_lists(list(got[2].values()), list(expected[2].values()), rtol=1e-5, atol=1e-6)

    with torch._dynamo.config.patch(error_on_recompile=True):  # same grad mode as above
        new_args = inputs(case, seed=1, grad=True)
        assert_close_lists(
            tensor_leaves(compiled(*new_args)), tensor_leaves(eager(*new_args)), rtol=1e-5, atol=1e-6
        )


@pytest.mark.slow
def test_compile_inductor_refinement() -> None:
    """The default backend once, on the smallest module (about 20 s of C++ compile on 2 cores)."""
    case = CASES_BY_NAME["refinement"]
    module = build(case)
    args = inputs(case, grad=True)
    expected = forward_backward(module, module, args)
    for t in tensor_leaves(args):
        t.grad = None
    got = forward_backward(torch.compile(forbid_input_checks(module), fullgraph=True), module, args)
    assert_close_lists(got[0], expected[0], rtol=1e-4, atol=1e-5)
    assert_close_lists(got[1], expected[1], rtol=1e-4, atol=1e-5)
    assert_close_lists(list(got[2].values()), list(expected[2].values()), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# 5. torch.export
# --------------------------------------------------------------------------------------------


# strict=True (TorchDynamo) is the slow one; the wrapper is covered by its hook variant
_EXPORT_PARAMS = [
    pytest.param(c, strict, id=f"{c.name}-{'strict' if strict else 'nonstrict'}")
    for c in CASES
    for strict in (False, True)
    if not (strict and c.name == "wrapper_pair")
]


# The hook path appends to / clears the wrapper's `_captured` list while tracing; strict export
# warns about that Python side effect but handles it (the numbers below match eager).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:While compiling, we found certain side effects:UserWarning")
@pytest.mark.parametrize(("case", "strict"), _EXPORT_PARAMS)
def test_export_matches_eager(case: Case, strict: bool) -> None:
    eager = build(case).eval()
    module = forbid_input_checks(build(case).eval())
    program = torch.export.export(module, inputs(case), strict=strict)
    for seed in (0, 1):
        new_args = inputs(case, seed=seed)
        with torch.no_grad():
            assert_close_lists(
                tensor_leaves(program.module()(*new_args)), tensor_leaves(eager(*new_args)), rtol=1e-5, atol=1e-6
            )


# Batch + 1, and every spatial size of the cases (2, 4 or 8, on dims >= 1) + 1: widths (16),
# text lengths (5) and singleton channels stay, no map becomes 0/1-sized, and maps whose sizes
# differed still differ while equal ones stay equal (resize_logits' same-size shortcut is a
# shape branch, so the exported program guards on it).
def _grown_inputs(case: Case) -> tuple:
    g = torch.Generator().manual_seed(5)

    def grow(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        shape = [t.shape[0] + 1] + [s + 1 if s in (2, 4, 8) else s for s in t.shape[1:]]
        if t.dtype == torch.bool and t.dim() == 2:  # text padding mask: row 0 partly padded
            out = torch.zeros(shape, dtype=torch.bool)
            out[0, 3:] = True
            return out
        out = torch.randn(shape, generator=g)
        return out > 0 if t.dtype == torch.bool else out.to(t.dtype)

    return tree_map(grow, inputs(case))


_DYNAMIC_PARAMS = [pytest.param(c, id=c.name) for c in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("case", _DYNAMIC_PARAMS)
def test_export_dynamic_shapes(case: Case) -> None:
    """Batch and spatial sizes exported as ``Dim.AUTO`` and run at other sizes."""
    from torch.export import Dim

    module = build(case).eval()
    args = inputs(case)
    dynamic = tree_map(
        lambda t: {i: Dim.AUTO for i in range(t.dim())} if isinstance(t, torch.Tensor) and t.dim() > 0 else None,
        args,
    )
    program = torch.export.export(module, args, dynamic_shapes=dynamic)
    new_args = _grown_inputs(case)
    with torch.no_grad():
        assert_close_lists(
            tensor_leaves(program.module()(*new_args)), tensor_leaves(module(*new_args)), rtol=1e-5, atol=1e-6
        )


# --------------------------------------------------------------------------------------------
# 6. ONNX export + onnxruntime parity
# --------------------------------------------------------------------------------------------


def _onnx_run(module: nn.Module, args: tuple, tmp_path: Path) -> list[torch.Tensor]:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    program = torch.onnx.export(module, args, dynamo=True, verbose=False)
    path = tmp_path / "model.onnx"
    program.save(str(path))
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    leaves = tensor_leaves(args)
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(leaves), names
    outs = session.run(None, {n: t.numpy() for n, t in zip(names, leaves)})
    return [torch.from_numpy(o) for o in outs]


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_onnx_export_onnxruntime_parity(case: Case, tmp_path: Path) -> None:
    module = build(case).eval()
    args = inputs(case)
    got = _onnx_run(module, args, tmp_path)
    with torch.no_grad():
        expected = tensor_leaves(module(*args))
    assert_close_lists(got, expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# 7. input checks are off under compile / export, on in eager
# --------------------------------------------------------------------------------------------


class _ChecksProbe(nn.Module):
    """Returns ``x * checks_enabled()`` so the traced value of the flag shows in the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(checks_enabled())


def test_checks_enabled_in_eager() -> None:
    assert checks_enabled()
    assert torch.equal(_ChecksProbe()(torch.ones(2)), torch.ones(2))


@pytest.mark.slow
def test_checks_disabled_under_compile() -> None:
    out = torch.compile(_ChecksProbe(), backend="eager", fullgraph=True)(torch.ones(2))
    assert torch.equal(out, torch.zeros(2))
    assert checks_enabled()  # and back on afterwards


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True], ids=["nonstrict", "strict"])
def test_checks_disabled_under_export(strict: bool) -> None:
    program = torch.export.export(_ChecksProbe(), (torch.ones(2),), strict=strict)
    assert torch.equal(program.module()(torch.ones(2)), torch.zeros(2))
    assert checks_enabled()


@pytest.mark.slow
@pytest.mark.onnx
def test_checks_disabled_under_onnx_export(tmp_path: Path) -> None:
    (out,) = _onnx_run(_ChecksProbe().eval(), (torch.ones(2),), tmp_path)
    assert torch.equal(out, torch.zeros(2))


@pytest.mark.parametrize("name", ["scorer", "gated_fusion", "refinement", "online_error_loss", "wrapper_hook"])
def test_input_checks_run_in_eager(name: str) -> None:
    """The spy used by the compile / export tests above does fire in eager, so their passing
    proves the checks are skipped while tracing."""
    case = CASES_BY_NAME[name]
    module = forbid_input_checks(build(case))
    with pytest.raises(AssertionError, match="input check ran"):
        module(*inputs(case))
