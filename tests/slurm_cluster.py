"""A real one-node SLURM cluster for the test suite: munged, slurmctld and slurmd on this machine.

Everything the cluster needs lives in one fresh temporary folder (config, munge key and socket,
state, spool, logs, pid files), the daemons listen on free loopback ports found at start-up, and
every process the cluster started -- daemons, slurmstepd, the jobs' own processes -- is stopped
by process id at the end. Nothing under /etc is written: the only system change is installing
Debian's `slurm-wlm` and `munge` packages with apt-get when they are missing.

Use in tests (the `slurm_cluster` fixture is exposed by conftest.py, session-scoped)::

    @pytest.mark.slurm
    def test_something(slurm_cluster, tmp_path):
        job = slurm_cluster.sbatch(["--wrap", "echo hi"], cwd=tmp_path)
        states = slurm_cluster.wait_for_jobs([job])
        subprocess.run(["squeue"], env=slurm_cluster.env)  # any client command: pass `env`

Where the cluster cannot exist here (not root; no slurm binaries and no apt-get; apt-get
failing) the tests that use it are SKIPPED with the reason. With REPRSIM_REQUIRE_SLURM=1 (the
default when CI=true) those cases FAIL instead, so CI can never pass by skipping them. A cluster
that can be installed but does not come up is always a failure, with the daemons' logs.
When a test that uses the fixture fails, the logs (slurmctld, slurmd, munged, job output files)
are attached to its report by `pytest_runtest_makereport` below (conftest imports it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

# Binaries the cluster needs: daemons and the client commands the tests drive.
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
APT_PACKAGES = ("slurm-wlm", "munge")
# Where Debian installs them; root's PATH may lack the sbin folders in a bare CI shell.
SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
)

# Bounded so that a hung mirror costs minutes, well inside pytest's per-test timeout (900 s).
APT_UPDATE_TIMEOUT_S = 180
APT_INSTALL_TIMEOUT_S = 300
APT_LOCK_TIMEOUT_S = 120  # another apt run (a second test session, `make env`) may hold the lock
START_TIMEOUT_S = 60
STOP_GRACE_S = 10
# Set in the environment of the daemons and of every submission, so every slurmstepd and job
# process inherits it: the finaliser finds leftovers by it without touching another session's.
MARKER_VAR = "REPRSIM_SLURM_CLUSTER"
# Variables describing an outer allocation (pytest started inside a real SLURM job) or a user's
# own sbatch defaults: the cluster's env drops those found when the cluster was made, so they
# never leak into a submission; ones a test sets later (monkeypatch.setenv) are kept.
FOREIGN_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCONTROL_")
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class SlurmUnavailable(Exception):
    """This machine cannot run a SLURM cluster (a reason to skip, not a bug)."""


class SlurmStartError(RuntimeError):
    """The cluster was installable but did not come up: a failure, reported with the logs."""


def require_slurm() -> bool:
    """Whether an unavailable cluster fails the tests instead of skipping them."""
    default = "1" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "0"
    return os.environ.get("REPRSIM_REQUIRE_SLURM", default) == "1"


def find_binary(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if find_binary(name) is None]


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_installed() -> None:
    """Install slurm-wlm and munge with apt-get when a binary is missing (root only).

    Raises SlurmUnavailable with the reason when that is not possible here.
    """
    missing = missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"SLURM binaries missing ({', '.join(missing)}) and not root")
    apt = find_binary("apt-get")
    if apt is None:
        raise SlurmUnavailable(f"SLURM binaries missing ({', '.join(missing)}) and no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SEARCH_PATH}
    lock = f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}"
    steps = [
        ([apt, "-o", lock, "update", "-q"], APT_UPDATE_TIMEOUT_S),
        (
            [apt, "-o", lock, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
            APT_INSTALL_TIMEOUT_S,
        ),
    ]
    for cmd, timeout in steps:
        try:
            done = subprocess.run(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"'{' '.join(cmd)}' took over {timeout} s") from None
        if done.returncode != 0:
            raise SlurmUnavailable(
                f"'{' '.join(cmd)}' failed (exit {done.returncode}): "
                + _tail(done.stdout + done.stderr, 5)
            )
    still = missing_binaries()
    if still:
        raise SlurmUnavailable(f"apt-get installed {APT_PACKAGES} but {still} still missing")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick; a tiny race is retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_hardware() -> dict[str, str]:
    """The node line of `slurmd -C` (CPUs, sockets, cores, threads, RealMemory) as a dict."""
    done = subprocess.run(
        [find_binary("slurmd") or "slurmd", "-C"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("NodeName=")), "")
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    needed = ("CPUs", "RealMemory")
    if done.returncode != 0 or any(key not in fields for key in needed):
        raise SlurmStartError(
            f"'slurmd -C' did not report {needed} (exit {done.returncode}): "
            + _tail(done.stdout + done.stderr, 5)
        )
    return fields


def parse_records(text: str) -> list[dict[str, str]]:
    """`scontrol -o show ...` output: one record a line, `Key=Value` items split on spaces.

    Values never contain spaces in the fields the tests read, except the trailing free-text
    ones (Command, Reason, ...), which are kept whole up to the next ` Key=`.
    """
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # Split before every " Key=" so a value with spaces stays in one piece.
        parts = re.split(r"\s+(?=[A-Za-z][A-Za-z0-9_:/]*=)", line.strip())
        records.append(dict(part.split("=", 1) for part in parts if "=" in part))
    return records


def _die_with_parent() -> None:
    """In a daemon's child process before exec: SIGTERM when the test process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _process_ids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry in fh.read().split(b"\0")
    except OSError:  # gone, or a kernel thread
        return False


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the ppid follows the last ')'.
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid and pid not in seen:
        seen.add(pid)
        pid = _parent(pid) or 0
    return seen


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"  # a zombie is dead, only not reaped


