"""Report figures inside the workflows (``ds_report_*`` sinks) and the methods they carry."""

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mvpa_flows.interfaces.bids import DerivativesDataSink
from mvpa_flows.interfaces.reports import (
    BSCFigure,
    DesignFigure,
    ISCFigure,
    MeanImage,
    PValueMapFigure,
    ScoreMapFigure,
    SearchlightChart,
    StatMapFigure,
)


def methods_of(workflow):
    """The methods texts (``__desc__``) of ``workflow`` and its sub-workflows, in graph order.

    Like niworkflows' ``LiterateWorkflow.visit_desc``: a workflow's own text (one, or a
    list) comes first, then those of the workflows it contains; a text met twice is kept
    once.
    """
    from nipype.pipeline.engine import Workflow
    from nipype.pipeline.engine.utils import topological_sort

    own = getattr(workflow, "__desc__", None) or []
    texts = list(own) if isinstance(own, (list, tuple)) else [own]
    for node in topological_sort(workflow._graph)[0]:
        if isinstance(node, Workflow):
            texts += [t for t in methods_of(node) if t not in texts]
    return texts


def _figure_sink(name, output_dir, dataset_links, entities, description):
    return pe.Node(
        DerivativesDataSink(
            base_directory=str(output_dir),
            entities={**entities, "suffix": "figure", "extension": ".svg"},
            dataset_links=dict(dataset_links or {}),
            metadata={"Description": description},
        ),
        name=name,
        run_without_submitting=True,
    )


def _first(files):
    return files[0] if isinstance(files, list) else files


def _add_figure(workflow, plot, sink, inputnode, wiring, metadata="metadata"):
    """Connect a figure node to its sink: file, caption facts, sources and contrast."""
    facts = pe.Node(niu.Merge(2), name=f"{plot.name}_facts")
    workflow.connect([
        (inputnode, plot, wiring),
        (inputnode, facts, [(metadata, "in1")]),
        (plot, facts, [(("facts", _listify), "in2")]),
        (plot, sink, [("out_file", "in_file")]),
        (facts, sink, [(("out", _flatten), "extra_metadata")]),
        (inputnode, sink, [("source_files", "source_files"), ("contrast", "contrast")]),
    ])  # fmt:skip


def _listify(value):
    return [value]


def _flatten(values):
    out = []
    for value in values:
        out.extend(value if isinstance(value, list) else [value])
    return out


