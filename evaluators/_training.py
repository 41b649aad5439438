"""Training with quantization-aware training at each layer's bits, and real early stopping.

The built model already fake-quantizes every weighted layer at its own bits
(straight-through gradients, activation ranges calibrated by an EMA of the
batch max in training mode and frozen in eval mode; see ``search_space/_quant.py``),
so training it *is* QAT: no extra step is needed and the validation accuracy is
the accuracy of the quantized network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nas._errors import EvaluationError, Pruned
from nas.evaluators._base import Direction, EvalContext, Evaluator, register_evaluator
from nas.evaluators._files import WEIGHTS_FILE, weights_bytes
from nas.evaluators._settings import sha256_json

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture


class TrainSettings(BaseModel):
    """How a candidate is trained; every field is part of the evaluator's fingerprint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=10, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(default=3e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    batch_size: int = Field(default=128, ge=1)
    max_loss: float = Field(default=1e4, gt=0)


@register_evaluator
class Train(Evaluator):
    """Train the candidate, at its per-layer bits, and measure validation accuracy.

    SGD with (Nesterov) momentum or AdamW; weight decay on conv/linear weights
    only (not on BatchNorm or biases); a linear warm-up over ``warmup_epochs`` then
    a cosine decay to zero, stepped per batch; cross-entropy with label smoothing.
    After every epoch the validation accuracy goes to ``ctx.report``; when it
    answers stop, :class:`nas.Pruned` is raised with the epochs used. A NaN or
    infinite loss, or one above ``max_loss``, ends the evaluation as an
    :class:`EvaluationError` ("diverged ...").

    Deterministic on CPU for ``ctx.seed`` (initialisation, batch order). On
    CUDA: bf16 autocast, ``cudnn.benchmark``, and the data set kept on the GPU
    when it takes less than a quarter of the free memory.

    Metrics: ``val_acc`` (fraction correct on the validation split),
    ``train_loss`` (mean over the last epoch), ``train_seconds``, ``epochs``.
    File: ``weights.safetensors``, the trained state dict (calibrated activation
    ranges included), which the driver stores with the evaluation.

    Example:
        >>> from nas.evaluators import EvalContext, get_evaluator, load_dataset
        >>> from nas.search_space import get_space, sample_random
        >>> arch = sample_random(get_space("mlp-small"), 1)[0]
        >>> ctx = EvalContext(load_dataset("digits"))
        >>> get_evaluator("train", epochs=1)(arch, ctx)["epochs"]
        1.0
    """

    name = "train"
    version = 1
    description = "train at the layers' bits (QAT), SGD/AdamW, cosine + warm-up; val accuracy"
    metrics = ("val_acc", "train_loss", "train_seconds", "epochs")
    files = (WEIGHTS_FILE,)
    directions: ClassVar[dict[str, Direction]] = {
        "val_acc": "maximize",
        "train_loss": "minimize",
        "train_seconds": "minimize",
        "epochs": "minimize",
    }
    Settings = TrainSettings

    @property
    def config(self) -> TrainSettings:
        return self._settings  # type: ignore[return-value]

    def fingerprint(self, ctx: EvalContext) -> str:
        # Results differ between devices (bf16 on CUDA), so the device is part of it.
        return sha256_json({"base": super().fingerprint(ctx), "device": _device_kind(ctx)})

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        return self._evaluate_with_files(arch, ctx)[0]

    def _evaluate_with_files(
        self, arch: AnyArchitecture, ctx: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        run = _Run(arch, ctx, self.config)
        metrics = run.train()
        about = {"arch_id": arch.arch_id, "val_acc": repr(metrics["val_acc"])}
        return metrics, {WEIGHTS_FILE: weights_bytes(run.model, about)}


def _device_kind(ctx: EvalContext) -> str:
    return torch.device(ctx.device).type


class _Run:
    """One training run; small methods over shared state."""

    def __init__(self, arch: AnyArchitecture, ctx: EvalContext, cfg: TrainSettings) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.device = torch.device(ctx.device)
        self.cuda = self.device.type == "cuda"
        torch.manual_seed(ctx.seed)
        self.model = arch.build().to(self.device)
        ds, shape = ctx.dataset, arch.input_shape
        self.x_train = _place(ds.x_train.reshape(len(ds.x_train), *shape), self.device)
        self.y_train = _place(ds.y_train, self.device)
        self.x_val = _place(ds.x_val.reshape(len(ds.x_val), *shape), self.device)
        self.y_val = _place(ds.y_val, self.device)
        self.steps_per_epoch = math.ceil(len(self.y_train) / cfg.batch_size)
        self.optimizer = _optimizer(self.model, cfg)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _warmup_cosine(cfg, self.steps_per_epoch)
        )
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    def train(self) -> dict[str, float]:
        start = time.perf_counter()
        loss = val_acc = math.nan
        for epoch in range(1, self.cfg.epochs + 1):
            loss = self._epoch(epoch)
            val_acc = self._accuracy()
            metrics = self._metrics(val_acc, loss, start, epoch)
            if self.ctx.report(epoch, metrics):
                raise Pruned(epoch, metrics)
        return self._metrics(val_acc, loss, start, self.cfg.epochs)

    def _metrics(self, val_acc: float, loss: float, start: float, epoch: int) -> dict[str, float]:
        seconds = time.perf_counter() - start
        return {"val_acc": val_acc, "train_loss": loss, "train_seconds": seconds, "epochs": epoch}

    def _epoch(self, epoch: int) -> float:
        self.model.train()
        gen = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.y_train), generator=gen).to(self.x_train.device)
        total, count = 0.0, 0
        for step in range(self.steps_per_epoch):
            index = order[step * self.cfg.batch_size : (step + 1) * self.cfg.batch_size]
            x = self.x_train[index].to(self.device, non_blocking=True)
            y = self.y_train[index].to(self.device, non_blocking=True)
            loss = self._step(x, y)
            if not math.isfinite(loss) or loss > self.cfg.max_loss:
                raise EvaluationError(f"diverged: loss {loss:.4g} at epoch {epoch} step {step + 1}")
            total, count = total + loss * len(y), count + len(y)
        return total / count

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach())

    @torch.no_grad()
    def _accuracy(self) -> float:
        self.model.eval()
        correct = 0
        for start in range(0, len(self.y_val), 1024):
            x = self.x_val[start : start + 1024].to(self.device, non_blocking=True)
            y = self.y_val[start : start + 1024].to(self.device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                correct += int((self.model(x).argmax(1) == y).sum())
        return correct / len(self.y_val)


def _place(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """On the GPU when it takes under a quarter of the free memory; else pinned CPU memory."""
    if device.type != "cuda":
        return t
    free, _ = torch.cuda.mem_get_info(device)
    return t.to(device) if t.nbytes < free // 4 else t.pin_memory()


def _optimizer(model: nn.Module, cfg: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _warmup_cosine(cfg: TrainSettings, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor
