"""Latency: repeatability, the predictor's accuracy, the cost of a profile, int8 vs float.

    python benchmarks/latency.py                      # cnn-small at the digits' 1x8x8
    python benchmarks/latency.py --space cnn-mobile --input 3,32,32

Writes benchmarks/results/latency_<space>.{json,md}. Four measurements:

1. Repeatability: 5 architectures, each profiled ``--repeats`` times with the
   full protocol (3 fresh processes each time); spread = max/min - 1 of the
   reported latency (p10, median across processes).
2. Predictor: calibrated on ``--calibrate`` architectures (their kernels, and the
   correction fitted on them measured with the full protocol), then tested on
   ``--held-out`` other architectures measured with the full protocol: share
   within +-10 %, Spearman rho, mean |error|; once with missing kernels measured
   on first use, once with the regression fallback only (no new measurements).
3. Cost: wall time of export + profile of one small CNN with the default
   protocol's single process (``processes=1``), and with the full protocol.
4. Precision: for the same architectures with every layer at 8 bits (weights
   and activations), the share of 8-bit layers ORT ran as int8 kernels, and
   int8/float latency ratios; the same for 4 bits (which ORT's CPU provider runs
   as DequantizeLinear + float kernels).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from nas.evaluators._latency import (
    LatencySettings,
    export_arch,
    profile_onnx,
    run_protocol,
    summarize,
)
from nas.evaluators._predictor import LatencyPredictor
from nas.search_space import Architecture, get_space, sample_random

RESULTS = Path(__file__).parent / "results"


def with_bits(arch: Architecture, bits: int) -> Architecture:
    """``arch`` with every weighted layer (and the head) at ``bits`` for weights and inputs."""
    from nas.search_space import layer_type

    def spec(s):
        return (
            s.model_copy(update={"wbits": bits, "abits": bits})
            if layer_type(s.type).has_weights
            else s
        )

    return Architecture(
        input_shape=arch.input_shape,
        num_classes=arch.num_classes,
        stem=spec(arch.stem) if arch.stem else None,
        stages=tuple(tuple(spec(s) for s in stage) for stage in arch.stages),
        head_wbits=bits,
        head_abits=bits,
    )


def measure_many(archs: list[Architecture], settings: LatencySettings) -> list[float]:
    """p10 latency (median over the protocol's processes) of each architecture."""
    models = [export_arch(a, settings).serialize() for a in archs]
    return [summarize(r, settings.runs, 0.0).p10_ms for r in run_protocol(models, settings)]


def repeatability(archs: list[Architecture], repeats: int) -> list[dict[str, object]]:
    settings = LatencySettings()
    rows = []
    for arch in archs:
        values = []
        for _ in range(repeats):
            exported = export_arch(arch, settings)
            values.append(profile_onnx(exported.serialize(), settings).p10_ms)
        rows.append(
            {
                "arch": arch.summary(),
                "ms": values,
                "spread": max(values) / min(values) - 1,
            }
        )
    return rows


def predictor_accuracy(train: list[Architecture], test: list[Architecture]) -> dict[str, object]:
    settings = LatencySettings()
    t = time.perf_counter()
    measured_train = measure_many(train, settings)
    measured_test = measure_many(test, settings)
    measure_seconds = time.perf_counter() - t
    predictor = LatencyPredictor(settings, {})
    t = time.perf_counter()
    predictor.fill(train)
    fit = predictor.fit(train, measured_train)
    calibrate_seconds = time.perf_counter() - t
    out: dict[str, object] = {
        "calibrate_models": len(train),
        "calibrate_kernels": len(predictor.table),
        "calibrate_seconds_kernels_and_fit": calibrate_seconds,
        "fit": fit,
        "correction": predictor.correction,
        "full_protocol_seconds_for_all_models": measure_seconds,
    }
    for label, measure_missing in (("fallback_only", False), ("kernels_measured", True)):
        predictor.measure_missing = measure_missing
        t = time.perf_counter()
        new = predictor.fill(test) if measure_missing else 0
        fill_seconds = time.perf_counter() - t
        t = time.perf_counter()
        pred = np.array([predictor.predict(a) for a in test])
        per_arch_ms = (time.perf_counter() - t) / len(test) * 1000
        y = np.array(measured_test)
        err = np.abs(pred / y - 1)
        out[label] = {
            "held_out": len(test),
            "new_kernels_measured": new,
            "kernel_measure_seconds": fill_seconds,
            "within_10pct": float((err <= 0.10).mean()),
            "spearman": float(spearmanr(pred, y).statistic),
            "mean_abs_rel_error": float(err.mean()),
            "max_abs_rel_error": float(err.max()),
            "predict_ms_per_arch": per_arch_ms,
        }
    return out


def cost(arch: Architecture) -> dict[str, float]:
    """Wall time of export + profile, single process and full protocol, in fresh interpreters."""
    code = (
        "import sys, time; t = time.perf_counter(); "
        "from nas.search_space import Architecture; "
        "from nas.evaluators._latency import LatencySettings, export_arch, profile_onnx; "
        "arch = Architecture.from_json(sys.argv[1]); "
        "s = LatencySettings(processes=int(sys.argv[2])); "
        "t1 = time.perf_counter(); e = export_arch(arch, s); t2 = time.perf_counter(); "
        "profile_onnx(e.serialize(), s); t3 = time.perf_counter(); "
        "print(t1 - t, t2 - t1, t3 - t2)"
    )
    out = {}
    for processes in (1, 3):
        runs = []
        for _ in range(3):
            line = subprocess.run(
                [sys.executable, "-c", code, arch.to_json(), str(processes)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            runs.append([float(v) for v in line])
        med = [statistics.median(r[i] for r in runs) for i in range(3)]
        out[f"processes_{processes}"] = {
            "import_s": med[0],
            "export_s": med[1],
            "profile_s": med[2],
            "export_plus_profile_s": med[1] + med[2],
        }
    return out


def precision(archs: list[Architecture]) -> dict[str, object]:
    rows = []
    for bits in (8, 4):
        for arch in archs:
            quant = with_bits(arch, bits)
            exported = export_arch(quant, LatencySettings())
            q = profile_onnx(exported.serialize(), LatencySettings(), exported.layers)
            f_settings = LatencySettings(precision="float")
            f = profile_onnx(export_arch(quant, f_settings).serialize(), f_settings)
            paths = q.kernel_paths
            rows.append(
                {
                    "bits": bits,
                    "arch": quant.summary(),
                    "layers": len(paths),
                    "int8_layers": sum(p["path"] == "int8" for p in paths),
                    "kernels": sorted({p["kernel"] for p in paths}),
                    "quantized_ms": q.p10_ms,
                    "float_ms": f.p10_ms,
                    "ratio": q.p10_ms / f.p10_ms,
                }
            )
    summary = {}
    for bits in (8, 4):
        sel = [r for r in rows if r["bits"] == bits]
        summary[f"w{bits}a{bits}"] = {
            "int8_share": sum(r["int8_layers"] for r in sel) / sum(r["layers"] for r in sel),
            "ratio_median": statistics.median(r["ratio"] for r in sel),
            "ratio_min": min(r["ratio"] for r in sel),
            "ratio_max": max(r["ratio"] for r in sel),
        }
    return {"rows": rows, "summary": summary}


def mixed_int8_share(archs: list[Architecture]) -> dict[str, float]:
    """In sampled mixed-precision architectures: 8-bit layers ORT really ran as int8."""
    settings = LatencySettings()
    total = int8 = 0
    for arch in archs:
        exported = export_arch(arch, settings)
        from nas.evaluators._latency import kernel_paths

        for p in kernel_paths(exported.serialize(), settings, exported.layers):
            if p["wbits"] == 8 and p["abits"] == 8:
                total += 1
                int8 += p["path"] == "int8"
    return {"eight_bit_layers": total, "ran_as_int8": int8, "share": int8 / max(total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="cnn-small")
    parser.add_argument("--input", default="1,8,8", help="input shape, e.g. 3,32,32")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibrate", type=int, default=20)
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite the .md from the stored .json"
    )
    args = parser.parse_args()
    if args.markdown_only:
        stem = RESULTS / f"latency_{args.space}"
        report = json.loads(stem.with_suffix(".json").read_text())
        stem.with_suffix(".md").write_text(markdown(report))
        return
    shape = tuple(int(v) for v in args.input.split(","))
    space = get_space(args.space).for_data(shape, args.classes)
    archs = sample_random(space, 5 + args.calibrate + args.held_out, seed=args.seed)
    five, train, test = archs[:5], archs[5 : 5 + args.calibrate], archs[5 + args.calibrate :]

    started = time.perf_counter()
    report: dict[str, object] = {"space": args.space, "input": shape}
    from nas.evaluators._latency import LatencySettings as _S

    report["hardware"] = _S().hardware().as_dict()
    print("cost ...", flush=True)
    report["cost"] = cost(five[0])
    print("repeatability ...", flush=True)
    report["repeatability"] = repeatability(five, args.repeats)
    print("precision ...", flush=True)
    report["precision"] = precision(five)
    report["mixed_int8_share"] = mixed_int8_share(train + test)
    print("predictor ...", flush=True)
    report["predictor"] = predictor_accuracy(train, test)
    report["seconds"] = time.perf_counter() - started

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"latency_{args.space}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:  # type: ignore[type-arg]
    hw = r["hardware"]
    lines = [
        f"# Latency benchmark: {r['space']} at input {tuple(r['input'])}",
        "",
        f"Machine: {hw['cpu']}, {hw['cores']} cores, ONNX Runtime {hw['ort_version']}, "
        f"{hw['provider']} provider, {hw['threads']} thread, batch {hw['batch_size']}. "
        f"Whole run: {r['seconds'] / 60:.1f} min. "
        f"`python benchmarks/latency.py --space {r['space']} --input "
        f"{','.join(str(d) for d in r['input'])}`",
        "",
        "## Repeatability (full protocol: 3 fresh processes, p10, median across processes)",
        "",
        "| architecture | runs (ms) | max/min - 1 |",
        "|---|---|---|",
    ]
    for row in r["repeatability"]:
        ms = ", ".join(f"{v:.4f}" for v in row["ms"])
        lines.append(f"| `{row['arch']}` | {ms} | {row['spread'] * 100:.2f}% |")
    worst = max(row["spread"] for row in r["repeatability"])
    lines += ["", f"Worst spread: **{worst * 100:.2f}%** (target: within 5%).", ""]
    p = r["predictor"]
    lines += [
        "## Predictor",
        "",
        f"Calibrated on {p['calibrate_models']} architectures ({p['calibrate_kernels']} kernels "
        f"measured once each; {p['calibrate_seconds_kernels_and_fit']:.1f} s for kernels and fit). "
        f"Correction a, b, c = {', '.join(f'{c:.4g}' for c in p['correction'])}.",
        "",
        "| held-out test | within ±10% | Spearman | mean abs error | max abs error | new kernels "
        "| predict per arch |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in ("kernels_measured", "fallback_only"):
        q = p[label]
        lines.append(
            f"| {label} ({q['held_out']} archs) | {q['within_10pct'] * 100:.0f}% | "
            f"{q['spearman']:.3f} | {q['mean_abs_rel_error'] * 100:.1f}% | "
            f"{q['max_abs_rel_error'] * 100:.1f}% | {q['new_kernels_measured']} "
            f"({q['kernel_measure_seconds']:.1f} s) | {q['predict_ms_per_arch']:.3f} ms |"
        )
    c = r["cost"]
    lines += [
        "",
        "## Cost of export + profile (median of 3 fresh interpreters)",
        "",
        "| protocol | import | export | profile | export + profile |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("processes_1", "single process"), ("processes_3", "full (3 processes)")):
        v = c[key]
        lines.append(
            f"| {label} | {v['import_s']:.2f} s | {v['export_s']:.3f} s | {v['profile_s']:.2f} s | "
            f"**{v['export_plus_profile_s']:.2f} s** |"
        )
    pr = r["precision"]
    lines += [
        "",
        "## Precision paths (the same 5 architectures with every layer at 8 or 4 bits)",
        "",
        "| bits | layers ORT ran as int8 | quantized/float latency: median (min-max) |",
        "|---|---|---|",
    ]
    for key, s in pr["summary"].items():
        lines.append(
            f"| {key} | {s['int8_share'] * 100:.0f}% | {s['ratio_median']:.2f} "
            f"({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) |"
        )
    m = r["mixed_int8_share"]
    lines += [
        "",
        f"In the {p['calibrate_models'] + p['kernels_measured']['held_out']} "
        f"sampled mixed-precision architectures, {m['ran_as_int8']} of {m['eight_bit_layers']} "
        f"layers with 8-bit weights and inputs ran as int8 kernels ({m['share'] * 100:.0f}%). The "
        "rest have no 8-bit quantizer directly on their output (a residual add, a pooling layer, "
        "or a float or sub-8-bit layer next), so ORT ran them as DequantizeLinear + float "
        "kernels. Regenerate this page from the JSON with `--markdown-only`.",
        "",
        "| bits | architecture | int8 layers | kernels | quantized ms | float ms | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in pr["rows"]:
        lines.append(
            f"| {row['bits']} | `{row['arch']}` | {row['int8_layers']}/{row['layers']} | "
            f"{', '.join(row['kernels'])} | {row['quantized_ms']:.4f} | {row['float_ms']:.4f} | "
            f"{row['ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