def init_searchlight_report_wf(
    *,
    output_dir,
    stat="accuracy",
    dataset_links=None,
    n_permutations=0,
    name="searchlight_report_wf",
):
    """
    Figures of one subject's searchlight, stored under ``sub-<label>/figures/``.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.reports import init_searchlight_report_wf
            wf = init_searchlight_report_wf(output_dir=".", n_permutations=10)

    Parameters
    ----------
    output_dir : str
        Derivatives root.
    stat : str
        ``stat-`` entity of the score map (accuracy, balancedAccuracy, auc).
    dataset_links : dict or None
        Dataset name -> root, for the sidecars' BIDS URIs.
    n_permutations : int
        Label permutations of the run (> 0 adds the p-value map and the null).
    name : str
        Workflow name.

    Inputs
    ------
    score_map, p_map
        The searchlight maps (``p_map`` with permutations).
    mean_bold
        The subject's mean EPI (background).
    metadata
        Metadata of the maps (list of dicts, merged in order).
    source_files
        Inputs of the maps (they name the figures).
    contrast
        The ``contrast-`` entity.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["score_map", "p_map", "mean_bold", "metadata", "source_files", "contrast"]
        ),
        name="inputnode",
    )
    first = pe.Node(niu.Function(function=_first, output_names=["out"]), name="first_source")
    workflow.connect([(inputnode, first, [("source_files", "files")])])
    score = pe.Node(ScoreMapFigure(), name="plot_score")
    workflow.connect([(first, score, [("out", "source_file")])])
    sink = _figure_sink(
        "ds_report_searchlight",
        output_dir,
        dataset_links,
        {"desc": "searchlight", "stat": stat},
        "Searchlight score map over the mean EPI.",
    )
    _add_figure(
        workflow,
        score,
        sink,
        inputnode,
        [("score_map", "score_map"), ("mean_bold", "bg_file"), ("metadata", "metadata")],
    )
    charts = ["spheresizes", "folds"] + (["null"] if n_permutations > 0 else [])
    for kind in charts:
        chart = pe.Node(SearchlightChart(kind=kind), name=f"plot_{kind}")
        sink = _figure_sink(
            f"ds_report_{kind}",
            output_dir,
            dataset_links,
            {"desc": kind},
            f"Searchlight chart: {kind}.",
        )
        _add_figure(workflow, chart, sink, inputnode, [("metadata", "metadata")])
    if n_permutations > 0:
        pmap = pe.Node(PValueMapFigure(title="Searchlight permutation -log10 p"), name="plot_p")
        workflow.connect([(first, pmap, [("out", "source_file")])])
        sink = _figure_sink(
            "ds_report_searchlight_p",
            output_dir,
            dataset_links,
            {"desc": "searchlight", "stat": "p"},
            "Searchlight permutation p-values (-log10) over the mean EPI.",
        )
        _add_figure(
            workflow,
            pmap,
            sink,
            inputnode,
            [("p_map", "p_map"), ("mean_bold", "bg_file"), ("metadata", "metadata")],
        )
    return workflow


def init_betas_report_wf(*, output_dir, dataset_links=None, name="betas_report_wf"):
    """
    Figures of one subject's trial-wise design: the first run's design matrix and the
    correlation between neighbouring trials' regressors.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.reports import init_betas_report_wf
            wf = init_betas_report_wf(output_dir=".")

    Parameters
    ----------
    output_dir : str
        Derivatives root.
    dataset_links : dict or None
        Dataset name -> root, for the sidecars' BIDS URIs.
    name : str
        Workflow name.

    Inputs
    ------
    design_file, trials_file
        The runs' design matrices and trial tables (the first run's are drawn).
    metadata
        The runs' betaseries metadata (list of dicts; the first run's fills captions).
    source_files
        Inputs of the samples (the first names the figures and the run drawn).
    contrast
        The ``contrast-`` entity.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["design_file", "trials_file", "metadata", "source_files", "contrast"]
        ),
        name="inputnode",
    )
    first = pe.Node(niu.Function(function=_first, output_names=["out"]), name="first_source")
    first_meta = pe.Node(niu.Function(function=_first, output_names=["out"]), name="first_meta")
    workflow.connect([
        (inputnode, first, [("source_files", "files")]),
        (inputnode, first_meta, [("metadata", "files")]),
    ])  # fmt:skip
    for kind, description in (
        ("design", "Design matrix of the first run's trial-wise GLM."),
        ("collinearity", "Correlation of neighbouring trials' regressors in the first run."),
    ):
        plot = pe.Node(DesignFigure(kind=kind), name=f"plot_{kind}")
        sink = _figure_sink(f"ds_report_{kind}", output_dir, dataset_links, {"desc": kind},
                            description)  # fmt:skip
        facts = pe.Node(niu.Merge(2), name=f"plot_{kind}_facts")
        workflow.connect([
            (inputnode, plot, [("design_file", "design_file"), ("trials_file", "trials_file")]),
            (first, plot, [("out", "source_file")]),
            (first_meta, facts, [(("out", _listify), "in1")]),
            (plot, facts, [(("facts", _listify), "in2")]),
            (plot, sink, [("out_file", "in_file")]),
            (facts, sink, [(("out", _flatten), "extra_metadata")]),
            (inputnode, sink, [("source_files", "source_files"), ("contrast", "contrast")]),
        ])  # fmt:skip
    return workflow


