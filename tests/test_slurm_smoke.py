"""Smoke tests of the local SLURM cluster fixture: the scheduler does what the wrappers rely on.

Each test submits tiny jobs to the session's one-node cluster (tests/slurm_cluster.py) and checks
the result the way a user would: output files, `scontrol show job`, `sinfo`, `squeue`.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import slurm_cluster as slurm_cluster_module
from slurm_cluster import (
    SlurmCluster,
    SlurmStartError,
    SlurmUnavailable,
    ensure_installed,
    parse_records,
    start_or_skip,
)

slurm = pytest.mark.slurm  # the tests that need the running cluster


def job_record(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    records = cluster.jobs(job_id)
    assert len(records) == 1, records
    return records[0]


def mem_total_mb() -> int:
    """MemTotal of /proc/meminfo in MiB: what slurmd -C calls RealMemory, read independently."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def processes_with_env(entry: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds `entry` (e.g. SLURM_JOB_ID=5)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if entry.encode() in environ and state != b"Z":
            found.append(int(name))
    return found


@slurm
def test_node_is_idle_with_the_machines_cpus_and_memory(slurm_cluster):
    out = slurm_cluster.run(["sinfo", "-h", "-N", "-o", "%N %T %c %m %P"]).stdout.split()
    node, state, cpus, memory, partition = out
    assert node == slurm_cluster.node
    assert state == "idle"
    assert int(cpus) == os.cpu_count()
    # slurmd -C rounds MemTotal down; allow a sliver for its arithmetic.
    assert abs(int(memory) - mem_total_mb()) <= max(16, mem_total_mb() // 100)
    assert partition == f"{slurm_cluster.partition}*"  # the default partition


@slurm
def test_wrap_job_runs_and_writes_its_output(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(
        [
            "--cpus-per-task=1",
            "--mem=100M",
            "-o",
            str(tmp_path / "out-%j.txt"),
            "--wrap",
            "echo hello from $SLURM_JOB_ID on $SLURMD_NODENAME",
        ],
        cwd=tmp_path,
    )
    assert slurm_cluster.wait_for_jobs([job]) == {job: "COMPLETED"}
    text = (tmp_path / f"out-{job}.txt").read_text()
    assert text == f"hello from {job} on {slurm_cluster.node}\n"
    record = job_record(slurm_cluster, job)
    assert record["ExitCode"] == "0:0"
    assert record["CPUs/Task"] == "1"
    assert record["MinMemoryNode"] == "100M"
    assert "cpu=1" in record["TRES"].split(",")
    assert "mem=100M" in record["TRES"].split(",")


@slurm
def test_job_array_runs_every_task(slurm_cluster, tmp_path):
    before = slurm_cluster.last_job_id()
    job = slurm_cluster.sbatch(
        [
            "--array=0-2",
            "--cpus-per-task=1",
            "--mem=50M",
            "-o",
            str(tmp_path / "task-%a.txt"),
            "--wrap",
            "echo $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_COUNT",
        ],
        cwd=tmp_path,
    )
    states = slurm_cluster.wait_for_jobs([job])
    assert states == {f"{job}_{task}": "COMPLETED" for task in range(3)}
    assert slurm_cluster.jobs_since(before) == [job]  # one array, however many tasks
    for task in range(3):
        assert (tmp_path / f"task-{task}.txt").read_text() == f"{task} {job} 3\n"


@slurm
def test_srun_steps_run_inside_a_batch_job(slurm_cluster, tmp_path):
    before = slurm_cluster.last_job_id()
    job = slurm_cluster.sbatch(
        [
            "--ntasks=2",
            "--mem=100M",
            "-o",
            str(tmp_path / "%j.out"),
            "--wrap",
            "srun --ntasks=2 bash -c 'echo step $SLURM_STEP_ID task $SLURM_PROCID'",
        ],
        cwd=tmp_path,
    )
    assert slurm_cluster.jobs_since(before) == [job]
    assert slurm_cluster.wait_for_jobs([job]) == {job: "COMPLETED"}
    lines = sorted((tmp_path / f"{job}.out").read_text().splitlines())
    assert lines == ["step 0 task 0", "step 0 task 1"]


@slurm
def test_requested_resources_show_in_scontrol(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(
        [
            "--cpus-per-task=2",
            "--mem=300M",
            "--time=00:05:00",
            "--job-name=resources",
            "-o",
            str(tmp_path / "%j.out"),
            "--wrap",
            "true",
        ],
        cwd=tmp_path,
    )
    slurm_cluster.wait_for_jobs([job])
    record = job_record(slurm_cluster, job)
    assert record["JobName"] == "resources"
    assert record["CPUs/Task"] == "2"
    assert record["NumCPUs"] == "2"
    assert record["MinMemoryNode"] == "300M"
    assert record["TimeLimit"] == "00:05:00"
    assert record["Partition"] == slurm_cluster.partition


@slurm
def test_scancel_stops_a_running_job_and_its_processes(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(
        ["--cpus-per-task=1", "--mem=50M", "-o", str(tmp_path / "%j.out"), "--wrap", "sleep 300"],
        cwd=tmp_path,
    )
    slurm_cluster.wait_for_state(job, ["RUNNING"])
    # The job's shell and its sleep carry SLURM_JOB_ID in their environment.
    slurm_cluster.wait_until(lambda: processes_with_env(f"SLURM_JOB_ID={job}"), "job processes")
    slurm_cluster.run(["scancel", job])
    assert slurm_cluster.wait_for_jobs([job], timeout_s=30) == {job: "CANCELLED"}
    slurm_cluster.wait_until(
        lambda: not processes_with_env(f"SLURM_JOB_ID={job}"), "job processes gone", timeout_s=15
    )


@slurm
def test_sbatch_input_variables_override_the_scripts_directives(slurm_cluster, tmp_path):
    # The study's scripts carry #SBATCH defaults for a GPU cluster (tests/test_sweep.py); the
    # tests override them only the SLURM way: SBATCH_* input variables beat #SBATCH lines, and
    # command-line options (how a wrapper passes SBATCH_ARGS) beat both. Slurm 22.05 has no
    # input variable for --cpus-per-task, hence the command line for that one.
    too_many_cpus = slurm_cluster.cpus + 8
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=reprsim_train\n"
        "#SBATCH --gres=gpu:1\n"
        f"#SBATCH --cpus-per-task={too_many_cpus}\n"
        "#SBATCH --mem=26G\n"
        "#SBATCH --time=16:00:00\n"
        "echo ran with $SLURM_CPUS_PER_TASK cpus\n"
    )
    rejected = slurm_cluster.run(["sbatch", "--parsable", str(script)], cwd=tmp_path, check=False)
    assert rejected.returncode != 0, "a GPU request must be refused by a node without GPUs"
    overrides = {
        "SBATCH_GRES": "none",
        "SBATCH_MEM_PER_NODE": "150M",
        "SBATCH_TIMELIMIT": "00:07:00",
        "SBATCH_OUTPUT": str(tmp_path / "%x-%j.out"),
    }
    still_too_big = slurm_cluster.run(
        ["sbatch", "--parsable", str(script)], cwd=tmp_path, env=overrides, check=False
    )
    assert still_too_big.returncode != 0, f"{too_many_cpus} CPUs must not fit on the node"
    job = slurm_cluster.sbatch(["--cpus-per-task=1", str(script)], cwd=tmp_path, env=overrides)
    assert slurm_cluster.wait_for_jobs([job]) == {job: "COMPLETED"}
    record = job_record(slurm_cluster, job)
    assert record["MinMemoryNode"] == "150M"
    assert record["TimeLimit"] == "00:07:00"
    assert record["CPUs/Task"] == "1"
    assert record["JobName"] == "reprsim_train"  # a directive nothing overrode is kept
    assert "gres" not in record.get("TresPerNode", "")
    assert (tmp_path / f"reprsim_train-{job}.out").read_text() == "ran with 1 cpus\n"


@slurm
def test_gres_none_is_accepted_on_the_command_line(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(
        ["--gres=none", "--mem=50M", "-o", str(tmp_path / "%j.out"), "--wrap", "echo ok"],
        cwd=tmp_path,
    )
    assert slurm_cluster.wait_for_jobs([job]) == {job: "COMPLETED"}
    assert (tmp_path / f"{job}.out").read_text() == "ok\n"


def test_outer_slurm_variables_do_not_leak_but_a_tests_own_do(monkeypatch, tmp_path):
    # As if pytest ran inside a job of a real cluster, with a user's sbatch default set.
    monkeypatch.setenv("SLURM_JOB_ID", "999999")
    monkeypatch.setenv("SBATCH_PARTITION", "no-such-partition")
    cluster = SlurmCluster()
    cluster.root = tmp_path  # env only needs the folder; nothing is started
    monkeypatch.setenv("SBATCH_GRES", "none")  # set by the test after the cluster was made
    monkeypatch.setenv("REPRSIM_PROBE", "seen")
    env = cluster.env
    assert "SLURM_JOB_ID" not in env and "SBATCH_PARTITION" not in env
    assert env["SBATCH_GRES"] == "none"
    assert env["REPRSIM_PROBE"] == "seen"
    assert env["SLURM_CONF"] == str(tmp_path / "etc" / "slurm.conf")
    assert env[slurm_cluster_module.MARKER_VAR] == str(tmp_path)


@slurm
def test_a_second_cluster_runs_beside_and_leaves_nothing_behind(slurm_cluster, tmp_path):
    """Another session on this machine: own folder and ports; its stop kills its jobs."""
    second = SlurmCluster()
    try:
        second.start()
        assert second.root != slurm_cluster.root
        assert set(second.ports.values()).isdisjoint(slurm_cluster.ports.values())
        job = second.sbatch(
            ["--mem=50M", "-o", str(tmp_path / "%j.out"), "--wrap", "sleep 300"], cwd=tmp_path
        )
        second.wait_for_state(job, ["RUNNING"])
        root, marker = second.root, second.marker
        assert processes_with_env(marker)  # daemons, slurmstepd and the sleep
    finally:
        second.stop()
    assert processes_with_env(marker) == []
    assert not root.exists()
    # The session's cluster is untouched.
    assert slurm_cluster.run(["sinfo", "-h", "-o", "%T"]).stdout.split() == ["idle"]


@slurm
def test_a_failed_slurm_test_reports_the_cluster_logs(slurm_cluster, tmp_path):
    """Run a failing test in a child pytest: its report must carry slurmctld/slurmd/job logs.

    (The child starts its own cluster; asking for the session's one skips this test exactly
    where no cluster can run.)
    """
    tests_dir = Path(__file__).parent
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tests_dir)!r})\n"
        "from slurm_cluster import pytest_runtest_makereport, slurm_cluster  # noqa\n"
    )
    (tmp_path / "test_fails.py").write_text(
        textwrap.dedent("""\
        def test_fails(slurm_cluster, tmp_path):
            job = slurm_cluster.sbatch(["-o", str(tmp_path / "%j.out"), "--mem=50M",
                                        "--wrap", "echo job-output-marker"], cwd=tmp_path)
            slurm_cluster.wait_for_jobs([job])
            assert False, "deliberate"
    """)
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_fails.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "REPRSIM_REQUIRE_SLURM": "1"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed" in out, out
    assert "SLURM logs" in out, out
    assert "slurmctld.log" in out and "slurmd.log" in out, out
    assert "job-output-marker" in out, out  # the job's output file is among the logs


def test_scontrol_records_parse_with_spaces_in_values():
    line = "JobId=7 JobName=a b Reason=None Command=/x/run.sh --flag TRES=cpu=1,mem=10M"
    (record,) = parse_records(line + "\n\n")
    assert record == {
        "JobId": "7",
        "JobName": "a b",
        "Reason": "None",
        "Command": "/x/run.sh --flag",
        "TRES": "cpu=1,mem=10M",
    }


# ----- where no cluster can be had: skip with the reason, or fail when it is required -----
def no_binaries(monkeypatch, apt_get=None):
    """As if no slurm/munge binary were installed; apt-get is `apt_get` (None: absent)."""
    monkeypatch.setattr(
        slurm_cluster_module, "find_binary", lambda name: apt_get if name == "apt-get" else None
    )


def test_missing_binaries_and_not_root_is_unavailable(monkeypatch):
    no_binaries(monkeypatch, apt_get="/usr/bin/apt-get")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SlurmUnavailable, match="not root"):
        ensure_installed()


