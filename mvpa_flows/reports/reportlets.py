"""The report's figures, each drawn from one derivative and its metadata.

Every function writes one SVG and returns the facts its caption states (voxels shown,
smallest attainable p, ...); the workflows store those facts in the figure's sidecar.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pandas as pd

from mvpa_flows.reports import figures
from mvpa_flows.reports.methods import WORDS

#: -log10(0.05): the line a p-value map is read against.
P05 = float(-np.log10(0.05))


def minimum_p(metadata):
    """Smallest p-value the permutation scheme of ``metadata`` can give (None: no test).

    Label permutations give ``(1 + #null >= observed) / (1 + n)``, so at least
    ``1 / (1 + n)``; an exact sign-flip test over all ``n`` flips gives ``1 / n``.
    """
    n = int(metadata.get("NumberOfPermutations") or 0)
    if n <= 0:
        return None
    return 1.0 / n if metadata.get("ExactPermutation") else 1.0 / (n + 1)


def _values(img):
    img = nb.load(img) if isinstance(img, str) else img
    return np.nan_to_num(np.asarray(img.dataobj, dtype=float))


def score_map(score_file, bg_file, metadata, out_file, glass_brain=False):
    """The searchlight score map over the mean EPI, shown above chance."""
    chance = float(metadata.get("ChanceLevel", 0.5))
    top = float(np.max(_values(score_file), initial=chance))
    scoring = WORDS["Scoring"](metadata.get("Scoring", "accuracy"))
    facts = figures.plot_slices(
        score_file,
        bg_file,
        out_file,
        f"Searchlight {scoring} (shown above chance, {chance:.3g})",
        threshold=chance,
        vmin=chance,
        vmax=max(top, chance + 1e-3),
        glass_brain=glass_brain,
    )
    return {**facts, "ChanceLevel": chance}


def p_map(p_file, bg_file, metadata, out_file, title, glass_brain=False):
    """-log10 p over the mean EPI (unthresholded, so a map without p < 0.05 still shows)."""
    logp = figures.neg_log10_p(p_file)
    values = np.asarray(logp.dataobj)
    facts = figures.plot_slices(
        logp,
        bg_file,
        out_file,
        title,
        threshold=1e-6,
        vmin=0.0,
        vmax=max(float(values.max()), P05 + 0.1),
        glass_brain=glass_brain,
    )
    facts["VoxelsBelow05"] = int((values > P05).sum())
    facts["MinimumAttainableP"] = minimum_p(metadata)
    return facts


def stat_map(stat_file, bg_file, out_file, title, signed=False, glass_brain=False):
    """A statistic (F, t) over the mean EPI; ``signed`` maps use a symmetric colour range."""
    values = _values(stat_file)
    top = float(np.max(np.abs(values), initial=0.0)) or 1.0
    return figures.plot_slices(
        stat_file,
        bg_file,
        out_file,
        title,
        threshold=1e-6,
        vmin=0.0,
        vmax=top,
        cmap="cold_hot" if signed else "hot",
        signed=signed,
        glass_brain=glass_brain,
    )


def sphere_sizes(metadata, out_file):
    """Histogram of voxels per searchlight sphere."""
    hist = metadata["SphereSizeHistogram"]
    return figures.plot_histogram(
        hist["Counts"],
        hist["BinEdges"],
        out_file,
        "voxels per sphere",
        f"Sphere sizes (radius {WORDS['Radius'](metadata['Radius'])})",
    )


def folds(metadata, out_file):
    """Mean score over spheres in each cross-validation fold, with chance."""
    scores = metadata["FoldMeanScores"]
    scoring = WORDS["Scoring"](metadata.get("Scoring", "accuracy"))
    return figures.plot_bars(
        [str(i + 1) for i in range(len(scores))],
        scores,
        out_file,
        f"mean {scoring}",
        "Score per fold (mean over spheres)",
        chance=metadata.get("ChanceLevel"),
        xlabel="fold",
    )


def null_distribution(metadata, out_file):
    """Scores of every sphere under the label permutations."""
    null = metadata["NullDistribution"]
    scoring = WORDS["Scoring"](metadata.get("Scoring", "accuracy"))
    return figures.plot_histogram(
        null["Counts"],
        null["BinEdges"],
        out_file,
        scoring,
        "Null distribution (labels permuted within runs)",
        lines={
            "chance": (metadata.get("ChanceLevel"), "crimson"),
            "best observed sphere": (metadata.get("MaxScore"), "black"),
        },
    )


_SERIES = {
    "anatomical": "anatomical alignment",
    "hyperaligned": "hyperalignment",
    "within_subject": "within-subject",
}


def bsc_scores(scores_file, out_file):
    """Between-subject classification per left-out subject; only columns with values."""
    scores = pd.read_csv(scores_file, sep="\t", dtype={"subject": str}, na_values=["n/a"])
    series = {
        words: scores[column].to_numpy(dtype=float)
        for column, words in _SERIES.items()
        if column in scores and scores[column].notna().any()
    }
    facts = figures.plot_grouped_bars(
        [f"sub-{s}" for s in scores["subject"]],
        series,
        out_file,
        "accuracy",
        "Between-subject classification (leave one subject out)",
        chance=float(scores["chance"].iloc[0]) if "chance" in scores else None,
    )
    return {**facts, "Drawn": ", ".join(series)}


def isc_distributions(anatomical_file, aligned_file, out_file):
    """Voxel-wise group ISC before and after alignment, as two distributions."""
    maps = {
        name: np.asarray(nb.load(path).dataobj, dtype=float)
        for name, path in (("anatomical", anatomical_file), ("aligned", aligned_file))
        if path
    }
    # The maps are zero outside the analysis mask (and where a voxel had no ISC). A voxel
    # drawn is one with a value in either map, so both distributions cover the same voxels,
    # including those whose correlation is exactly zero in one of them.
    drawn = np.logical_or.reduce([values != 0 for values in maps.values()])
    series = {name: values[drawn] for name, values in maps.items()}
    facts = figures.plot_distributions(
        series,
        out_file,
        "inter-subject correlation (r)",
        "Leave-one-out ISC of the test runs, per voxel",
    )
    medians = facts["Medians"]
    return {
        "Drawn": " and ".join(series),
        "NumberOfVoxelsDrawn": int(series["anatomical"].size),
        "MedianShown": {k: v for k, v in medians.items() if v is not None},
    }


def run_name(source_file):
    """A run's name for titles: its file name up to the space/desc entities."""
    name = str(source_file).rsplit("/", 1)[-1]
    for cut in ("_space-", "_desc-", "_bold", "_events"):
        name = name.split(cut)[0]
    return name


def design_matrix(design_file, out_file, name="run"):
    """One run's trial-wise design matrix (nilearn's ``plot_design_matrix``).

    ``design_file`` is the ``.tsv`` of the run's design (a ``time`` column, then one
    column per trial, the confounds and the drift).
    """
    from matplotlib.figure import Figure
    from nilearn.plotting import plot_design_matrix

    design = pd.read_csv(design_file, sep="\t", index_col=0)
    width = min(16.0, max(6.0, 0.08 * design.shape[1] + 3.0))
    figure = Figure(figsize=(width, 6.0), facecolor="white")
    axis = figure.add_subplot()
    plot_design_matrix(design, axes=axis)
    axis.set_title(f"Design matrix ({name})", fontsize=10)
    if design.shape[1] > 40:
        # one tick per column is unreadable; every tenth keeps the order visible
        labels = list(design.columns)
        ticks = list(range(0, len(labels), 10))
        axis.set_xticks(ticks, [labels[i] for i in ticks], rotation=60, ha="right", fontsize=7)
    figure.tight_layout()
    figures.save_figure(figure, out_file)
    return {
        "NumberOfColumns": int(design.shape[1]),
        "NumberOfVolumes": int(design.shape[0]),
        "DesignRun": name,
    }


def neighbour_correlations(design_file, trials_file, out_file, name="run", threshold=None):
    """Correlation of every trial's regressor with the next trial's, against onset.

    Values above ``threshold`` (the warning level of
    :data:`mvpa_flows.core.data.betas.NEIGHBOUR_CORRELATION_WARNING`) are marked: trials
    that close make unstable trial-wise betas.
    """
    from mvpa_flows.core.data.betas import NEIGHBOUR_CORRELATION_WARNING, neighbour_correlation
    from mvpa_flows.core.data.samples import read_events

    threshold = NEIGHBOUR_CORRELATION_WARNING if threshold is None else float(threshold)
    design = pd.read_csv(design_file, sep="\t", index_col=0)
    pairs = neighbour_correlation(design, read_events(trials_file))
    figure, axis = figures._chart(6.4, 3.0)
    values = pairs["correlation"].to_numpy(dtype=float)
    onsets = pairs["onset"].to_numpy(dtype=float)
    for k, (label, rows) in enumerate(pairs.groupby("trial_type", sort=True)):
        colour = figures._SERIES_COLOURS[k % len(figures._SERIES_COLOURS)]
        axis.plot(rows["onset"], rows["correlation"], "o", ms=4, color=colour, label=str(label))
    axis.axhline(threshold, color="crimson", linestyle="--", label=f"warning ({threshold:g})")
    above = int(np.sum(values > threshold))
    axis.set(
        xlabel="onset of the earlier trial (s)",
        ylabel="correlation with next trial",
        title=f"Neighbouring trials' regressors ({name})",
        ylim=(min(-0.1, float(np.min(values, initial=0.0)) - 0.05), 1.0),
    )
    if onsets.size:
        axis.set_xlim(float(onsets.min()) - 5, float(onsets.max()) + 5)
    figures._legend_outside(axis)
    figures.save_figure(figure, out_file)
    return {
        "NeighbourCorrelationMax": float(values.max()) if values.size else None,
        "NeighbourCorrelationMedian": float(np.median(values)) if values.size else None,
        "NeighbourPairs": int(values.size),
        "PairsAboveWarning": above,
        "WarningLevel": threshold,
        "DesignRun": name,
    }
