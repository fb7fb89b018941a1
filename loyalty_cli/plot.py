"""The results of an experiment as a PNG: per metric, each variant's difference against control
with its confidence interval (the service's exact figures; floats only to draw them)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from loyalty.promotions.v1 import experiments_pb2 as pb

from loyalty_cli.experiments import METRICS, metric_name


def _unit_value(metric: str, micro: int) -> float:
    _label, exponent, _places, _unit = METRICS.get(metric, (metric, 6, 3, ""))
    return float(micro) / float(10**exponent)


def draw_results(answer: pb.GetExperimentResultsResponse, path: Path) -> None:
    metrics = [metric_name(m.metric) for m in answer.variants[0].metrics] if answer.variants else []
    variants = [v for v in answer.variants if not v.control]
    columns = 3
    rows = max(1, -(-len(metrics) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows + 0.8), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(metrics):
            ax.set_visible(False)
            continue
        metric = metrics[index]
        label, _exponent, _places, unit = METRICS.get(metric, (metric, 6, 3, ""))
        for row, variant in enumerate(variants):
            comparison = next((c for c in variant.comparisons if metric_name(c.metric) == metric), None)
            if comparison is None:
                continue
            mid = _unit_value(metric, comparison.difference_micro)
            low = _unit_value(metric, comparison.ci_lower_micro)
            high = _unit_value(metric, comparison.ci_upper_micro)
            colour = "#1b7f3b" if comparison.significant else "#555555"
            ax.errorbar([mid], [row], xerr=[[mid - low], [high - mid]], fmt="o", color=colour, capsize=4)
        ax.axvline(0, color="#b00020", linewidth=1)
        ax.set_yticks(range(len(variants)), [v.variant_id for v in variants])
        ax.set_ylim(-0.6, len(variants) - 0.4)
        ax.set_title(f"{label} ({unit}) vs control" if unit else f"{label} vs control", fontsize=10)
        ax.tick_params(labelsize=8)
    srm = answer.srm
    experiment = answer.experiment
    figure.suptitle(
        f"{experiment.name}: difference against control, {answer.confidence_level_bps / 100:g} % intervals "
        f"(green: significant); SRM {'passed' if srm.passed else 'FAILED'}, "
        f"recommendation: {answer.recommendation.variant_id or 'keep the default'}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
