"""A real single-node SLURM cluster for tests: Debian's munge, slurmctld and slurmd.

The session fixture ``slurm_cluster`` starts ``munged``, ``slurmctld`` and ``slurmd`` in the
foreground (so their process ids are known), each with its own key, socket, ports, state and
logs in a temporary folder, and stops exactly those processes at the end. Several test
sessions on one machine therefore run separate clusters side by side, and nothing in
``/etc/slurm`` or ``/run/munge`` is read or written. Clients (``sbatch``, ``squeue``,
``scancel``, Nipype's SLURM plugins) find the cluster through ``SLURM_CONF``, which the
fixture sets for the session.

The node declares this machine's CPUs and memory as ``slurmd -C`` reads them. Jobs are
recorded by ``jobcomp/filetxt`` (``SlurmCluster.completed_jobs``): the cluster has no
accounting database, so ``sacct`` has nothing to report.

Tests that use the fixture are marked ``slurm``. When the daemons cannot start (not root,
the packages are not installed: ``apt-get install slurmctld slurmd slurm-client munge``)
they are skipped with the reason; when ``MVPA_FLOWS_TEST_REQUIRE`` lists ``slurm`` (CI
does) they fail instead.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "sbatch", "squeue", "scancel")
PARTITION = "normal"
START_TIMEOUT = 60


def required(facility):
    """Whether ``MVPA_FLOWS_TEST_REQUIRE`` (space or comma separated) names ``facility``."""
    wanted = re.split(r"[\s,]+", os.environ.get("MVPA_FLOWS_TEST_REQUIRE", ""))
    return facility in wanted


def unavailable(facility, reason):
    """Skip with ``reason``, or fail when the environment requires ``facility``."""
    if required(facility):
        pytest.fail(f"{reason} (MVPA_FLOWS_TEST_REQUIRE lists {facility!r})", pytrace=False)
    pytest.skip(reason)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_hardware():
    """This machine's ``NodeName=... CPUs=... RealMemory=...`` line from ``slurmd -C``."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    fields = dict(item.split("=", 1) for item in line.split())
    return fields


class SlurmCluster:
    """munged + slurmctld + slurmd on this machine, configured under ``root``."""

    def __init__(self, root):
        self.root = Path(root)
        self.procs = {}
        self.hardware = node_hardware()
        self.node = self.hardware["NodeName"]
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.log"
        self.socket = self.root / "munge" / "munge.socket"
        self.env = {"SLURM_CONF": str(self.conf)}

    # ----------------------------------------------------------------------------------
    def write_config(self):
        munge = self.root / "munge"
        munge.mkdir(mode=0o700, parents=True)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(mode=0o755)
        hw = self.hardware
        node = " ".join(
            f"{k}={hw[k]}"
            for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
            if k in hw
        )
        r = self.root
        self.conf.write_text(
            f"""\
ClusterName=mvpaflows
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "slurmctld.log"}
SlurmdLogFile={r / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
SlurmctldDebug=info
SlurmdDebug=info
NodeName={self.node} NodeAddr=127.0.0.1 {node} RealMemory={hw["RealMemory"]} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (self.root / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")

    def _start(self, name, argv):
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, **self.env}
        self.procs[name] = (
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env),
            log,
        )

    def start(self):
        """Start the three daemons; wait until the node is idle. Raise RuntimeError."""
        self.write_config()
        m = self.root / "munge"
        self._start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
        )
        self._wait(lambda: self.socket.exists(), "munged did not create its socket")
        self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self.idle, f"the node {self.node} did not become idle")

    def _wait(self, ready, what):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            dead = [n for n, (p, _) in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited: {self.logs(dead)}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{what} within {START_TIMEOUT} s: {self.logs(self.procs)}")

    def logs(self, names, tail=15):
        """The last lines each daemon wrote (for error messages)."""
        parts = []
        for name in names:
            for path in (self.root / f"{name}.out", self.root / f"{name}.log"):
                if path.exists() and path.stat().st_size:
                    lines = path.read_text(errors="replace").splitlines()[-tail:]
                    parts.append(f"\n--- {path.name}\n" + "\n".join(lines))
        return "".join(parts)

    def stop(self):
        """Stop the daemons this object started (slurmd, slurmctld, then munged)."""
        for name in reversed(DAEMONS):
            if name not in self.procs:
                continue
            proc, log = self.procs.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()

    # ----------------------------------------------------------------------------------
    def run(self, *argv, check=True, timeout=60):
        """Run a SLURM client command against this cluster; return its stdout."""
        result = subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=timeout
        )
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
        return result.stdout

    def idle(self):
        out = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False)
        return out.strip() == "idle"

    def queue(self):
        """Job ids still pending or running (an array counts once, by its first id)."""
        return [int(j) for j in self.run("squeue", "-h", "-o", "%A").split()]

    def wait_empty(self, timeout=600):
        """Wait until no job is pending or running."""
        deadline = time.monotonic() + timeout
        while self.queue():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {self.queue()} still queued after {timeout} s")
            time.sleep(1)

    def completed_jobs(self):
        """One dict per finished job (JobId, Name, JobState, ExitCode, NodeList, ...)."""
        if not self.jobcomp.exists():
            return []
        jobs = []
        for line in self.jobcomp.read_text().splitlines():
            jobs.append(dict(re.findall(r"(\w+)=(\S*)", line)))
        return jobs


def start_cluster(root):
    """A started :class:`SlurmCluster`, or the reason why none can run here."""
    if os.geteuid() != 0:
        return None, "SLURM daemons run as root here; this test session is not root"
    missing = [exe for exe in DAEMONS + CLIENTS if shutil.which(exe) is None]
    if missing:
        return None, (
            f"{', '.join(missing)} not installed (apt-get install slurmctld slurmd "
            "slurm-client munge)"
        )
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        cluster.stop()
        return None, f"the SLURM daemons did not start: {err}"
    return cluster, None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM cluster; ``SLURM_CONF`` points to it for the session."""
    cluster, reason = start_cluster(tmp_path_factory.mktemp("slurm"))
    if cluster is None:
        unavailable("slurm", reason)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        try:
            for job in cluster.queue():
                cluster.run("scancel", str(job), check=False)
        finally:
            cluster.stop()
            if previous is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous
