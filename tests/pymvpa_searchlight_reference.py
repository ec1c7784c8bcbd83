"""Reference for the tests and the benchmark: PyMVPA 2.6's searchlight hyperalignment.

A step-by-step transcription (in plain numpy/scipy, Python 3) of
``mvpa2.algorithms.searchlight_hyperalignment.SearchlightHyperalignment`` with the pieces
it calls: ``FeatureSelectionHyperalignment``, ``compute_feature_scores``,
``FixedNElementTailSelector(tail='upper', mode='select', sort=False)``,
``Hyperalignment`` (alpha=1, levels 1-3), ``ProcrusteanMapper`` (from
:mod:`pymvpa_reference`), ``IndexQueryEngine(voxel_indices=Sphere(radius))`` and
``scatter_neighborhoods(Sphere(sparse_radius), coords, deterministic=True)``.

What PyMVPA does, in order:

1. Spheres live in voxel-index space: the sphere of radius ``r`` (in voxels, no voxel
   sizes) around a voxel holds every dataset feature whose integer coordinates differ
   from the centre's by an offset of Euclidean length ``<= r``; ids come back sorted.
2. Centres: every feature (``sparse_radius=None``) or, with ``sparse_radius``, a greedy
   scatter: take the *last* remaining coordinate (an ordered dict popped from its end),
   make it a centre, remove every coordinate within ``sparse_radius`` voxels of it,
   repeat until none is left. ``mask_node_ids`` restricts both to a subset.
3. For each centre, in that order: take every subject's columns of the sphere (the query
   engine is trained on the reference subject; all subjects share the feature layout)
   and run ``FeatureSelectionHyperalignment``:

   a. feature selection only when ``featsel != 1``: scores per subject = sum over the
      other (non-excluded) subjects of the row/column maxima of ``X_i.T @ X_j``; the
      centre voxel's score is raised to the subject's maximum; the top
      ``int(featsel * n)`` (or ``min(n, featsel)`` for ``featsel > 1``) are kept, in
      ascending score order (``argsort``, last ``n``), per subject or shared
      (``use_same_features``, on the mean score);
   b. ``Hyperalignment.train`` on the non-excluded subjects (the reference is the
      SearchlightHyperalignment's ``ref_ds``, re-indexed after exclusion), then level 3
      for every subject: one Procrustes map each (``proj``, scale included; the offsets
      are dropped);
   c. the maps are cast to ``dtype`` (float32 by default) and, with feature selection,
      scattered back into a zero (n, n) matrix at (selected rows, reference's selected
      columns).

4. Each subject's local map becomes a COO matrix of shape (n_features, n_features): with
   ``combine_neighbormappers`` (default) the whole (sphere x sphere) block at (sphere
   rows, reference's sphere columns); without it only the centre's column, written into
   the centre's column. Converted to CSC and added to the subject's running CSC sum (in
   ``dtype``).
5. The result per subject is ``StaticProjectionMapper(proj=sum, recon=sum.T)``: forward
   is ``X @ proj`` (no offsets), reverse ``Y @ proj.T`` (``compute_recon=True``).

Deliberate differences, shared with the project's ROI hyperalignment tests: z-scoring
treats columns whose standard deviation is below round-off of the mean as constant (as
:func:`mvpa_flows.core.alignment.procrustes.zscore_columns`); PyMVPA's ``nproc`` and
``nblocks`` (which only split the centre list) are not transcribed; the query engine is
a plain dictionary of coordinates.
"""

from __future__ import annotations

import itertools

import numpy as np
from pymvpa_reference import ProcrusteanMapper
from scipy.sparse import coo_matrix, csc_matrix


def zscore(x):
    """``zscore(x, chunks_attr=None)``: per column, population std, constants centred."""
    x = np.array(x, dtype=float)
    mean, std = x.mean(axis=0), x.std(axis=0)
    x -= mean
    nz = std > 100 * np.finfo(float).eps * np.abs(mean)
    x[:, nz] /= std[nz]
    return x


