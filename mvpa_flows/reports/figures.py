"""Report figures: brain maps (nilearn plotting) and charts (matplotlib).

Figures are built on :class:`matplotlib.figure.Figure` objects that pyplot never sees, so
importing this module selects no backend and drawing needs no display. Every function
writes one SVG atomically (text kept as text, so titles stay searchable and a browser can
measure them) and returns the facts a caption needs (cut coordinates, voxels shown, ...).

Rules every figure follows: the title sits above the drawing area and the saved canvas is
grown to hold every piece of text (``bbox_inches="tight"``); legends sit outside the axes;
slices are cut where the shown values are; one-slice images are drawn large.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import nibabel as nb
import numpy as np
from matplotlib.figure import Figure

from mvpa_flows.core.io import atomic_path

#: Spaces whose maps may be drawn on a glass brain (MNI-aligned templates).
GLASS_BRAIN_SPACES = ("MNI",)
_BAR = "#4c72b0"
_SERIES_COLOURS = ("#8c8c8c", "#dd8452", "#55a868", "#4c72b0")


def _load(img):
    return nb.load(img) if isinstance(img, (str, Path)) else img


def save_figure(figure, out_file, facecolor=None):
    """Write ``figure`` as SVG (text as text), canvas grown to hold every label."""
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mvpa_flows"}):
        with atomic_path(out_file) as tmp:
            figure.savefig(
                tmp,
                format="svg",
                bbox_inches="tight",
                pad_inches=0.15,
                facecolor=facecolor or figure.get_facecolor(),
                metadata={"Date": None},
            )
    return str(out_file)


def shows_on_glass_brain(space):
    """Whether a map in ``space`` may be drawn on the MNI glass brain."""
    return bool(space) and str(space).startswith(GLASS_BRAIN_SPACES)


# ----------------------------------------------------------------------------- slices


def thin_axis(img):
    """Index of the axis holding a single slice, or None for a volume."""
    shape = _load(img).shape[:3]
    return int(np.argmin(shape)) if min(shape) == 1 else None


def choose_cuts(img, threshold=None, n_cuts=5):
    """(display_mode, world coordinates) of slices where ``img`` shows something.

    Slices are axial (``z``) and picked among those holding the most voxels above
    ``threshold`` (any non-zero voxel when nothing passes it, the whole volume when the
    image is empty), spread over that range and sorted. A one-slice image gives its one
    slice, along its thin axis.
    """
    img = _load(img)
    axis = thin_axis(img)
    if axis is not None:
        centre = (np.array(img.shape[:3], dtype=float) - 1) / 2
        centre[axis] = 0
        return "xyz"[axis], [float((img.affine @ np.append(centre, 1))[axis])]
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=float))
    shown = data > threshold if threshold is not None else data != 0
    if not shown.any():
        shown = data != 0
    per_slice = shown.sum(axis=(0, 1))
    candidates = np.flatnonzero(per_slice) if per_slice.any() else np.arange(data.shape[2])
    if len(candidates) > n_cuts:
        # one slice per stretch of the range: the one showing the most voxels
        stretches = np.array_split(candidates, n_cuts)
        candidates = np.array([s[np.argmax(per_slice[s])] for s in stretches])
    centre = (np.array(img.shape[:3], dtype=float) - 1) / 2
    coords = [
        float((img.affine @ np.array([centre[0], centre[1], k, 1.0]))[2]) for k in candidates
    ]
    return "z", sorted(coords)


def _figure_size(img, mode, n_cuts):
    """Inches for a slice figure: one-slice images large, volumes ~2.2 in per cut."""
    img = _load(img)
    if thin_axis(img) is None:
        return (max(4.0, 2.2 * n_cuts + 1.0), 2.8)
    zooms = np.array(img.header.get_zooms()[:3], dtype=float)
    extent = np.array(img.shape[:3]) * zooms
    plane = [i for i in range(3) if i != "xyz".index(mode)]
    aspect = extent[plane[1]] / max(extent[plane[0]], 1e-6)
    width = 8.0
    return (width, float(np.clip(width * aspect, 3.0, 9.0)) + 0.4)


def plot_slices(
    stat_img,
    bg_img,
    out_file,
    title,
    *,
    threshold=None,
    vmin=None,
    vmax=None,
    cmap="hot",
    signed=False,
    glass_brain=False,
    n_cuts=5,
):
    """A map over its own background (the mean EPI) in slices cut where it shows values.

    Parameters
    ----------
    stat_img, bg_img : path or image
        The map and the image it is drawn on (same subject and space).
    out_file : path
        SVG to write.
    title : str
        Title above the slices.
    threshold : float or None
        Values at or below it are transparent (``signed``: absolute values).
    vmin, vmax : float or None
        Colour range.
    cmap : str
        Colour map.
    signed : bool
        Draw negative values too (a t map), with a symmetric colour range.
    glass_brain : bool
        Add a glass brain below the slices (only for maps in an MNI space).
    n_cuts : int
        Number of slices for volumes.

    Returns
    -------
    dict
        ``DisplayMode``, ``CutCoords`` (mm) and ``VoxelsShown`` (voxels past the threshold).
    """
    from nilearn import plotting

    stat_img = _load(stat_img)
    data = np.nan_to_num(np.asarray(stat_img.dataobj, dtype=float))
    shown = np.abs(data) if signed else data
    mode, cuts = choose_cuts(
        nb.Nifti1Image(shown, stat_img.affine), threshold=threshold, n_cuts=n_cuts
    )
    width, height = _figure_size(stat_img, mode, len(cuts))
    figure = Figure(figsize=(width, height * (2.0 if glass_brain else 1.0)), facecolor="black")
    slices_box = [0.0, 0.5, 1.0, 0.5] if glass_brain else [0.0, 0.0, 1.0, 1.0]
    kwargs = dict(
        display_mode=mode,
        cut_coords=cuts,
        threshold=threshold,
        vmax=vmax,
        cmap=cmap,
        colorbar=True,
        black_bg=True,
        figure=figure,
        axes=slices_box,
    )
    if signed:
        plotting.plot_stat_map(stat_img, bg_img=bg_img, **kwargs)
    else:
        plotting.plot_img(stat_img, bg_img=bg_img, vmin=vmin, **kwargs)
    if glass_brain:
        plotting.plot_glass_brain(
            stat_img,
            threshold=threshold,
            vmax=vmax,
            cmap=cmap,
            colorbar=False,
            plot_abs=not signed,
            black_bg=True,
            figure=figure,
            axes=[0.0, 0.0, 1.0, 0.48],
        )
    figure.suptitle(title, color="white", fontsize=13, y=1.0, va="bottom")
    save_figure(figure, out_file)
    above = shown > threshold if threshold is not None else shown != 0
    return {"DisplayMode": mode, "CutCoords": cuts, "VoxelsShown": int(above.sum())}


def neg_log10_p(p_img, clip=10.0):
    """-log10 p, clipped at ``clip``; voxels outside the map (p = 0 or >= 1) give 0."""
    img = _load(p_img)
    p = np.asarray(img.dataobj, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where((p > 0) & (p < 1), -np.log10(np.where(p > 0, p, 1.0)), 0.0)
    return nb.Nifti1Image(np.minimum(values, clip).astype(np.float32), img.affine)


def mean_image(imgs):
    """Voxel-wise mean of 3D images on one grid (the group figures' background)."""
    imgs = [_load(i) for i in imgs]
    data = np.mean([np.asarray(i.dataobj, dtype=np.float32) for i in imgs], axis=0)
    return nb.Nifti1Image(data, imgs[0].affine)


# ----------------------------------------------------------------------------- charts


def _chart(width, height):
    figure = Figure(figsize=(width, height), facecolor="white")
    return figure, figure.add_subplot()


def _legend_outside(axis):
    """Legend to the right of the axes: it never covers a bar or a line."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_histogram(counts, edges, out_file, xlabel, title, lines=None):
    """Histogram from counts and bin edges, with labelled vertical lines.

    ``lines`` maps a label to ``(value, colour)``; lines without a value are skipped.
    """
    figure, axis = _chart(6.4, 3.0)
    edges = np.asarray(edges, dtype=float)
    axis.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=_BAR, edgecolor="white")
    for label, (value, colour) in (lines or {}).items():
        if value is not None:
            axis.axvline(value, color=colour, linestyle="--", label=label)
    axis.set(xlabel=xlabel, ylabel="count", title=title)
    _legend_outside(axis)
    save_figure(figure, out_file)
    return {"NumberOfBins": int(len(counts)), "Total": int(np.sum(counts))}


def plot_bars(labels, values, out_file, ylabel, title, chance=None, xlabel=None):
    """Bar chart with an optional chance line (legend outside the axes)."""
    figure, axis = _chart(max(4.5, 0.6 * len(labels) + 2.5), 3.2)
    axis.bar(range(len(values)), values, color=_BAR)
    axis.set_xticks(range(len(labels)), labels, rotation=0 if len(labels) < 8 else 45)
    if chance is not None:
        axis.axhline(chance, color="crimson", linestyle="--", label=f"chance ({chance:.3g})")
    axis.set(ylabel=ylabel, title=title, xlabel=xlabel)
    _legend_outside(axis)
    save_figure(figure, out_file)
    return {"NumberOfBars": len(values)}


def plot_grouped_bars(groups, series, out_file, ylabel, title, chance=None):
    """Grouped bars: ``series`` maps a name to one value per group (NaN: no bar)."""
    figure, axis = _chart(max(5.0, 0.9 * len(groups) + 3.0), 3.4)
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        positions = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        colour = _SERIES_COLOURS[k % len(_SERIES_COLOURS)]
        axis.bar(positions, values, width=width, label=name, color=colour)
    if chance is not None:
        axis.axhline(chance, color="crimson", linestyle="--", label=f"chance ({chance:.3g})")
    axis.set_xticks(range(len(groups)), groups)
    axis.set(ylabel=ylabel, title=title)
    _legend_outside(axis)
    save_figure(figure, out_file)
    return {"Series": list(series)}


def plot_distributions(series, out_file, xlabel, title, bins=40):
    """Overlaid histograms (outlines) of several samples, each with its median dashed.

    ``series`` maps a name to its values (NaN left out); returns the medians.
    """
    figure, axis = _chart(6.4, 3.2)
    values = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    values = {k: v[np.isfinite(v)] for k, v in values.items()}
    pooled = np.concatenate([v for v in values.values() if v.size] or [np.zeros(1)])
    edges = np.histogram_bin_edges(pooled, bins=bins)
    medians = {}
    for k, (name, v) in enumerate(values.items()):
        colour = _SERIES_COLOURS[(k + 1) % len(_SERIES_COLOURS)]
        medians[name] = float(np.median(v)) if v.size else None
        axis.hist(v, bins=edges, histtype="step", linewidth=1.6, color=colour, label=name)
        if v.size:
            axis.axvline(medians[name], color=colour, linestyle="--")
    axis.set(xlabel=xlabel, ylabel="voxels", title=title)
    _legend_outside(axis)
    save_figure(figure, out_file)
    return {"Medians": medians}
