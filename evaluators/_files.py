"""The files a candidate leaves: its trained weights (safetensors) and its ONNX model.

Training hands its weights out as bytes (:func:`weights_bytes`), so that any
worker — a local process, a Ray actor on another machine — can send them back
to the driver, which stores them with the evaluation. :func:`restore` builds an
architecture and loads such weights back; :func:`onnx_bytes` exports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from nas._errors import EvaluationError
from nas.evaluators._export import Precision, export_onnx

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

#: The name of the trained weights among an evaluation's files (and in an export).
WEIGHTS_FILE = "weights.safetensors"


def weights_bytes(model: nn.Module, metadata: Mapping[str, str] | None = None) -> bytes:
    """``model``'s state dict (weights and the quantizers' calibrated ranges) as safetensors.

    Example:
        >>> from nas.search_space import get_space, sample_random
        >>> model = sample_random(get_space("mlp-small"), 1)[0].build()
        >>> weights_bytes(model)[:1] != b""
        True
    """
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata=dict(metadata or {}))


def restore(arch: AnyArchitecture, weights: bytes | None = None, seed: int = 0) -> nn.Module:
    """``arch`` built in eval mode: with ``weights`` (from :func:`weights_bytes`) loaded
    strictly, or, without them, initialised from ``seed`` (as the evaluators build it).

    Raises:
        EvaluationError: the weights are not this architecture's.
    """
    from safetensors.torch import load

    torch.manual_seed(seed)
    model = arch.build()
    if weights is not None:
        try:
            model.load_state_dict(load(weights), strict=True)
        except (RuntimeError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0]
            raise EvaluationError(
                f"weights do not fit architecture {arch.arch_id}: {reason}"
            ) from None
    return model.eval()


def onnx_bytes(
    arch: AnyArchitecture,
    weights: bytes | None = None,
    *,
    seed: int = 0,
    batch_size: int = 1,
    precision: Precision = "qdq",
) -> bytes:
    """The ONNX model of ``arch`` (QDQ for quantized layers), with ``weights`` if given.

    Raises:
        EvaluationError: the architecture has no ONNX export (a NAS-Bench-201 cell).
    """
    from nas.search_space import Architecture

    if not isinstance(arch, Architecture):
        raise EvaluationError("NAS-Bench-201 cells have no ONNX export; use a layer space")
    model = restore(arch, weights, seed)
    return export_onnx(
        model, arch.input_shape, batch_size=batch_size, precision=precision
    ).serialize()
