"""The training evaluator: QAT at the layers' bits, schedule, reporting, divergence."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from nas import ConfigError, EvaluationError, Pruned
from nas.evaluators import EvalContext, get_evaluator, load_dataset
from nas.evaluators._training import TrainSettings, _warmup_cosine
from nas.search_space import Architecture, LayerSpec, get_space, sample_random


def _all_bits(bits: int) -> Architecture:
    conv = LayerSpec(type="conv3x3", width=16, wbits=bits, abits=bits)
    down = LayerSpec(type="conv3x3", width=32, stride=2, wbits=bits, abits=bits)
    return Architecture(
        input_shape=(1, 8, 8),
        num_classes=10,
        stages=((conv, conv), (down,)),
        head_wbits=bits,
        head_abits=bits,
    )


@pytest.fixture(scope="module")
def digits() -> EvalContext:
    return EvalContext(load_dataset("digits"))


def test_qat_at_4_bits_trains_without_diverging(digits: EvalContext) -> None:
    losses: list[float] = []

    def record(step: int, metrics: Mapping[str, float]) -> bool:
        losses.append(metrics["train_loss"])
        return False

    ctx = EvalContext(digits.dataset, reporter=record)
    result = get_evaluator("train", epochs=6, lr=1e-2)(_all_bits(4), ctx)
    assert result["val_acc"] > 0.85
    assert losses[-1] < losses[0] / 2
    assert result["epochs"] == 6 and len(losses) == 6


def test_bits_change_what_is_learned(digits: EvalContext) -> None:
    train = get_evaluator("train", epochs=2)
    assert train(_all_bits(2), digits)["train_loss"] != train(_all_bits(32), digits)["train_loss"]


def test_training_is_deterministic_on_cpu(digits: EvalContext) -> None:
    arch = sample_random(get_space("cnn-small"), 1, seed=4)[0]
    train = get_evaluator("train", epochs=2, optimizer="sgd", lr=0.05, label_smoothing=0.1)
    first, second = train(arch, digits), train(arch, digits)
    for key in ("val_acc", "train_loss", "epochs"):
        assert first[key] == second[key]
    other_seed = train(arch, EvalContext(digits.dataset, seed=1))
    assert other_seed["train_loss"] != first["train_loss"]


def test_a_diverging_loss_is_an_evaluation_error(digits: EvalContext) -> None:
    train = get_evaluator("train", epochs=3, optimizer="sgd", lr=1e9, momentum=0.9)
    with pytest.raises(EvaluationError, match=r"^diverged: loss .* at epoch \d+ step \d+$"):
        train(_all_bits(32), digits)


def test_the_reporter_stops_training(digits: EvalContext) -> None:
    seen: list[tuple[int, float]] = []

    def stop_after_two(step: int, metrics: Mapping[str, float]) -> bool:
        seen.append((step, metrics["val_acc"]))
        return step == 2

    ctx = EvalContext(digits.dataset, reporter=stop_after_two)
    with pytest.raises(Pruned) as info:
        get_evaluator("train", epochs=5)(_all_bits(8), ctx)
    assert info.value.step == 2 and info.value.metrics["epochs"] == 2
    assert [s for s, _ in seen] == [1, 2]
    assert 0.0 <= seen[-1][1] <= 1.0


def test_sequences_train_too() -> None:
    ctx = EvalContext(load_dataset("synthetic", input_shape=(2, 24), n_train=256, n_val=64))
    space = get_space("cnn1d-small").for_data((2, 24), 10)
    result = get_evaluator("train", epochs=2)(sample_random(space, 1, seed=0)[0], ctx)
    assert 0.0 <= result["val_acc"] <= 1.0


def test_warmup_then_cosine() -> None:
    factor = _warmup_cosine(TrainSettings(epochs=4, warmup_epochs=1), steps_per_epoch=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(25) == pytest.approx(0.5)
    assert factor(39) == pytest.approx(
        0.5 * (1 + __import__("math").cos(__import__("math").pi * 29 / 30))
    )
    no_warmup = _warmup_cosine(TrainSettings(epochs=2, warmup_epochs=0), steps_per_epoch=5)
    assert no_warmup(0) == pytest.approx(1.0)


def test_every_setting_is_in_the_fingerprint(digits: EvalContext) -> None:
    base = get_evaluator("train").fingerprint(digits)
    for key, value in {
        "epochs": 3,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.5,
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,
        "label_smoothing": 0.1,
        "batch_size": 64,
        "max_loss": 10.0,
    }.items():
        assert get_evaluator("train", **{key: value}).fingerprint(digits) != base, key


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"lr": -1}, "lr"),
        ({"nesterov": True}, "nesterov"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_evaluator("train", **settings)
    assert field in str(info.value)


@pytest.mark.gpu
def test_training_on_cuda_uses_bf16_and_matches_cpu_roughly(digits: EvalContext) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    arch = _all_bits(8)
    train = get_evaluator("train", epochs=4, lr=1e-2)
    on_gpu = train(arch, EvalContext(digits.dataset, device="cuda"))
    on_cpu = train(arch, digits)
    assert on_gpu["val_acc"] > 0.8
    assert abs(on_gpu["val_acc"] - on_cpu["val_acc"]) < 0.1
    assert train.fingerprint(EvalContext(digits.dataset, device="cuda")) != train.fingerprint(
        digits
    )