def kill_pids(pids: Iterable[int], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM these processes, wait up to grace_s, then SIGKILL what is left."""
    pids = [pid for pid in pids if _alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class SlurmCluster:
    """A one-node SLURM cluster in a fresh temporary folder; a context manager.

    Attributes once started: `root` (the folder), `conf` (slurm.conf), `env` (a property: the
    environment client commands and wrappers must run with), `node`, `partition`, `cpus`,
    `real_memory_mb`, `ports`, and the log paths `slurmctld_log`, `slurmd_log`, `munged_log`.
    """

    def __init__(self, partition: str = "debug", cluster_name: str = "reprsimtest"):
        self.partition = partition
        self.cluster_name = cluster_name
        self.node = socket.gethostname().split(".")[0]
        self.root: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.startup_s: float | None = None  # seconds start() took (install excluded)
        self.cpus: int | None = None  # the node's, from slurmd -C, once started
        self.real_memory_mb: int | None = None
        self.ports: dict[str, int] = {}
        self.foreign = {k: v for k, v in os.environ.items() if k.startswith(FOREIGN_PREFIXES)}

    # ----- paths -------------------------------------------------------------------------
    def _path(self, *parts: str) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root.joinpath(*parts)

    @property
    def conf(self) -> Path:
        return self._path("etc", "slurm.conf")

    @property
    def munge_socket(self) -> Path:
        return self._path("munge", "munge.socket")

    @property
    def slurmctld_log(self) -> Path:
        return self._path("log", "slurmctld.log")

    @property
    def slurmd_log(self) -> Path:
        return self._path("log", "slurmd.log")

    @property
    def munged_log(self) -> Path:
        return self._path("log", "munged.log")

    @property
    def marker(self) -> str:
        return f"{MARKER_VAR}={self.root}"

    @property
    def env(self) -> dict[str, str]:
        """os.environ as it is now (so monkeypatched variables count), pointed at this cluster."""
        base = {k: v for k, v in os.environ.items() if self.foreign.get(k) != v}
        return {
            **base,
            "PATH": SEARCH_PATH,
            "SLURM_CONF": str(self.conf),
            MARKER_VAR: str(self.root),
        }

    # ----- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, attempts: int = 2) -> None:
        """Install if needed, write the config, start the daemons, wait for an idle node.

        Raises SlurmUnavailable (skip) or SlurmStartError (fail, message holds the logs).
        """
        ensure_installed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("not root: slurmd must run as root to launch jobs")
        began = time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                break
            except SlurmStartError as err:
                logs = self.format_logs()
                self.stop()
                # A port taken between our pick and the daemon's bind: pick new ones once.
                if attempt < attempts and "Address already in use" in logs:
                    continue
                raise SlurmStartError(f"{err}\n{logs}") from None
            except BaseException:
                self.stop()  # whatever went wrong, leave no daemon behind
                raise
        self.startup_s = time.monotonic() - began

    def _start_once(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="reprsim-slurm-"))
        # munged insists that everyone can traverse the folders above its socket.
        self.root.chmod(0o755)
        for sub in ("etc", "munge", "state", "spool", "log", "run", "jobs"):
            self._path(sub).mkdir()
            self._path(sub).chmod(0o755)
        hardware = node_hardware()
        self.cpus = int(hardware["CPUs"])
        self.real_memory_mb = int(hardware["RealMemory"])
        self.ports = {"slurmctld": free_port(), "slurmd": free_port()}
        while self.ports["slurmd"] == self.ports["slurmctld"]:
            self.ports["slurmd"] = free_port()
        self._write_config(hardware)
        self._start_munged()
        self._start_daemon("slurmctld", ["-D", "-f", str(self.conf)])
        self._wait_for("slurmctld answering", self._controller_answers)
        self._start_daemon("slurmd", ["-D", "-f", str(self.conf), "-N", self.node])
        self._wait_for(f"node {self.node} idle", self._node_idle)

    def _write_config(self, hardware: dict[str, str]) -> None:
        # The hardware fields slurmd -C reports, so slurmd never finds less than configured
        # (it would drain the node as "Low RealMemory" / "Low socket*core*thread count").
        topology = " ".join(
            f"{key}={hardware[key]}"
            for key in (
                "CPUs",
                "Boards",
                "SocketsPerBoard",
                "CoresPerSocket",
                "ThreadsPerCore",
                "RealMemory",
            )
            if key in hardware
        )
        settings = {
            "ClusterName": self.cluster_name,
            # Loopback address: the cluster never talks over the network.
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": self.ports["slurmctld"],
            "SlurmdPort": self.ports["slurmd"],
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": self._path("state"),
            "SlurmdSpoolDir": self._path("spool"),
            "SlurmctldPidFile": self._path("run", "slurmctld.pid"),
            "SlurmdPidFile": self._path("run", "slurmd.pid"),
            "SlurmctldLogFile": self.slurmctld_log,
            "SlurmdLogFile": self.slurmd_log,
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "PlugStackConfig": self._path("etc", "plugstack.conf"),
            # No cgroups anywhere: containers and CI machines rarely delegate them.
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "JobContainerType": "job_container/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "MpiDefault": "none",
            "MailProg": find_binary("true") or "/bin/true",  # the default is missing here
            "SwitchType": "switch/none",
            "SchedulerType": "sched/backfill",
            # Start batch jobs at once (the default waits up to 3 s to batch submissions).
            "SchedulerParameters": "batch_sched_delay=0",
            # Refuse at submission a job the node can never run (too many CPUs, ...) instead of
            # leaving it pending for ever: a test then fails at once with sbatch's message.
            "EnforcePartLimits": "ALL",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            # Without a default, a job that asks for no memory takes the whole node's.
            "DefMemPerCPU": max(1, self.real_memory_mb // self.cpus),
            "ReturnToService": 2,
            # Finished jobs stay visible to `scontrol show job` for the whole session.
            "MinJobAge": 86400,
            "KillWait": 2,
            "InactiveLimit": 0,
            "SlurmdTimeout": 300,
            "TmpFS": self._path("jobs"),
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines.append(
            f"NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} {topology} "
            "State=UNKNOWN"
        )
        lines.append(
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE "
            "State=UP"
        )
        self.conf.write_text("\n".join(lines) + "\n")
        self._path("etc", "plugstack.conf").write_text("")

    def _start_munged(self) -> None:
        key = self._path("munge", "munge.key")
        # A private key (munged wants >= 32 bytes, owner-only), never /etc/munge/munge.key.
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(1024))
        self._start_daemon(
            "munged",
            [
                "--foreground",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self._path('run', 'munged.pid')}",
                f"--seed-file={self._path('munge', 'munged.seed')}",
                f"--log-file={self.munged_log}",
            ],
            log=self.munged_log,
        )
        self._wait_for("munged answering", self._munge_answers)

    def _start_daemon(self, name: str, args: list[str], log: Path | None = None) -> None:
        """Popen a daemon in the foreground, its console output in log/<name>.console."""
        console = log or self._path("log", f"{name}.console")
        with open(console, "ab") as out:
            self.procs[name] = subprocess.Popen(
                [find_binary(name) or name, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C of pytest reaches the finaliser, not the daemons.
                start_new_session=True,
                # And should pytest itself be killed outright, the daemon gets SIGTERM.
                preexec_fn=_die_with_parent,
            )

    def _wait_for(self, what: str, ready, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmStartError(
                        f"{name} exited with code {proc.returncode} while waiting for {what}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                raise SlurmStartError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.25)

    def _munge_answers(self) -> bool:
        done = self._quiet([find_binary("munge") or "munge", "-n", "-S", str(self.munge_socket)])
        return done is not None and done.returncode == 0

    def _controller_answers(self) -> bool:
        done = self._quiet(["scontrol", "ping"])
        return done is not None and done.returncode == 0 and "UP" in done.stdout

    def _node_idle(self) -> bool:
        done = self._quiet(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"])
        return done is not None and done.returncode == 0 and done.stdout.strip() == "idle"

    def _quiet(self, cmd: list[str]) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(
                cmd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Cancel jobs, stop the daemons and every process left by a job; remove the folder.

        Safe to call more than once and after a failed start. REPRSIM_SLURM_KEEP=1 keeps the
        folder for a post-mortem.
        """
        if self.root is None:
            return
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            # Cancel through the scheduler first, so jobs end the normal way when they can.
            self._quiet(["scancel", "--quiet", f"--partition={self.partition}"])
            with contextlib.suppress(Exception):
                self.wait_for_jobs(timeout_s=STOP_GRACE_S, poll_s=0.25)
        daemons = {name: proc.pid for name, proc in self.procs.items()}
        # slurmd, slurmctld and the jobs' processes first (they still need munged to say
        # goodbye), munged last, then a last sweep for anything reparented meanwhile.
        jobs = [pid for pid in self.leftover_pids() if pid not in daemons.values()]
        kill_pids([daemons[n] for n in ("slurmd", "slurmctld") if n in daemons] + jobs)
        kill_pids([daemons["munged"]] if "munged" in daemons else [])
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        kill_pids(self.leftover_pids(), grace_s=2)
        self.procs = {}
        if os.environ.get("REPRSIM_SLURM_KEEP") != "1":
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def leftover_pids(self) -> list[int]:
        """Processes of this cluster still alive: anything carrying its marker, and children.

        The marker is in every daemon's environment and every job's (sbatch exports the
        submitter's environment), so slurmstepd and job processes are found even once
        reparented. The test process and its ancestors are never included.
        """
        if self.root is None:
            return []
        entry = self.marker.encode()
        spare = _ancestors(os.getpid())
        pids = set()
        for pid in _process_ids():
            if pid in spare:
                continue
            if _environ_has(pid, entry) or (_ancestors(pid) & pids):
                pids.add(pid)
        # A second pass catches children listed before their marked parent.
        for pid in _process_ids():
            if pid not in spare and _ancestors(pid) & pids:
                pids.add(pid)
        return sorted(pids - spare)

    # ----- client helpers ----------------------------------------------------------------
    def run(
        self,
        cmd: list[str],
        *,
        check: bool = True,
        timeout: float = 60,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a client command (sbatch, squeue, ...) against this cluster; text output."""
        done = subprocess.run(
            cmd,
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def sbatch(
        self, args: list[str], *, cwd: str | Path | None = None, env: dict[str, str] | None = None
    ) -> str:
        """Submit with `sbatch --parsable ARGS`; returns the job id."""
        done = self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env)
        return done.stdout.strip().split(";")[0]

    def jobs(self, job_id: str | None = None) -> list[dict[str, str]]:
        """`scontrol show job` records (all jobs, or one job with all its array tasks)."""
        cmd = ["scontrol", "-o", "show", "job"] + ([job_id] if job_id else [])
        done = self.run(cmd, check=False)
        if done.returncode != 0 or "No jobs in the system" in done.stdout:
            return []
        return parse_records(done.stdout)

    def last_job_id(self) -> int:
        """The highest job id slurmctld has handed out so far (0 before the first job)."""
        return max((int(rec.get("JobId", "0")) for rec in self.jobs()), default=0)

    def jobs_since(self, job_id: int) -> list[str]:
        """Ids of the jobs submitted after job `job_id` (an array counts once, by its id).

        For jobs a wrapper submitted: `before = c.last_job_id()`, run it, `c.jobs_since(before)`.
        """
        ids = set()
        for rec in self.jobs():
            if int(rec.get("JobId", "0")) > job_id:
                array = rec.get("ArrayJobId")
                ids.add(array if array and array != "(null)" else rec["JobId"])
        return sorted(ids, key=int)

    def queued(self, job_ids: Iterable[str] | None = None) -> list[str]:
        """squeue lines `id state reason` of jobs still queued (array tasks as id_task)."""
        wanted = set(job_ids) if job_ids is not None else None
        done = self.run(["squeue", "-h", "-o", "%i %F %T %r"])
        lines = []
        for line in done.stdout.splitlines():
            job, array_job, state, reason = [*line.split(maxsplit=3), ""][:4]
            if wanted is None or job in wanted or array_job in wanted:
                lines.append(f"{job} {state} {reason}".strip())
        return lines

    def wait_for_jobs(
        self, job_ids: Iterable[str] | None = None, timeout_s: float = 120, poll_s: float = 0.5
    ) -> dict[str, str]:
        """Poll squeue until these jobs (None: all jobs) left the queue; their final states.

        Returns {job id or "arrayid_task": JobState}. Raises TimeoutError naming what is
        still queued after timeout_s.
        """
        job_ids = list(job_ids) if job_ids is not None else None
        deadline = time.monotonic() + timeout_s
        while True:
            left = self.queued(job_ids)
            if not left:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"still queued after {timeout_s} s: {left}")
            time.sleep(poll_s)
        records = []
        for job_id in job_ids if job_ids is not None else [None]:
            records += self.jobs(job_id)
        return {job_key(rec): rec.get("JobState", "?") for rec in records}

    def wait_for_state(self, job_id: str, states: Iterable[str], timeout_s: float = 60) -> str:
        """Poll until the job (or any task of it) is in one of `states`; returns that state."""
        states = set(states)

        def reached() -> str | None:
            seen = (rec.get("JobState", "?") for rec in self.jobs(job_id))
            return next((state for state in seen if state in states), None)

        return self.wait_until(reached, f"job {job_id} in {sorted(states)}", timeout_s)

    def wait_until(self, predicate, what: str, timeout_s: float = 60, poll_s: float = 0.25):
        """Poll predicate() until it returns something true, and return that (bounded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(poll_s)

    # ----- logs --------------------------------------------------------------------------
    def job_output_files(self, last: int = 20) -> list[Path]:
        """StdOut/StdErr files of the `last` most recent jobs slurmctld knows (anyone's)."""
        if self.root is None or self.procs.get("slurmctld") is None:
            return []
        if self.procs["slurmctld"].poll() is not None:
            return []
        records = sorted(self.jobs(), key=lambda rec: int(rec.get("JobId", "0")))[-last:]
        paths: list[Path] = []
        for rec in records:
            for key in ("StdOut", "StdErr"):
                path = rec.get(key)
                if path and Path(path) not in paths:
                    paths.append(Path(path))
        return paths

    def logs(self) -> dict[str, str]:
        """{name: text} of the daemons' logs and console output and every job output file."""
        if self.root is None:
            return {}
        # A daemon's console repeats its log file; it matters only when the log never opened.
        files = [
            path
            for path in sorted(self._path("log").glob("*"))
            if not (path.suffix == ".console" and _nonempty(path.with_suffix(".log")))
        ]
        with contextlib.suppress(Exception):  # logs must never hide the real failure
            files += self.job_output_files()
        texts = {}
        for path in files:
            with contextlib.suppress(OSError):
                texts[str(path)] = path.read_text(errors="replace")
        return texts

    def format_logs(self, max_lines: int = 200) -> str:
        """All logs as one text, each file's last max_lines lines under a header."""
        parts = []
        for name, text in self.logs().items():
            parts.append(f"===== {name} =====\n{_tail(text, max_lines) if text else '(empty)'}")
        return "\n".join(parts)


def job_key(record: dict[str, str]) -> str:
    """`123` for a plain job, `123_4` for task 4 of array 123 (squeue's notation)."""
    task = record.get("ArrayTaskId")
    if task and task != "(null)":
        return f"{record.get('ArrayJobId')}_{task}"
    return record.get("JobId", "?")


def start_or_skip() -> SlurmCluster:
    """A started cluster; pytest.skip when this machine can't have one (fail if required)."""
    cluster = SlurmCluster()
    try:
        cluster.start()
    except SlurmUnavailable as why:
        message = f"no local SLURM cluster: {why}"
        if require_slurm():
            pytest.fail(f"{message} (REPRSIM_REQUIRE_SLURM=1: not skipping)", pytrace=False)
        pytest.skip(message)
    except SlurmStartError as err:
        pytest.fail(f"local SLURM cluster did not start: {err}", pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node SLURM cluster for the whole session, stopped (by pid) at the end."""
    cluster = start_or_skip()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the cluster's logs to the report of a failed test that used the cluster."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("slurm_cluster")
    if report.failed and isinstance(cluster, SlurmCluster):
        report.sections.append(
            ("SLURM logs (slurmctld, slurmd, munged, jobs)", cluster.format_logs())
        )
    return report
