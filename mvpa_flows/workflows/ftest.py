"""Univariate F-test maps."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.ftest import FTest
from mvpa_flows.interfaces.reports import MethodsText

#: Methods text, filled from the sidecar of the F map.
METHODS = MethodsText(
    "A univariate one-way ANOVA F-test across the conditions was computed at every voxel "
    "(the statistic of scikit-learn's f_classif [@sklearn]; {DegreesOfFreedom} degrees of "
    "freedom).",
    describes={"desc": "anova", "suffix": "statmap", "stat": "F"},
)


def init_ftest_wf(*, name="ftest_wf"):
    """
    Voxel-wise one-way ANOVA across the conditions of the samples.

    The statistic is the one of :func:`sklearn.feature_selection.f_classif`,
    vectorised; p-values are upper-tail F probabilities (not -log10).

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.ftest import init_ftest_wf
            wf = init_ftest_wf()

    Parameters
    ----------
    name : str
        Workflow name.

    Inputs
    ------
    data_file
        Cleaned samples (.npy) from :func:`~mvpa_flows.workflows.prepare.init_prepare_wf`.
    samples_file
        Sample table with the labels.
    mask_file
        Analysis mask.

    Outputs
    -------
    f_map
        F statistic map (NIfTI).
    p_map
        p-value map (NIfTI).
    metadata
        Test description (degrees of freedom, labels) for the sidecars.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    workflow.__desc__ = METHODS
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["data_file", "samples_file", "mask_file"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["f_map", "p_map", "metadata"]), name="outputnode"
    )
    ftest = pe.Node(FTest(), name="ftest")
    workflow.connect([
        (inputnode, ftest, [
            ("data_file", "data_file"),
            ("samples_file", "samples_file"),
            ("mask_file", "mask_file"),
        ]),
        (ftest, outputnode, [
            ("f_map", "f_map"),
            ("p_map", "p_map"),
            ("metadata", "metadata"),
        ]),
    ])  # fmt:skip
    return workflow
