"""Interface: voxel-wise one-way ANOVA F-test."""

import os

import nibabel as nb
import numpy as np
import pandas as pd
from nilearn.masking import unmask
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mvpa_flows.core.stats.ftest import f_oneway_voxels


class _FTestInputSpec(BaseInterfaceInputSpec):
    data_file = File(exists=True, mandatory=True, desc="cleaned samples (.npy)")
    samples_file = File(exists=True, mandatory=True, desc="sample table with a label column")
    mask_file = File(exists=True, mandatory=True, desc="analysis mask the samples come from")


class _FTestOutputSpec(TraitedSpec):
    f_map = File(exists=True, desc="F statistic map")
    p_map = File(exists=True, desc="p-value map (not -log10)")
    metadata = traits.Dict(desc="test description for the sidecars")


class FTest(SimpleInterface):
    """One-way ANOVA across conditions at every voxel (same F as sklearn's f_classif).

    Calls :func:`mvpa_flows.core.stats.ftest.f_oneway_voxels`.
    """

    input_spec = _FTestInputSpec
    output_spec = _FTestOutputSpec

    def _run_interface(self, runtime):
        X = np.load(self.inputs.data_file, mmap_mode="r")
        labels = pd.read_csv(self.inputs.samples_file, sep="\t")["label"].astype(str)
        F, p = f_oneway_voxels(X, labels.to_numpy())
        mask = nb.load(self.inputs.mask_file)
        for key, values, name in (("f_map", F, "F"), ("p_map", p, "p")):
            out = os.path.join(runtime.cwd, f"ftest_{name}.nii.gz")
            unmask(
                np.nan_to_num(values, nan=0.0 if name == "F" else 1.0).astype(np.float32), mask
            ).to_filename(out)
            self._results[key] = out
        n, k = labels.size, labels.nunique()
        self._results["metadata"] = {
            "Test": "one-way ANOVA F-test (sklearn.feature_selection.f_classif statistic)",
            "DegreesOfFreedom": [int(k - 1), int(n - k)],
            "Labels": sorted(labels.unique().tolist()),
            "NumberOfSamples": int(n),
            "ConstantVoxels": int(np.isnan(F).sum()),
        }
        return runtime