def init_ftest_report_wf(*, output_dir, dataset_links=None, name="ftest_report_wf"):
    """
    Figures of one subject's F-test: -log10 p and F over the mean EPI.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.reports import init_ftest_report_wf
            wf = init_ftest_report_wf(output_dir=".")

    Parameters
    ----------
    output_dir : str
        Derivatives root.
    dataset_links : dict or None
        Dataset name -> root, for the sidecars' BIDS URIs.
    name : str
        Workflow name.

    Inputs
    ------
    f_map, p_map
        The F-test maps.
    mean_bold
        The subject's mean EPI (background).
    metadata
        Metadata of the maps (list of dicts).
    source_files
        Inputs of the maps (they name the figures).
    contrast
        The ``contrast-`` entity.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["f_map", "p_map", "mean_bold", "metadata", "source_files", "contrast"]
        ),
        name="inputnode",
    )
    first = pe.Node(niu.Function(function=_first, output_names=["out"]), name="first_source")
    pmap = pe.Node(PValueMapFigure(title="F-test: -log10 p (clipped at 10)"), name="plot_p")
    fmap = pe.Node(StatMapFigure(title="F statistic"), name="plot_f")
    workflow.connect([
        (inputnode, first, [("source_files", "files")]),
        (first, pmap, [("out", "source_file")]),
        (first, fmap, [("out", "source_file")]),
    ])  # fmt:skip
    for plot, stat, wiring in (
        (pmap, "p", [("p_map", "p_map"), ("mean_bold", "bg_file"), ("metadata", "metadata")]),
        (fmap, "F", [("f_map", "stat_map"), ("mean_bold", "bg_file")]),
    ):
        sink = _figure_sink(f"ds_report_anova_{stat}", output_dir, dataset_links,
                            {"desc": "anova", "stat": stat},
                            f"F-test figure ({stat}) over the mean EPI.")  # fmt:skip
        _add_figure(workflow, plot, sink, inputnode, wiring)
    return workflow


def init_group_searchlight_report_wf(
    *, output_dir, dataset_links=None, name="group_searchlight_report_wf"
):
    """
    Figures of the group searchlight: t and FWE -log10 p over the subjects' mean EPI.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.reports import init_group_searchlight_report_wf
            wf = init_group_searchlight_report_wf(output_dir=".")

    Parameters
    ----------
    output_dir : str
        Derivatives root.
    dataset_links : dict or None
        Dataset name -> root, for the sidecars' BIDS URIs.
    name : str
        Workflow name.

    Inputs
    ------
    t_map, p_map
        Group maps.
    mean_bold
        The subjects' mean EPIs (averaged into the background).
    metadata
        Metadata of the group test (list of dicts).
    source_files
        The group maps (they name the figures).
    contrast
        The ``contrast-`` entity.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["t_map", "p_map", "mean_bold", "metadata", "source_files", "contrast"]
        ),
        name="inputnode",
    )
    background = pe.Node(MeanImage(), name="mean_background")
    bg = pe.Node(niu.IdentityInterface(fields=["bg_file"]), name="background")
    first = pe.Node(niu.Function(function=_first, output_names=["out"]), name="first_source")
    tmap = pe.Node(StatMapFigure(title="Group t against chance", signed=True), name="plot_t")
    pmap = pe.Node(PValueMapFigure(title="Group FWE-corrected -log10 p"), name="plot_p")
    workflow.connect([
        (inputnode, background, [("mean_bold", "in_files")]),
        (background, bg, [("out_file", "bg_file")]),
        (inputnode, first, [("source_files", "files")]),
        (first, tmap, [("out", "source_file")]),
        (first, pmap, [("out", "source_file")]),
        (bg, tmap, [("bg_file", "bg_file")]),
        (bg, pmap, [("bg_file", "bg_file")]),
    ])  # fmt:skip
    for plot, stat, wiring in (
        (tmap, "t", [("t_map", "stat_map")]),
        (pmap, "p", [("p_map", "p_map"), ("metadata", "metadata")]),
    ):
        sink = _figure_sink(f"ds_report_group_{stat}", output_dir, dataset_links,
                            {"desc": "searchlightgroup", "stat": stat},
                            f"Group searchlight figure ({stat}).")  # fmt:skip
        _add_figure(workflow, plot, sink, inputnode, wiring)
    return workflow


def init_bsc_report_wf(
    *, output_dir, dataset_links=None, desc="bsc", isc_desc=None, name="bsc_report_wf"
):
    """
    Figure of between-subject classification, stored under ``figures/``.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from mvpa_flows.workflows.reports import init_bsc_report_wf
            wf = init_bsc_report_wf(output_dir=".")

    Parameters
    ----------
    output_dir : str
        Derivatives root.
    dataset_links : dict or None
        Dataset name -> root, for the sidecars' BIDS URIs.
    desc : str
        ``desc-`` of the figure (the table's: ``bsc``, or ``bscmapped`` for new subjects).
    isc_desc : str or None
        ``desc-`` of a figure of the inter-subject correlation before and after
        alignment (None: no such figure).
    name : str
        Workflow name.

    Inputs
    ------
    scores_file
        Between-subject classification table.
    isc_anatomical, isc_aligned, isc_metadata
        Group ISC maps and their metadata (with ``isc_desc``).
    metadata
        Its metadata (list of dicts).
    base_entities
        Entities of the group outputs (task, space).
    source_files
        Inputs of the table.
    """
    from nipype.pipeline.engine import Workflow

    workflow = Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["scores_file", "metadata", "base_entities",
                                      "source_files", "contrast", "isc_anatomical",
                                      "isc_aligned", "isc_metadata"]),
        name="inputnode",
    )  # fmt:skip
    plot = pe.Node(BSCFigure(), name="plot_bsc")
    sink = _figure_sink(
        "ds_report_bsc",
        output_dir,
        dataset_links,
        {"desc": desc},
        "Between-subject classification accuracy per subject.",
    )
    workflow.connect([(inputnode, sink, [("base_entities", "base_entities")])])
    _add_figure(workflow, plot, sink, inputnode, [("scores_file", "scores_file")])
    if isc_desc:
        plot_isc = pe.Node(ISCFigure(), name="plot_isc")
        sink_isc = _figure_sink(
            "ds_report_isc",
            output_dir,
            dataset_links,
            {"desc": isc_desc},
            "Voxel-wise inter-subject correlation before and after alignment.",
        )
        workflow.connect([(inputnode, sink_isc, [("base_entities", "base_entities")])])
        _add_figure(
            workflow,
            plot_isc,
            sink_isc,
            inputnode,
            [("isc_anatomical", "isc_anatomical"), ("isc_aligned", "isc_aligned")],
            metadata="isc_metadata",
        )
    return workflow
