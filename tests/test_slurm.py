"""The BIDS-App on a real single-node SLURM cluster (started by ``tests/slurm.py``).

The plugin file, the commands and the array script are read from the README's cluster
section, so the documented commands are the ones run here. Each test checks in the
cluster's job log (``jobcomp/filetxt``) that its nodes ran as SLURM jobs on the node, and
compares the maps with a MultiProc run of the same command, byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

README = REPO / "README.md"
APP = str(Path(sys.executable).parent / "mvpa-flows")
RUN_TIMEOUT = 900


# --------------------------------------------------------------------------------------
# The README's cluster section


def _cluster_section():
    text = README.read_text()
    start = text.index("## Clusters\n")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", _cluster_section(), flags=re.S)


def readme_plugin(plugin="SLURM"):
    """The README's ``slurm.yml``, with ``plugin`` set (``SLURM`` or ``SLURMGraph``)."""
    (block,) = _blocks("yaml")
    settings = yaml.safe_load(block)
    assert settings["plugin"] == "SLURM"
    return {**settings, "plugin": plugin}


def readme_command(level):
    """The README's ``mvpa-flows ... LEVEL ...`` cluster command as an argument list."""
    for block in _blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(command)
            if argv[:1] == ["mvpa-flows"] and argv[3:4] == [level]:
                return argv
    raise AssertionError(f"README's cluster section has no `mvpa-flows ... {level}` command")


def readme_array_script():
    scripts = [b for b in _blocks("bash") if b.startswith("#!/bin/bash\n#SBATCH --array")]
    assert len(scripts) == 1, "README's cluster section should show one SLURM array script"
    return scripts[0]


def substitute(argv, paths):
    """Replace README paths (and ``slurm.yml``) with the test's, whole arguments only."""
    return [str(paths.get(arg, arg)) for arg in argv]


def write_plugin(path, settings):
    path.write_text(yaml.safe_dump(settings))
    return path


# --------------------------------------------------------------------------------------
# Running and checking


def run(argv, **kwargs):
    argv = [APP if argv[0] == "mvpa-flows" else argv[0], *argv[1:]]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False, **kwargs
    )


def jobs_since(cluster, first_id):
    """Finished jobs with an id above ``first_id`` (from the cluster's job log)."""
    return [j for j in cluster.completed_jobs() if int(j["JobId"]) > first_id]


def last_job_id(cluster):
    ids = [int(j["JobId"]) for j in cluster.completed_jobs()] + cluster.queue()
    return max(ids, default=0)


def func_files(out, subject="1"):
    folder = Path(out) / f"sub-{subject}" / "func"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_same_maps(out, reference):
    got, expected = func_files(out), func_files(reference)
    assert sorted(got) == sorted(expected)
    for stat in ("accuracy", "p"):
        assert any(name.endswith(f"stat-{stat}_desc-searchlight_statmap.nii.gz") for name in got)
    different = [name for name in expected if got[name] != expected[name]]
    assert not different, f"differ from the MultiProc run: {different}"


@pytest.fixture(scope="module")
def haxby_paths(haxby_dir, tmp_path_factory):
    """README paths -> this module's; the Haxby slice is read in place (read-only)."""
    root = tmp_path_factory.mktemp("haxby_cluster")
    return {"/data/haxby": haxby_dir, "root": root}


@pytest.fixture(scope="module")
def multiproc_reference(haxby_paths):
    """The README participant command without the plugin and chunks, with MultiProc."""
    root = haxby_paths["root"]
    argv = readme_command("participant")
    i = argv.index("--use-plugin")
    del argv[i : i + 2]
    i = argv.index("--searchlight-chunks")
    del argv[i : i + 2]
    argv = substitute(
        argv,
        {
            "/data/haxby": haxby_paths["/data/haxby"],
            "/data/haxby-mvpa": root / "multiproc",
            "/shared/work/haxby": root / "work-multiproc",
        },
    )
    result = run([*argv, "--nprocs", "2"])
    assert result.returncode == 0, result.stderr
    return root / "multiproc"


def _participant(haxby_paths, name, plugin):
    root = haxby_paths["root"]
    plugin_file = write_plugin(root / f"{name}.yml", plugin)
    argv = substitute(
        readme_command("participant"),
        {
            "/data/haxby": haxby_paths["/data/haxby"],
            "/data/haxby-mvpa": root / name,
            "/shared/work/haxby": root / f"work-{name}",
            "slurm.yml": plugin_file,
        },
    )
    assert "--searchlight-chunks" in argv and argv[argv.index("--searchlight-chunks") + 1] == "4"
    return argv, root / name, root / f"work-{name}"


def _chunk_names(jobs):
    return sorted(j["Name"] for j in jobs if j["Name"].startswith("_searchlight_chunks"))


