"""The figures of a run, each written as one PNG: learning curves, confusion matrix, per-class
accuracy, the highest-loss validation images, and the learning-rate sweep.

matplotlib's object-oriented API draws on the Agg canvas: no pyplot, no display, and no global
backend state, so plotting is safe on headless machines and inside tests.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100                  # pixels per inch of the saved PNGs
ANNOTATE_CLASSES = 20      # confusion cells and scatter points carry text up to this many classes
GRID_COLUMNS = 4           # columns of the error grid
MAX_BARS = 40              # classes shown in the ranked accuracy bars (the worst ones)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    return path


def plot_curves(history: pd.DataFrame, path: Path) -> Path:
    """Train (solid) and validation (dashed) loss and accuracy per epoch, a colour per member/fold."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    loss_axes, acc_axes = figure.subplots(1, 2)
    for color, (label, rows) in zip(_colors(history["member"].nunique()), history.groupby("member", sort=False)):
        for axes, key in ((loss_axes, "loss"), (acc_axes, "acc")):
            axes.plot(rows["epoch"], rows[f"train_{key}"], color=color, marker=".", label=f"{label} train")
            if f"val_{key}" in rows:
                axes.plot(rows["epoch"], rows[f"val_{key}"], color=color, marker=".", linestyle="--",
                          label=f"{label} val")
    for axes, name in ((loss_axes, "loss"), (acc_axes, "accuracy")):
        axes.set(xlabel="epoch", ylabel=name, title=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    acc_axes.legend(fontsize="small")
    return _save(figure, path)


def _colors(count: int):
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
               "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]
    return [palette[i % len(palette)] for i in range(count)]


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    """Rows are true classes, columns predictions; colour is the row share, text the count."""
    count = len(classes)
    side = min(4 + 0.45 * count, 18)
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    axes = figure.subplots()
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    shown = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=axes, label="share of the true class", shrink=0.8)
    axes.set_xticks(range(count), classes, rotation=45, ha="right")
    axes.set_yticks(range(count), classes)
    axes.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({matrix.sum()} validated images)")
    if count <= ANNOTATE_CLASSES:
        for row, col in np.ndindex(matrix.shape):
            if matrix[row, col]:
                axes.text(col, row, str(matrix[row, col]), ha="center", va="center", fontsize="small",
                          color="white" if shares[row, col] > 0.5 else "black")
    return _save(figure, path)


def plot_per_class(counts: np.ndarray, accuracy: np.ndarray, classes: list[str], path: Path) -> Path:
    """Validation accuracy of each class against its number of labelled images (left), and the
    classes ranked by accuracy (right: readable even when every class has the same size)."""
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    scatter_axes, bar_axes = figure.subplots(1, 2)
    scatter_axes.scatter(counts, accuracy, color="tab:blue")
    if len(classes) <= ANNOTATE_CLASSES:
        for x, y, name in zip(counts, accuracy, classes):
            scatter_axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    if counts.max() > 10 * max(counts.min(), 1):
        scatter_axes.set_xscale("log")
    scatter_axes.set(xlabel="labelled images of the class", ylabel="validation accuracy",
                     title="per-class accuracy vs class size")
    scatter_axes.grid(alpha=0.3)
    order = np.argsort(np.nan_to_num(accuracy, nan=-1.0))[:MAX_BARS]
    bar_axes.bar(range(len(order)), np.nan_to_num(accuracy[order]), color="tab:blue")
    bar_axes.set_xticks(range(len(order)), [classes[i] for i in order], rotation=45, ha="right")
    bar_axes.set(ylabel="validation accuracy", ylim=(0, 1.02),
                 title="classes by accuracy" + (f" (worst {MAX_BARS})" if len(classes) > MAX_BARS else ""))
    bar_axes.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def highest_loss(targets: np.ndarray, probs: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` images with the largest cross-entropy, worst first."""
    losses = -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, 1))
    return np.argsort(-losses, kind="stable")[:count]


def plot_errors(images: np.ndarray, targets: np.ndarray, probs: np.ndarray, classes: list[str],
                path: Path, count: int = 16) -> Path:
    """The `count` validation images with the highest loss; images (N, H, W, C) uint8."""
    worst = highest_loss(targets, probs, count)
    rows = math.ceil(len(worst) / GRID_COLUMNS)
    figure = Figure(figsize=(2.6 * GRID_COLUMNS, 2.9 * rows), layout="constrained")
    figure.suptitle(f"highest-loss validation images (of {len(targets)})")
    for place, index in enumerate(worst):
        axes = figure.add_subplot(rows, GRID_COLUMNS, place + 1)
        image = images[index]
        # gray, RGB; more bands: the first three as RGB (a fourth would be taken for alpha)
        axes.imshow(image[:, :, 0] if image.shape[-1] == 1 else image[:, :, :3], cmap="gray", vmin=0, vmax=255)
        predicted = int(probs[index].argmax())
        axes.set_title(f"true {classes[targets[index]]} (p={probs[index, targets[index]]:.2f})\n"
                       f"pred {classes[predicted]} (p={probs[index, predicted]:.2f})", fontsize="small")
        axes.set_axis_off()
    return _save(figure, path)


def plot_lr_sweep(lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float,
                  path: Path, title: str = "learning-rate sweep") -> Path:
    """Loss against learning rate on a log axis, with the suggested rate marked."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(lrs, losses, color="tab:blue", alpha=0.3, label="batch loss")
    axes.plot(lrs, smoothed, color="tab:blue", label="smoothed loss")
    axes.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2g}")
    axes.set_xscale("log")
    # the view ends a little above the starting loss: the divergence at the end would flatten the rest
    low, high = min(smoothed), max(smoothed[: max(1, len(smoothed) // 10)])
    margin = 0.1 * (high - low) + 1e-3
    axes.set_ylim(low - margin, high + 3 * margin)
    axes.set(xlabel="learning rate", ylabel="training loss", title=title)
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    return _save(figure, path)