def test_missing_binaries_and_no_apt_is_unavailable(monkeypatch):
    no_binaries(monkeypatch)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SlurmUnavailable, match="no apt-get"):
        ensure_installed()


def test_failing_apt_is_unavailable_with_its_message(monkeypatch, tmp_path):
    fake_apt = tmp_path / "apt-get"
    fake_apt.write_text("#!/bin/sh\necho 'E: mirror unreachable' >&2\nexit 100\n")
    fake_apt.chmod(0o755)
    no_binaries(monkeypatch, apt_get=str(fake_apt))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SlurmUnavailable, match=r"exit 100.*mirror unreachable"):
        ensure_installed()


def test_installed_but_not_root_is_unavailable(monkeypatch):
    monkeypatch.setattr(slurm_cluster_module, "find_binary", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cluster = SlurmCluster()
    with pytest.raises(SlurmUnavailable, match="not root"):
        cluster.start()
    assert cluster.root is None and cluster.procs == {}  # nothing was made or started


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({"CI": "", "REPRSIM_REQUIRE_SLURM": ""}, pytest.skip.Exception),
        ({"CI": "true", "REPRSIM_REQUIRE_SLURM": ""}, pytest.fail.Exception),
        ({"CI": "", "REPRSIM_REQUIRE_SLURM": "1"}, pytest.fail.Exception),
        ({"CI": "true", "REPRSIM_REQUIRE_SLURM": "0"}, pytest.skip.Exception),
    ],
)
def test_unavailable_skips_unless_required(monkeypatch, env, outcome):
    for key, value in env.items():
        if value:
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)

    def unavailable(self):
        raise SlurmUnavailable("no apt-get here")

    monkeypatch.setattr(SlurmCluster, "start", unavailable)
    with pytest.raises(outcome, match="no apt-get here"):
        start_or_skip()


def test_a_cluster_that_does_not_start_always_fails(monkeypatch):
    monkeypatch.setenv("REPRSIM_REQUIRE_SLURM", "0")

    def broken(self):
        raise SlurmStartError("slurmd exited with code 1\n===== slurmd.log =====\nfatal: x")

    monkeypatch.setattr(SlurmCluster, "start", broken)
    with pytest.raises(pytest.fail.Exception, match="(?s)did not start.*fatal: x"):
        start_or_skip()
