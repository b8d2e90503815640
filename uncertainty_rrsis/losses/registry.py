"""The registry of segmentation losses: the name given to ``--seg-loss`` -> a factory of ``L_seg``.

A loss registered once is accepted by the training settings, the command line and config files::

    from uncertainty_rrsis.losses import register_loss

    class FocalLoss(nn.Module):            # called as loss(logits (B, 1, h, w), target (B, H, W))
        ...

    register_loss("focal", FocalLoss)      # then: --seg-loss focal

Built in: ``bce_dice`` (:class:`~uncertainty_rrsis.losses.BCEDiceLoss`, sigmoid BCE + Dice, the
default).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .segmentation import BCEDiceLoss

__all__ = ["register_loss", "get_loss", "list_losses"]

_LOSSES: dict[str, Callable[[], nn.Module]] = {"bce_dice": BCEDiceLoss}


def list_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(_LOSSES)


def register_loss(name: str, factory: Callable[[], nn.Module], *, overwrite: bool = False) -> None:
    """Make ``factory`` (a class or function returning the loss module) available as ``name``.

    The module is called as ``loss(logits, target)`` with logits (B, 1, h, w) of any resolution
    and the target mask (B, H, W) bool, and returns a scalar.

    Raises:
        ValueError: ``name`` is taken (without ``overwrite``) or is not a lower-case word.
        TypeError: ``factory`` is not callable.
    """
    if not name or name != name.strip().lower() or " " in name:
        raise ValueError(f"a loss name must be a non-empty lower-case word without spaces; got {name!r}")
    if not callable(factory):
        raise TypeError(f"register_loss({name!r}): expected a class or function that returns the loss; got {factory!r}")
    if name in _LOSSES and not overwrite and _LOSSES[name] is not factory:
        raise ValueError(f"loss {name!r} is already registered; pass overwrite=True to replace it")
    _LOSSES[name] = factory


def get_loss(name: str) -> Callable[[], nn.Module]:
    """The factory registered as ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the known names.
    """
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; known losses: {', '.join(list_losses())} "
            "(add one with uncertainty_rrsis.losses.register_loss)"
        ) from None