# -- neighbourhoods ----------------------------------------------------------------------
def sphere_increments(radius):
    """Integer 3-D offsets of Euclidean length <= radius (voxel units)."""
    extent = int(np.ceil(radius))
    rng = range(-extent, extent + 1)
    return [o for o in itertools.product(rng, rng, rng) if np.sqrt(np.sum(np.square(o))) <= radius]


class IndexQueryEngine:
    """Features within ``radius`` voxels of a feature; ids sorted."""

    def __init__(self, voxel_indices, radius):
        self.coords = [tuple(int(c) for c in v) for v in voxel_indices]
        self.lookup = {c: i for i, c in enumerate(self.coords)}
        self.increments = sphere_increments(radius)

    def __getitem__(self, feature_id):
        centre = self.coords[feature_id]
        ids = []
        for o in self.increments:
            c = (centre[0] + o[0], centre[1] + o[1], centre[2] + o[2])
            if c in self.lookup:
                ids.append(self.lookup[c])
        return sorted(ids)


def scatter_neighborhoods(coords, sparse_radius):
    """Greedy sparse seeds; returns their indices into ``coords`` in the order chosen."""
    remaining = {}
    for i, c in enumerate(coords):
        remaining.setdefault(tuple(int(v) for v in c), []).append(i)
    increments = sphere_increments(sparse_radius)
    seeds = []
    while remaining:
        seed = next(reversed(remaining))  # the last inserted key still present
        idx = remaining.pop(seed)
        for o in increments:
            remaining.pop((seed[0] + o[0], seed[1] + o[1], seed[2] + o[2]), None)
        seeds.extend(idx)
    return seeds


# -- hyperalignment in one sphere -------------------------------------------------------
def hyperalignment_train(datasets, ref_ds, level2_niter=1, zscore_common=True, scaling=True):
    """Levels 1 and 2 of ``Hyperalignment.train`` (alpha=1, zscore_all=False): the
    common space."""
    n = len(datasets)
    common = datasets[ref_ds]
    if zscore_common:
        common = zscore(common)
    mapped = list(datasets)
    for i, ds in enumerate(datasets):
        if i == ref_ds:
            continue
        proj = ProcrusteanMapper(scaling).train(ds, common).forward(ds)
        if zscore_common:
            proj = zscore(proj)
        mapped[i] = proj
        common = 0.5 * (proj + common)
        if zscore_common:
            common = zscore(common)
    common = np.mean(mapped, axis=0)
    for _ in range(level2_niter):
        for i, ds in enumerate(datasets):
            temp = (common * n - mapped[i]) / (n - 1)
            if zscore_common:
                temp = zscore(temp)
            proj = ProcrusteanMapper(scaling).train(ds, temp).forward(ds)
            if zscore_common:
                proj = zscore(proj)
            mapped[i] = proj
        common = np.mean(mapped, axis=0)
    if zscore_common:
        common = zscore(common)
    return common


def compute_feature_scores(datasets, exclude_from_model=()):
    scores = [np.zeros(d.shape[1]) for d in datasets]
    for i, a in enumerate(datasets):
        for j in range(i + 1, len(datasets)):
            corr = a.T @ datasets[j]
            if j not in exclude_from_model:
                scores[i] += corr.max(axis=1)
            if i not in exclude_from_model:
                scores[j] += corr.max(axis=0)
    return scores


def _select_upper(scores, n):
    return list(np.array(scores).argsort()[-n:])


