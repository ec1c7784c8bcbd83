"""What trial-wise betas are for: decoding rapid event-related designs, and block betas."""

import numpy as np
import pytest
from nilearn.signal import standardize_signal
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut, cross_val_score

from mvpa_flows.core.data.beta_samples import load_beta_samples
from mvpa_flows.core.data.betas import trial_betas
from mvpa_flows.core.data.cleaning import clean_run
from mvpa_flows.core.data.dataset import load_samples
from mvpa_flows.core.data.samples import label_volumes
from mvpa_flows.core.stats.ftest import f_oneway_voxels
from mvpa_flows.datasets import make_event_related_data


def _decode(X, y, groups):
    clf = LogisticRegression(max_iter=2000)
    return cross_val_score(clf, X, y, groups=groups, cv=LeaveOneGroupOut()).mean()


def _volume_samples(sim, hrf_delay):
    X, y, groups = [], [], []
    for run, (data, events) in enumerate(zip(sim["data"], sim["events"], strict=True)):
        cleaned = clean_run(data, detrend=True, standardize="zscore_run", t_r=sim["tr"])
        labels = label_volumes(events, data.shape[0], sim["tr"], sim["conditions"], hrf_delay)
        keep = labels != ""
        X.append(cleaned[keep])
        y.append(labels[keep])
        groups.append(np.full(keep.sum(), run))
    return np.concatenate(X), np.concatenate(y), np.concatenate(groups)


def _beta_samples(sim, method):
    X, y, groups = [], [], []
    for run, (data, events) in enumerate(zip(sim["data"], sim["events"], strict=True)):
        betas = trial_betas(data, events, sim["tr"], method=method)
        X.append(standardize_signal(betas, standardize="zscore_sample"))
        y.append(events["trial_type"].to_numpy())
        groups.append(np.full(len(events), run))
    return np.concatenate(X), np.concatenate(y), np.concatenate(groups)


def test_lss_decodes_a_rapid_design_that_volume_labels_cannot():
    # ISI 3-5 s (jittered), 1-s trials, TR 2 s: every volume mixes 3-4 trials' responses
    sim = make_event_related_data(
        n_runs=4, n_volumes=200, n_voxels=50, signal=1.5, trial_noise=1.0, seed=0
    )
    assert all(np.diff(ev["onset"]).min() >= 3 and np.diff(ev["onset"]).max() <= 5
               for ev in sim["events"])  # fmt:skip
    volume = {delay: _decode(*_volume_samples(sim, delay)) for delay in (0.0, 2.0, 4.0, 5.0, 6.0)}
    lss = _decode(*_beta_samples(sim, "lss"))
    lsa = _decode(*_beta_samples(sim, "lsa"))
    # labels at the events' onsets (block-design labelling): chance
    assert volume[0.0] < 0.6
    # one beta per trial, overlapping responses separated: decodes well, every trial
    assert lss >= 0.8
    # shifted volume labels recover part of it, on the half of the trials that cover a
    # volume; LSS beats every delay
    assert lss > max(volume.values())
    # LSA's collinear trial regressors give noisy betas (Mumford et al. 2012)
    assert lsa < lss - 0.1


@pytest.fixture(scope="module")
def haxby_files(haxby_dir):
    func = haxby_dir / "derivatives" / "fmriprep" / "sub-1" / "func"
    return (
        sorted(str(p) for p in func.glob("*desc-preproc_bold.nii.gz")),
        sorted(str(p) for p in func.glob("*desc-brain_mask.nii.gz")),
        sorted(str(p) for p in (haxby_dir / "sub-1" / "func").glob("*_events.tsv")),
        sorted(str(p) for p in func.glob("*desc-confounds_timeseries.tsv")),
    )


def test_haxby_block_betas_give_the_volume_f_map(haxby_files):
    conditions = ["face", "house"]
    X, table, mask, info = load_beta_samples(
        *haxby_files, conditions=conditions, min_trials_per_run=1
    )
    assert X.shape[0] == 24 and info["SampleCounts"] == {"face": 12, "house": 12}
    Xv, tv, mask_v, _ = load_samples(*haxby_files, conditions=conditions, hrf_delay=4.0)
    np.testing.assert_array_equal(mask.get_fdata(), mask_v.get_fdata())
    F, _ = f_oneway_voxels(X, table["label"].to_numpy())
    Fv, _ = f_oneway_voxels(Xv, tv["label"].to_numpy())
    F, Fv = np.nan_to_num(F), np.nan_to_num(Fv)
    top = 50  # of 530 voxels: chance overlap 0.09
    overlap = len(set(np.argsort(-F)[:top]) & set(np.argsort(-Fv)[:top])) / top
    assert overlap >= 0.6
    assert np.corrcoef(F, Fv)[0, 1] >= 0.7