# --------------------------------------------------------------------------------------
# Without a cluster: the fixture's reasons, and the app's handling of batch jobs


def test_no_daemons_means_a_skip_with_the_reason_or_a_failure_when_required(monkeypatch):
    import slurm

    monkeypatch.setattr(slurm.shutil, "which", lambda exe: None)
    monkeypatch.setattr(slurm.os, "geteuid", lambda: 0)
    cluster, reason = slurm.start_cluster("/nonexistent")
    assert cluster is None
    assert "munged, slurmctld, slurmd" in reason and "apt-get install slurmctld" in reason
    monkeypatch.delenv("MVPA_FLOWS_TEST_REQUIRE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        slurm.unavailable("slurm", reason)
    monkeypatch.setenv("MVPA_FLOWS_TEST_REQUIRE", "container slurm")
    with pytest.raises(pytest.fail.Exception, match="MVPA_FLOWS_TEST_REQUIRE lists 'slurm'"):
        slurm.unavailable("slurm", reason)


def test_job_without_result_gets_a_crash_file(tmp_path):
    """A cancelled or killed batch job: a crash file naming the node and the job id."""
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    from mvpa_flows.cli.execution import _with_job_crash_reports
    from mvpa_flows.interfaces.reports import crash_reports

    node = pe.Node(IdentityInterface(fields=["x"]), name="_chunk0", base_dir=str(tmp_path))
    node.config = {
        "execution": {"crashdump_dir": str(tmp_path / "crash"), "crashfile_format": "txt"}
    }
    settings = {"plugin": "SLURM", "plugin_args": {"sbatch_args": "--partition=normal"}}
    runner = _with_job_crash_reports(settings)["plugin"]
    assert type(runner).__name__ == "SLURMPlugin"  # Nipype derives "SLURM" from it
    assert runner._sbatch_args == "--partition=normal"
    message = "OSError: Job id (7) finished or terminated, but results file does not exist"
    traceback = f"Traceback (most recent call last):\n  File x, line 1\n{message}\n"
    crash = runner._report_crash(node, result={"result": None, "traceback": traceback})
    assert Path(crash).parent == tmp_path / "crash"
    ((name, error, path),) = crash_reports(tmp_path / "crash")
    assert name.endswith("_chunk0") and error == message and str(path) == crash
    # plugins that run nodes themselves are passed through unchanged
    multiproc = {"plugin": "MultiProc", "plugin_args": {"n_procs": 2}}
    assert _with_job_crash_reports(multiproc) is multiproc


def test_slurmgraph_jobs_carry_the_run_tag(monkeypatch):
    import getpass

    from mvpa_flows.cli.execution import _set_logname, _tag_graph_jobs

    settings = {"plugin": "SLURMGraph", "plugin_args": {"sbatch_args": "--partition=normal"}}
    tag = _tag_graph_jobs(settings)
    assert re.fullmatch(r"mvpa_flows-[0-9a-f]{16}", tag)
    assert settings["plugin_args"]["sbatch_args"] == (
        f"--partition=normal --comment={tag} --kill-on-invalid-dep=yes"
    )
    assert _tag_graph_jobs({"plugin": "SLURMGraph", "plugin_args": {}}) != tag
    slurm = {"plugin": "SLURM", "plugin_args": {"sbatch_args": "-p x"}}
    assert _tag_graph_jobs(slurm) is None and slurm["plugin_args"]["sbatch_args"] == "-p x"
    monkeypatch.setenv("LOGNAME", "")  # unset in cron, CI and many containers
    _set_logname()  # Nipype's SLURM plugin names jobs after $LOGNAME
    assert os.environ["LOGNAME"] == getpass.getuser()


# --------------------------------------------------------------------------------------
# On the cluster


@pytest.mark.slurm
@pytest.mark.shared_data
def test_slurm_plugin_chunks_cancel_and_resume(slurm_cluster, haxby_paths, multiproc_reference):
    """SLURM plugin, 4 chunks: a cancelled chunk fails the run; the rerun resumes."""
    argv, out, work = _participant(haxby_paths, "slurm", readme_plugin("SLURM"))
    first = last_job_id(slurm_cluster)
    proc = subprocess.Popen(
        [APP, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # cancel the first searchlight chunk as soon as it is queued
    cancelled, deadline = None, time.monotonic() + RUN_TIMEOUT
    while cancelled is None and proc.poll() is None and time.monotonic() < deadline:
        for line in slurm_cluster.run("squeue", "-h", "-o", "%A %j").splitlines():
            job_id, name = line.split()
            if name.startswith("_searchlight_chunks0") and int(job_id) > first:
                slurm_cluster.run("scancel", job_id)
                cancelled = job_id
                break
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    assert cancelled, f"no searchlight chunk job was seen in the queue:\n{stderr}"
    assert proc.returncode == 1, stderr
    assert "node _searchlight_chunks0:" in stderr and f"Job id ({cancelled})" in stderr
    crash = re.search(r"\(details: (\S+crash-\S+_searchlight_chunks0-\S+\.txt)\)", stderr)
    assert crash and Path(crash.group(1)).is_file(), stderr

    first_run = jobs_since(slurm_cluster, first)
    states = {j["Name"].split(".")[0]: j["JobState"] for j in first_run}
    assert states["_searchlight_chunks0"] == "CANCELLED"
    assert states["prepare_samples"] == "COMPLETED"
    ran = [j for j in first_run if j["JobState"] == "COMPLETED"]
    assert ran and {j["NodeList"] for j in ran} == {slurm_cluster.node}
    # each chunk was its own job, submitted with the plugin file's sbatch arguments
    assert _chunk_names(first_run) == [f"_searchlight_chunks{i}.root" for i in range(4)]
    assert {j["Partition"] for j in first_run} == {"normal"}
    assert {j["TimeLimit"] for j in first_run} == {"60"}  # minutes: --time=01:00:00
    batch = work / "mvpa_flows_wf" / "batch"
    assert any(batch.glob("slurm-*.out")), "Nipype's SLURM job logs are missing"

    second = last_job_id(slurm_cluster)
    result = run(argv)
    assert result.returncode == 0, result.stderr
    rerun = jobs_since(slurm_cluster, second)
    names = {j["Name"].split(".")[0] for j in rerun}
    assert {j["JobState"] for j in rerun} == {"COMPLETED"}
    # only the cancelled chunk and what depends on it run again
    assert "_searchlight_chunks0" in names
    done_before = {n for n, state in states.items() if state == "COMPLETED"}
    assert not names & done_before, f"resubmitted although cached: {names & done_before}"
    assert_same_maps(out, multiproc_reference)


@pytest.mark.slurm
@pytest.mark.shared_data
def test_slurmgraph_chunks_equal_multiproc(slurm_cluster, haxby_paths, multiproc_reference):
    """SLURMGraph submits the whole graph with dependencies; the app waits for it."""
    argv, out, work = _participant(haxby_paths, "slurmgraph", readme_plugin("SLURMGraph"))
    first = last_job_id(slurm_cluster)
    result = run(argv)
    assert result.returncode == 0, result.stderr
    assert slurm_cluster.queue() == [], "the app returned before its jobs finished"
    jobs = jobs_since(slurm_cluster, first)
    (submit,) = (work / "mvpa_flows_wf" / "batch").glob("submit_jobs.sh")
    submitted = re.findall(r"^(j\d+_\w+)=\$\(sbatch ", submit.read_text(), flags=re.M)
    assert "--dependency=afterok:" in submit.read_text()
    assert "--partition=normal --time=01:00:00 --mem=4G" in submit.read_text()
    assert sorted(j["Name"] for j in jobs) == sorted(submitted)
    assert {j["JobState"] for j in jobs} == {"COMPLETED"}
    assert any("searchlight_chunks" in name for name in submitted)
    assert_same_maps(out, multiproc_reference)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "mvpa_flows"
    assert (out / "sub-1.html").is_file()


@pytest.mark.slurm
@pytest.mark.shared_data
def test_slurmgraph_failing_node_names_it(slurm_cluster, haxby_paths, tmp_path):
    """A node failing in its job: exit 1, the node and its crash file named, queue empty.

    The app reads every input before it submits anything, so the input is damaged after
    submission: the graph is submitted held, one BOLD file is cut short, then the jobs are
    released.
    """
    bids = tmp_path / "haxby"
    subprocess.run(["cp", "-r", str(haxby_paths["/data/haxby"]), str(bids)], check=True)
    bold = next(bids.rglob("*run-01_desc-preproc_bold.nii.gz"))
    settings = readme_plugin("SLURMGraph")
    sbatch_args = settings["plugin_args"]["sbatch_args"]
    settings["plugin_args"] = {**settings["plugin_args"], "sbatch_args": f"{sbatch_args} --hold"}
    plugin_file = write_plugin(tmp_path / "graph.yml", settings)
    work = tmp_path / "work"
    argv = substitute(
        readme_command("participant"),
        {
            "/data/haxby": bids,
            "/data/haxby-mvpa": tmp_path / "out",
            "/shared/work/haxby": work,
            "slurm.yml": plugin_file,
        },
    )
    first = last_job_id(slurm_cluster)
    proc = subprocess.Popen(
        [APP, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    submit = work / "mvpa_flows_wf" / "batch" / "submit_jobs.sh"
    held, deadline = [], time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if submit.is_file():
            expected = len(re.findall(r"\$\(sbatch ", submit.read_text()))
            held = [j for j in slurm_cluster.queue() if j > first]
            if expected and len(held) == expected:
                break
        time.sleep(0.2)
    assert held, f"the graph was never queued:\n{proc.stderr.read() if proc.poll() else ''}"
    bold.chmod(0o644)
    data = bold.read_bytes()
    bold.write_bytes(data[: len(data) // 2])  # header intact, data cut short
    for job_id in held:
        slurm_cluster.run("scontrol", "release", str(job_id))
    _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert result.returncode == 1, result.stderr
    assert "node mvpa_flows_wf.single_subject_1_wf.mvpa_wf.prepare_wf.prepare_samples:" in (
        result.stderr
    )
    assert "EOFError" in result.stderr
    (crash,) = (tmp_path / "out" / "logs" / "crash").glob("crash-*prepare_samples*.txt")
    assert str(crash) in result.stderr
    assert "Compressed file ended" in crash.read_text()
    assert slurm_cluster.queue() == [], "jobs after the failed one were left in the queue"
    states = {j["Name"]: j["JobState"] for j in jobs_since(slurm_cluster, first)}
    assert states[next(n for n in states if "prepare_samples" in n)] == "FAILED"
    assert "CANCELLED" in states.values()  # the jobs that depended on it


@pytest.mark.slurm
@pytest.mark.shared_data
def test_array_script(slurm_cluster, haxby_paths, tmp_path):
    """The README's array script, submitted with sbatch over participants.tsv."""
    script = readme_array_script()
    for old, new in {
        "/data/study-mvpa": tmp_path / "out",
        "/data/study": haxby_paths["/data/haxby"],
        "/shared/work": tmp_path / "work",
    }.items():
        script = script.replace(old, str(new))
    script = script.replace("mvpa-flows ", f"{APP} ", 1)
    script_file = tmp_path / "array.sh"
    script_file.write_text(script)
    first = last_job_id(slurm_cluster)
    # one subject in the Haxby slice: the array's first task only
    slurm_cluster.run(
        "sbatch", "--wait", "--array=1-1", "-o", str(tmp_path / "array-%A_%a.out"),
        str(script_file), timeout=RUN_TIMEOUT,
    )  # fmt: skip
    (job,) = jobs_since(slurm_cluster, first)
    log = next(tmp_path.glob("array-*_1.out")).read_text()
    assert job["JobState"] == "COMPLETED", log
    assert job["ProcCnt"] == "2"  # --cpus-per-task=2
    assert "participant level finished" in log
    maps = sorted(p.name for p in (tmp_path / "out" / "sub-1" / "func").glob("*_statmap.nii.gz"))
    assert any("desc-anova" in m for m in maps) and any("desc-searchlight" in m for m in maps)
    assert (tmp_path / "work" / "study-sub-1" / "mvpa_flows_wf").is_dir()


@pytest.mark.slurm
@pytest.mark.shared_data
def test_group_hyperalignment_on_slurm(slurm_cluster, sherlock_dir, tmp_path):
    """The README group command (Sherlock hyperalignment): SLURM equals one process."""
    plugin_file = write_plugin(tmp_path / "slurm.yml", readme_plugin("SLURM"))
    argv = readme_command("group")
    paths = {"/data/sherlock": sherlock_dir, "slurm.yml": plugin_file}
    first = last_job_id(slurm_cluster)
    result = run(
        substitute(
            argv,
            {
                **paths,
                "/data/sherlock-mvpa": tmp_path / "out",
                "/shared/work/sherlock": tmp_path / "work",
            },
        )
    )
    assert result.returncode == 0, result.stderr
    jobs = jobs_since(slurm_cluster, first)
    names = [j["Name"].split(".")[0] for j in jobs]
    assert sorted(n for n in names if n.startswith("_prepare_timeseries")) == [
        f"_prepare_timeseries{i}" for i in range(6)
    ]
    assert "hyperalign" in names
    assert {j["JobState"] for j in jobs} == {"COMPLETED"}

    i = argv.index("--use-plugin")
    local = substitute(
        [*argv[:i], *argv[i + 2 :], "--nprocs", "1"],
        {
            **paths,
            "/data/sherlock-mvpa": tmp_path / "local",
            "/shared/work/sherlock": tmp_path / "work-local",
        },
    )
    assert run(local).returncode == 0
    out, ref = tmp_path / "out", tmp_path / "local"
    scores = "task-sherlock_space-MNI152NLin6Asym_desc-bsc_scores.tsv"
    results = [scores, *(p.relative_to(ref) for p in sorted(ref.rglob("*.h5")))]
    assert len(results) == 6 + 2  # the scores, six transforms, the common model
    for rel in results:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
    import pandas as pd

    table = pd.read_csv(out / scores, sep="\t")
    assert len(table) == 6 and (table["hyperaligned"] > table["anatomical"]).all()
