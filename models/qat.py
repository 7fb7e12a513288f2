"""Quantisation-aware fine-tuning: train through the int8 rounding the export will apply.

The shipped model is int8 with weights quantised per output channel, symmetrically
(``scale = max|w| / 127`` per row of an ``nn.Linear`` weight, ONNX Runtime's ``QInt8`` per-channel
weights). Weight changes smaller than half a quantisation step are rounded away at export. That
bites when fine-tuning continues from a model rebuilt from an int8 file (``models/recover.py``):
every weight starts exactly on the int8 grid, and small updates round back to where they started.
Measured (run n1, session 10): what continued training taught the fp32 network on news (sentiment
macro-F1 0.738 on the news dev split) fell to 0.695 after export; restoring the fp32 MatMul weights
alone recovered 0.725.

:func:`fake_quantize_linear_weights` makes every ``nn.Linear`` of the network compute with its
weight rounded to that grid (a straight-through estimator: the forward pass sees the rounded weight,
the gradient updates the latent fp32 weight as if no rounding happened), so training optimises the
model that will ship. :func:`~finpulse.models.network.save_checkpoint` saves the latent weights
under their plain names; export rounds them to the same grid.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class Int8PerChannel(nn.Module):
    """Rounds a ``[out, in]`` weight to symmetric int8 per output row (straight-through gradient)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = w.detach().abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
        q = torch.clamp(torch.round(w / scale), -127, 127) * scale
        return w + (q - w).detach()


def fake_quantize_linear_weights(model: nn.Module) -> int:
    """Register :class:`Int8PerChannel` on the weight of every ``nn.Linear`` in ``model``.

    :returns: how many layers were wrapped.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and not parametrize.is_parametrized(module, "weight"):
            parametrize.register_parametrization(module, "weight", Int8PerChannel())
            n += 1
    return n
