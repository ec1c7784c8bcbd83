"""Searchlight decoding maps, split in chunks of spheres for clusters."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.reports import MethodsText
from mvpa_flows.interfaces.searchlight import STAT_LABELS, MergeSearchlight, SearchlightChunk

#: Methods text, filled from the sidecars of the score maps.
METHODS = MethodsText(
    "Searchlight decoding [@searchlight; @haxby2001] used spheres of {Radius} radius (every "
    "mask voxel whose centre lies within the radius: {SphereSize}), the {EstimatorDefinition} "
    "classifier of scikit-learn [@sklearn] computed by {Engine}, and {CrossValidation} "
    "cross-validation ({NumberOfFolds} folds), scored by {Scoring} (chance level "
    "{ChanceLevel})[[; voxel-wise p-values came from {NumberOfPermutations} permutations of "
    "the labels within runs]].",
    describes={"desc": "searchlight", "suffix": "statmap", "stat": list(STAT_LABELS.values())},
)


def init_searchlight_wf(
    *,
    radius=5.6,
    estimator="svc",
    cv="loro",
    scoring="accuracy",
    n_permutations=0,
    random_seed=None,
    process_mask=None,
    n_chunks=1,
    n_jobs=1,
    verbose=0,
    name="searchlight_wf",
):
    """
    Cross-validated decoding in a sphere around every voxel.

    The spheres (every mask voxel within ``radius`` mm of the centre, as in
    nilearn's SearchLight) are split into ``n_chunks`` chunks computed by a MapNode, so
    a cluster plugin (SLURM, SGE) spreads one subject over several jobs; the merge is
    identical to an unchunked run, bit for bit.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.searchlight import init_searchlight_wf
            wf = init_searchlight_wf(n_chunks=4)

    Parameters
    ----------
    radius : float
        Sphere radius in mm.
    estimator : str
        'svc', 'gnb', 'lda', 'logistic', 'ridge' or 'correlation'.
    cv : str
        'loro' (leave one run out) or 'kfold:N'.
    scoring : str
        'accuracy', 'balanced_accuracy' or 'roc_auc'.
    n_permutations : int
        Label permutations within runs for p-values (0: none).
    random_seed : int or None
        Seed of permutations and estimators.
    process_mask : str or None
        Mask restricting the sphere centres.
    n_chunks : int
        Chunks of spheres, each a separate node.
    n_jobs : int
        Worker processes inside each chunk node.
    verbose : int
        Print "spheres done / total, ETA" to the terminal when > 0.
    name : str
        Workflow name.

    Inputs
    ------
    data_file
        Cleaned samples (.npy).
    samples_file
        Sample table (runs are the CV groups).
    mask_file
        Analysis mask.

    Outputs
    -------
    score_map
        Score per sphere centre.
    p_map
        Permutation p-values (with permutations).
    stat
        The stat- entity of the score map.
    metadata
        Parameters and summaries for the sidecars.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    workflow.__desc__ = METHODS
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["data_file", "samples_file", "mask_file"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["score_map", "p_map", "stat", "metadata"]),
        name="outputnode",
    )
    params = dict(
        radius=radius, estimator=estimator, random_seed=random_seed, process_mask=process_mask
    )
    chunks = pe.MapNode(
        SearchlightChunk(
            cv=cv,
            scoring=scoring,
            n_permutations=n_permutations,
            n_chunks=n_chunks,
            n_jobs=n_jobs,
            verbose=verbose,
            **params,
        ),
        iterfield=["chunk_index"],
        name="searchlight_chunks",
        n_procs=n_jobs,
    )
    chunks.inputs.chunk_index = list(range(n_chunks))
    merge = pe.Node(MergeSearchlight(**params), name="merge_searchlight")
    workflow.connect([
        (inputnode, chunks, [("data_file", "data_file"),
                             ("samples_file", "samples_file"),
                             ("mask_file", "mask_file")]),
        (inputnode, merge, [("mask_file", "mask_file"), ("samples_file", "samples_file")]),
        (chunks, merge, [("result_file", "result_files")]),
        (merge, outputnode, [("score_map", "score_map"), ("p_map", "p_map"),
                             ("stat", "stat"), ("metadata", "metadata")]),
    ])  # fmt:skip
    return workflow