def featsel_hyperalignment(
    datasets,
    ref_ds,
    seed_index,
    featsel=1.0,
    use_same_features=False,
    exclude_from_model=(),
    dtype="float32",
    full_matrix=True,
    **ha_params,
):
    """``FeatureSelectionHyperalignment.__call__``: one local map per subject."""
    nfeatures = datasets[ref_ds].shape[1]
    nfeatures_all = [d.shape[1] for d in datasets]
    selected = None
    if featsel != 1.0:
        scores = compute_feature_scores(datasets, exclude_from_model)
        nsel = nfeatures
        if featsel < 1.0 and int(featsel * nfeatures) > 0:
            nsel = int(featsel * nfeatures)
        if featsel > 1.0:
            nsel = min(nfeatures, featsel)
        if use_same_features:
            kept = [scores[i] for i in range(len(datasets)) if i not in exclude_from_model]
            mean_score = np.mean(np.asarray(kept), axis=0)
            mean_score[seed_index] = max(mean_score)
            sel = _select_upper(mean_score, nsel)
            selected = [sel] * len(datasets)
        else:
            selected = []
            for s in scores:
                s[seed_index] = max(s)
                selected.append(_select_upper(s, nsel))
        datasets = [d[:, s] for d, s in zip(datasets, selected, strict=True)]
    train = [d for i, d in enumerate(datasets) if i not in exclude_from_model]
    kept_ids = [i for i in range(len(datasets)) if i not in exclude_from_model]
    common = hyperalignment_train(train, kept_ids.index(ref_ds), **ha_params)
    scaling = ha_params.get("scaling", True)
    maps = [ProcrusteanMapper(scaling).train(d, common).proj.astype(dtype) for d in datasets]
    if selected is not None:
        full = []
        for i, m in enumerate(maps):
            f = np.zeros((nfeatures_all[i], nfeatures_all[ref_ds]))
            f[np.ix_(selected[i], selected[ref_ds])] = m
            full.append(f)
        maps = full
    if not full_matrix:
        maps = [np.squeeze(m[:, seed_index]) for m in maps]
    return maps


# -- the searchlight ----------------------------------------------------------------------
def searchlight_centres(voxel_indices, radius, sparse_radius=None, mask_node_ids=None):
    """Centre feature ids in PyMVPA's processing order."""
    if sparse_radius is None:
        if mask_node_ids is not None:
            return list(mask_node_ids)
        return list(range(len(voxel_indices)))
    if mask_node_ids is None:
        return scatter_neighborhoods(voxel_indices, sparse_radius)
    sidx = scatter_neighborhoods(np.asarray(voxel_indices)[mask_node_ids], sparse_radius)
    return [mask_node_ids[s] for s in sidx]


def searchlight_hyperalignment(
    datasets,
    voxel_indices,
    radius=3,
    sparse_radius=None,
    ref_ds=0,
    featsel=1.0,
    use_same_features=False,
    exclude_from_model=(),
    combine_neighbormappers=True,
    dtype="float32",
    mask_node_ids=None,
    centres=None,
    projections=None,
    **ha_params,
):
    """``SearchlightHyperalignment(...)(datasets)``: one (n, n) CSC projection per subject.

    ``centres`` (feature ids) replaces the centre selection of step 2 when given, and
    ``projections`` (one CSC matrix per subject) the empty running sums: to time a subset
    of spheres with running sums of a realistic size.
    """
    datasets = [np.asarray(d, dtype=float) for d in datasets]
    n_features = datasets[ref_ds].shape[1]
    qe = IndexQueryEngine(voxel_indices, radius)
    if centres is None:
        centres = searchlight_centres(voxel_indices, radius, sparse_radius, mask_node_ids)
    if projections is None:
        projections = [csc_matrix((n_features, n_features), dtype=dtype) for _ in datasets]
    for node in centres:
        ids = qe[node]
        if not ids:
            continue
        local = [d[:, ids] for d in datasets]
        seed_index = np.where(np.array(ids) == node)
        maps = featsel_hyperalignment(
            local,
            ref_ds,
            seed_index,
            featsel=featsel,
            use_same_features=use_same_features,
            exclude_from_model=exclude_from_model,
            dtype=dtype,
            full_matrix=combine_neighbormappers,
            **ha_params,
        )
        for isub in range(len(datasets)):
            if not combine_neighbormappers:
                rows, cols = ids, [node] * len(ids)
                vals = np.atleast_1d(maps[isub]).tolist()
            else:
                rows, cols, vals = [], [], []
                for f2, col in enumerate(ids):
                    rows += ids
                    cols += [col] * len(ids)
                    vals += maps[isub][:, f2].tolist()
            shape = (max(n_features, max(rows) + 1), max(n_features, max(cols) + 1))
            proj = coo_matrix((vals, (rows, cols)), shape=shape, dtype=dtype).tocsc()
            projections[isub] = projections[isub] + proj
    return projections
