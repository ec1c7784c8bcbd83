"""Report figures, drawn with nilearn plotting and matplotlib (Agg; no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
from nilearn import plotting  # noqa: E402

from mvpa_flows.core.io import atomic_path  # noqa: E402


def _save(figure_or_display, out_file):
    """Save a matplotlib figure or a nilearn display atomically, then close it."""
    is_figure = isinstance(figure_or_display, plt.Figure)
    with atomic_path(out_file) as tmp:
        if is_figure:
            figure_or_display.savefig(tmp, bbox_inches="tight")
        else:
            figure_or_display.savefig(str(tmp))
    plt.close(figure_or_display) if is_figure else figure_or_display.close()
    return str(out_file)


def display_cuts(img, n_cuts=5):
    """(display_mode, cut_coords) suited to ``img``: one slice for thin volumes."""
    img = nb.load(img) if isinstance(img, (str, Path)) else img
    shape = img.shape[:3]
    if min(shape) == 1:
        axis = int(np.argmin(shape))
        centre = np.zeros(4)
        centre[3] = 1
        world = img.affine @ centre
        return "xyz"[axis], [float(world[axis])]
    data = np.abs(np.nan_to_num(np.asarray(img.dataobj, dtype=float)))
    if not data.any():
        return "z", n_cuts
    ijk = np.array(np.unravel_index(np.argmax(data), shape) + (1,), dtype=float)
    z = float((img.affine @ ijk)[2])
    step = abs(img.affine[2, 2]) * 2
    return "z", [z + step * k for k in range(-(n_cuts // 2), n_cuts // 2 + 1)]


def plot_score_map(score_img, bg_img, chance, out_file, title="Searchlight accuracy", vmax=None):
    """The seed's figure: the score map over the mean EPI, hot colours, shown above chance."""
    data = (
        np.asarray(nb.load(score_img).dataobj)
        if isinstance(score_img, (str, Path))
        else np.asarray(score_img.dataobj)
    )
    vmax = vmax or float(max(np.nanmax(data), chance + 1e-3))
    mode, cuts = display_cuts(score_img)
    display = plotting.plot_img(
        score_img,
        bg_img=bg_img,
        display_mode=mode,
        cut_coords=cuts,
        cmap="hot",
        threshold=chance,
        vmin=chance,
        vmax=vmax,
        colorbar=True,
        black_bg=True,
        title=f"{title} (shown above chance = {chance:.2f})",
    )
    return _save(display, out_file)


def plot_glass(stat_img, threshold, out_file, title, cmap="hot", vmax=None):
    """Glass brain of a statistical map, thresholded."""
    display = plotting.plot_glass_brain(
        stat_img,
        threshold=threshold,
        colorbar=True,
        cmap=cmap,
        title=title,
        plot_abs=False,
        vmax=vmax,
    )
    return _save(display, out_file)


def plot_stat(stat_img, bg_img, out_file, title, threshold=None, vmax=None, cmap="hot"):
    """A statistical map over the mean EPI."""
    mode, cuts = display_cuts(stat_img)
    display = plotting.plot_stat_map(
        stat_img,
        bg_img=bg_img,
        display_mode=mode,
        cut_coords=cuts,
        title=title,
        threshold=threshold,
        vmax=vmax,
        cmap=cmap,
        colorbar=True,
        black_bg=True,
    )
    return _save(display, out_file)


def neg_log10_p(p_img, clip=10.0):
    """-log10 p clipped at ``clip`` (the seed's F-test figure), as an image."""
    img = nb.load(p_img) if isinstance(p_img, (str, Path)) else p_img
    p = np.asarray(img.dataobj, dtype=float)
    with np.errstate(divide="ignore"):
        values = -np.log10(np.where(p > 0, p, np.nan))
    values = np.nan_to_num(values, nan=0.0, posinf=clip)
    values[p >= 1] = 0.0
    return nb.Nifti1Image(np.minimum(values, clip).astype(np.float32), img.affine)


def plot_histogram(counts, edges, out_file, xlabel, title, lines=None):
    """Bar histogram from counts and edges, with optional labelled vertical lines."""
    figure, axis = plt.subplots(figsize=(6, 3))
    edges = np.asarray(edges, dtype=float)
    axis.bar(
        edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white"
    )
    for label, (value, colour) in (lines or {}).items():
        axis.axvline(value, color=colour, linestyle="--", label=label)
    if lines:
        axis.legend(frameon=False)
    axis.set(xlabel=xlabel, ylabel="count", title=title)
    figure.tight_layout()
    return _save(figure, out_file)


def plot_bars(labels, values, out_file, ylabel, title, chance=None, colors=None, errors=None):
    """Bar chart with an optional chance line."""
    figure, axis = plt.subplots(figsize=(max(4, 0.6 * len(labels) + 2), 3.2))
    axis.bar(range(len(values)), values, yerr=errors, color=colors or "#4c72b0", capsize=3)
    axis.set_xticks(range(len(labels)), labels, rotation=0 if len(labels) < 8 else 45)
    if chance is not None:
        axis.axhline(chance, color="crimson", linestyle="--", label=f"chance {chance:.3g}")
        axis.legend(frameon=False)
    axis.set(ylabel=ylabel, title=title)
    figure.tight_layout()
    return _save(figure, out_file)


def plot_grouped_bars(groups, series, out_file, ylabel, title, chance=None):
    """Grouped bars: ``series`` maps a name to one value per group."""
    figure, axis = plt.subplots(figsize=(max(5, 0.9 * len(groups) + 2), 3.4))
    width = 0.8 / max(1, len(series))
    colours = ["#8c8c8c", "#dd8452", "#55a868", "#4c72b0"]
    for k, (name, values) in enumerate(series.items()):
        positions = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        axis.bar(positions, values, width=width, label=name, color=colours[k % len(colours)])
    if chance is not None:
        axis.axhline(chance, color="crimson", linestyle="--", label=f"chance {chance:.3g}")
    axis.set_xticks(range(len(groups)), groups)
    axis.set(ylabel=ylabel, title=title)
    axis.legend(frameon=False, fontsize="small")
    figure.tight_layout()
    return _save(figure, out_file)
