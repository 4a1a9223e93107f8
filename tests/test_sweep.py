"""`reprsim sweep` and the sweep scripts: task expansion, narrowing, done pairs, launchers.

SLURM is faked here by `sbatch`/`sinfo` scripts on the PATH that record how they were
called (a real cluster is exercised by the SLURM tests); training is faked only in the
local-launcher test, by replacing the image trainer with a recorder (real training runs
in tests/test_train_image.py).
"""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from repr_sim import cli, experiments, kinds, runs, sweep

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TRAIN_FOLDERS = ("train_cifar_ffcv", "train_tinyimagenet_ffcv")

CONFIG = """
kind = "image"
dataset = "cifar10"
split = "dataset"
mode = "constrained"
arch = "resnet18_cifar"
fracs = [0.0, 0.5, 1.0]
seeds = [0, 1]
[recipe]
epochs = 50
batch_size = 512
lr = 0.5
momentum = 0.9
weight_decay = 5e-4
label_smoothing = 0.1
peak_epoch = 10
"""


@pytest.fixture
def config(reprsim_env):
    path = reprsim_env / "exp" / "toy_ds.toml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def mark_done(cfg_path: Path, seed: int, frac: float) -> Path:
    folder = runs.pair_dir(experiments.experiment_dir(kinds.load(cfg_path)), seed, frac)
    folder.mkdir(parents=True)
    runs.mark_done(folder)
    return folder


def fake_slurm(bin_dir: Path, *, sinfo_rc: int = 0) -> Path:
    """`sbatch` recording its arguments (one per line) and cwd; `sinfo` exiting sinfo_rc."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record = bin_dir / "sbatch_calls"
    scripts = {
        "sbatch": f'#!/bin/bash\n{{ echo "cwd=$PWD"; printf "%s\\n" "$@"; echo "--"; }} >> "{record}"\n'
                  'echo "Submitted batch job 42"\n',
        "sinfo": f"#!/bin/bash\nexit {sinfo_rc}\n",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return record


def calls(record: Path) -> list[list[str]]:
    """The recorded sbatch invocations: [cwd, arg, arg, ...] each."""
    if not record.exists():
        return []
    out, current = [], []
    for line in record.read_text().splitlines():
        if line == "--":
            out.append(current)
            current = []
        else:
            current.append(line)
    return out


def env_with(tmp_path, monkeypatch, bin_dir: Path | None, **extra):
    """PATH = the fake SLURM folder (if any) + the venv only; sweep variables reset."""
    monkeypatch.setenv("PATH", os.pathsep.join(([str(bin_dir)] if bin_dir else []) + [str(VENV_BIN)]))
    for key in ("LAUNCHER", "SEEDS", "FRACS", "TRAIN_ARGS", "SBATCH_ARGS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


# ---- planning ------------------------------------------------------------------------------
def test_tasks_expand_seeds_outer_and_narrow(config):
    p = sweep.plan(str(config))
    assert [(t.seed, t.frac) for t in p.tasks] == [(s, f) for s in (0, 1) for f in (0.0, 0.5, 1.0)]
    assert p.pending == p.tasks
    narrowed = sweep.plan(str(config), seeds=[1], fracs=[0.5, 0.25])
    assert [(t.seed, t.frac) for t in narrowed.tasks] == [(1, 0.5), (1, 0.25)]


def test_done_pairs_are_dropped(config):
    mark_done(config, 0, 0.5)
    mark_done(config, 1, 1.0)
    # A started but unfinished pair (no done marker) is still pending.
    runs.pair_dir(experiments.experiment_dir(kinds.load(config)), 1, 0.0).mkdir(parents=True)
    p = sweep.plan(str(config))
    assert [(t.seed, t.frac) for t in p.pending] == [(0, 0.0), (0, 1.0), (1, 0.0), (1, 0.5)]


def test_task_names_are_names_when_found_by_name(reprsim_env):
    p = sweep.plan("cifar10_ds", seeds=[0], fracs=[0.1])
    assert p.tasks == [sweep.Task("cifar10_ds", 0, 0.1)]
    assert p.tasks[0].line() == "cifar10_ds\t0\t0.1\n"


def test_env_narrowing_and_dry_run(config, tmp_path, monkeypatch, capsys):
    env_with(tmp_path, monkeypatch, None, SEEDS="1", FRACS="0.0 1.0", TRAIN_ARGS="--epochs 3")
    mark_done(config, 1, 1.0)
    assert cli.main(["sweep", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "toy_ds: 2 task(s), 1 done, 1 to run"
    assert out[1:] == [f"reprsim train {config} --seed 1 --frac 0.0 --epochs 3"]


def test_bad_sweep_input_is_one_line_exit_2(config, tmp_path, monkeypatch, capsys):
    env_with(tmp_path, monkeypatch, None, SEEDS="one")
    assert cli.main(["sweep", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SEEDS='one'" in err[0]
    env_with(tmp_path, monkeypatch, None)
    assert cli.main(["sweep", str(config), "--fracs", "1.5", "--dry-run"]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    assert cli.main(["sweep", "no_such_experiment"]) == 2
    assert "unknown experiment 'no_such_experiment'" in capsys.readouterr().err
    env_with(tmp_path, monkeypatch, tmp_path / "empty_bin", LAUNCHER="slurm")
    assert cli.main(["sweep", str(config)]) == 2
    assert "`sbatch` is not on the PATH" in capsys.readouterr().err


# ---- launchers -----------------------------------------------------------------------------
def test_launcher_choice(tmp_path, monkeypatch):
    env_with(tmp_path, monkeypatch, tmp_path / "none")
    assert sweep.choose_launcher("auto") == "local"  # no sbatch at all
    fake_slurm(tmp_path / "up", sinfo_rc=0)
    env_with(tmp_path, monkeypatch, tmp_path / "up")
    assert sweep.choose_launcher("auto") == "slurm"
    assert sweep.choose_launcher("local") == "local"
    env_with(tmp_path, monkeypatch, tmp_path / "up", LAUNCHER="local")
    assert sweep.choose_launcher("auto") == "local"
    fake_slurm(tmp_path / "down", sinfo_rc=1)  # sbatch present, controller not answering
    env_with(tmp_path, monkeypatch, tmp_path / "down")
    assert sweep.choose_launcher("auto") == "local"
    env_with(tmp_path, monkeypatch, tmp_path / "down", LAUNCHER="slurm")
    assert sweep.choose_launcher("auto") == "slurm"
    env_with(tmp_path, monkeypatch, tmp_path / "down", LAUNCHER="cloud")
    with pytest.raises(ValueError, match="LAUNCHER='cloud'"):
        sweep.choose_launcher("auto")


def test_local_launcher_runs_pending_tasks_through_reprsim_train(config, tmp_path, monkeypatch):
    from repr_sim.kinds.image import train as image

    seen = []

    def fake_train_pair(cfg, seed, frac, *, device=None):
        seen.append((seed, frac, cfg["recipe"]["epochs"], cfg["recipe"]["batch_size"]))
        folder = runs.pair_dir(experiments.experiment_dir(cfg), seed, frac)
        folder.mkdir(parents=True, exist_ok=True)
        runs.mark_done(folder)
        return folder

    monkeypatch.setattr(image, "train_pair", fake_train_pair)
    env_with(tmp_path, monkeypatch, None, LAUNCHER="local", FRACS="0.0 0.5")
    mark_done(config, 0, 0.5)
    args = ["sweep", str(config), "--train-args", "--epochs 2 --batch-size 8"]
    assert cli.main(args) == 0
    assert seen == [(0, 0.0, 2, 8), (1, 0.0, 2, 8), (1, 0.5, 2, 8)]
    seen.clear()
    assert cli.main(args) == 0  # everything done now: nothing runs again
    assert seen == []


def test_local_launcher_keeps_going_after_a_failed_task(config, tmp_path, monkeypatch, capsys):
    from repr_sim.kinds.image import train as image

    def fails_on_seed_0(cfg, seed, frac, *, device=None):
        if seed == 0:
            raise ValueError("boom")
        folder = runs.pair_dir(experiments.experiment_dir(cfg), seed, frac)
        folder.mkdir(parents=True, exist_ok=True)
        runs.mark_done(folder)

    monkeypatch.setattr(image, "train_pair", fails_on_seed_0)
    env_with(tmp_path, monkeypatch, None, LAUNCHER="local", FRACS="0.0")
    assert cli.main(["sweep", str(config)]) == 1
    err = capsys.readouterr().err
    assert "boom" in err and "1 of 2 task(s) failed" in err
    assert runs.is_done(runs.pair_dir(experiments.experiment_dir(kinds.load(config)), 1, 0.0))


def test_slurm_launcher_submits_one_array_per_experiment(config, tmp_path, monkeypatch, capsys):
    record = fake_slurm(tmp_path / "bin")
    env_with(tmp_path, monkeypatch, tmp_path / "bin", SBATCH_ARGS="--cpus-per-task=4 --qos=low",
             TRAIN_ARGS="--epochs 2 --set recipe.peak_epoch=1")
    mark_done(config, 0, 0.0)
    script = tmp_path / "folder" / "run_train.sh"
    script.parent.mkdir()
    shutil.copy(REPO / "train_cifar_ffcv" / "run_train.sh", script)
    log_dir = tmp_path / "folder" / "log_dir"
    code = cli.main(["sweep", str(config), "cifar10_task", "--seeds", "0", "1", "--fracs", "0.0", "1.0",
                     "--sbatch-script", str(script), "--log-dir", str(log_dir)])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("Submitted batch job 42") == 2
    assert (log_dir / "slurm_out").is_dir()

    first, second = calls(record)
    assert first[0] == f"cwd={script.parent}"  # submitted from the script's folder
    task_file = Path(first[first.index(str(script)) + 1])
    assert first[1:] == [
        "--array=0-2", "--cpus-per-task=4", "--qos=low",
        f"--output={log_dir}/slurm_out/%x_%A_%a.out",
        str(script), str(task_file), "--epochs", "2", "--set", "recipe.peak_epoch=1",
    ]
    assert task_file.parent == log_dir / "tasks"
    assert task_file.read_text().splitlines() == [
        f"{config}\t0\t1.0", f"{config}\t1\t0.0", f"{config}\t1\t1.0"]
    assert second[1] == "--array=0-3"
    assert Path(second[second.index(str(script)) + 1]).read_text().splitlines()[0] == "cifar10_task\t0\t0.0"
    # Resources are left to the script's #SBATCH lines and sbatch's SBATCH_* variables.
    for arg in first[1:] + second[1:]:
        for option in ("--gres", "--mem", "--time", "--partition", "--account", "--job-name", "-p", "-A"):
            assert not arg.startswith(option + "=") and arg != option


def test_sbatch_failure_is_one_line(config, tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    fake_slurm(bin_dir)
    (bin_dir / "sbatch").write_text('#!/bin/bash\necho "sbatch: error: invalid partition" >&2\nexit 1\n')
    env_with(tmp_path, monkeypatch, bin_dir, LAUNCHER="slurm")
    script = REPO / "train_cifar_ffcv" / "run_train.sh"
    code = cli.main(["sweep", str(config), "--seeds", "0", "--fracs", "0.0",
                     "--sbatch-script", str(script), "--log-dir", str(tmp_path / "logs")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid partition" in err[0]


def test_wrapper_submits_every_experiment_of_its_folder(reprsim_env, tmp_path):
    """run_train_wrapper.sh with no arguments: one array per configs/*.toml, from a copy of
    the training folder (so the test writes nothing into the repository)."""
    folder = tmp_path / "train_cifar_ffcv"
    shutil.copytree(REPO / "train_cifar_ffcv", folder, ignore=shutil.ignore_patterns("log_dir"))
    record = fake_slurm(tmp_path / "bin")
    env = dict(os.environ, PATH=os.pathsep.join([str(tmp_path / "bin"), str(VENV_BIN), "/usr/bin", "/bin"]),
               SEEDS="0", FRACS="0.0 1.0", SBATCH_ARGS="", TRAIN_ARGS="--epochs 1")
    env.pop("LAUNCHER", None)
    result = subprocess.run(["bash", str(folder / "run_train_wrapper.sh")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    configs = sorted(p.stem for p in (folder / "configs").glob("*.toml"))
    assert len(configs) == 4
    submitted = calls(record)
    assert len(submitted) == len(configs)
    assert result.stdout.count("Submitted batch job 42") == len(configs)
    for call in submitted:
        assert call[1] == "--array=0-1"
        assert call[-4] == str(folder / "run_train.sh") and call[-2:] == ["--epochs", "1"]
    names = sorted(Path(Path(c[-3]).read_text().split("\t")[0]).stem for c in submitted)
    assert names == configs
    assert (folder / "log_dir" / "slurm_out").is_dir()


# ---- the array task body -----------------------------------------------------------------
def run_body(script: Path, task_file: Path, env: dict, *args, task_id: int, cwd: Path):
    env = dict(env, SLURM_ARRAY_TASK_ID=str(task_id))
    return subprocess.run(["bash", str(script), str(task_file), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_array_body_picks_its_task_from_a_spooled_copy(config, reprsim_env, tmp_path):
    """run_train.sh as slurmd runs it: a copy outside the project, SLURM_SUBMIT_DIR set."""
    spool = tmp_path / "spool" / "job42"
    spool.mkdir(parents=True)
    shutil.copy(REPO / "train_cifar_ffcv" / "run_train.sh", spool / "slurm_script")
    task_file = tmp_path / "tasks.tsv"
    task_file.write_text(f"{config}\t0\t0.5\n{config}\t1\t0.0\n")
    mark_done(config, 1, 0.0)
    env = dict(os.environ, SLURM_SUBMIT_DIR=str(REPO / "train_cifar_ffcv"),
               PATH=os.pathsep.join(["/usr/bin", "/bin"]))  # reprsim only via the project's .venv
    done = run_body(spool / "slurm_script", task_file, env, "--epochs", "1", task_id=1, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"task 1: {config} seed 1 frac 0.0" in done.stdout
    assert "already trained, skipping" in done.stdout
    # Task 0 is not done: `reprsim train` really runs, and stops at the missing beton.
    missing = run_body(spool / "slurm_script", task_file, env, task_id=0, cwd=tmp_path)
    assert missing.returncode == 2
    assert "missing beton" in missing.stderr and "write-data cifar10" in missing.stderr
    nothing = run_body(spool / "slurm_script", task_file, env, task_id=5, cwd=tmp_path)
    assert nothing.returncode == 2 and "no task 5" in nothing.stderr
    lost = run_body(spool / "slurm_script", task_file, dict(env, SLURM_SUBMIT_DIR=str(tmp_path)),
                    task_id=0, cwd=tmp_path)
    assert lost.returncode == 2 and "cannot find the project" in lost.stderr


def test_task_option_runs_one_task_of_a_task_file(config, tmp_path, capsys):
    task_file = tmp_path / "tasks.tsv"
    task_file.write_text(f"{config}\t0\t0.5\n")
    mark_done(config, 0, 0.5)
    assert cli.main(["sweep", "--task", "0", "--task-file", str(task_file)]) == 0
    assert "already trained, skipping" in capsys.readouterr().out
    assert cli.main(["sweep", "--task", "3", "--task-file", str(task_file)]) == 2
    assert "there is no task 3" in capsys.readouterr().err
    assert cli.main(["sweep"]) == 2
    assert "name at least one experiment" in capsys.readouterr().err


# ---- the scripts themselves ----------------------------------------------------------------
def test_scripts_carry_the_study_resources_and_no_site_settings():
    for folder in TRAIN_FOLDERS:
        body = (REPO / folder / "run_train.sh").read_text()
        directives = [ln for ln in body.splitlines() if ln.startswith("#SBATCH")]
        assert directives == [
            "#SBATCH --job-name=reprsim_train", "#SBATCH --gres=gpu:1",
            "#SBATCH --cpus-per-task=10", "#SBATCH --mem=26G", "#SBATCH --time=16:00:00"]
        for text in (body, (REPO / folder / "run_train_wrapper.sh").read_text()):
            assert "/work" not in text and "/home" not in text  # no absolute paths
    # One body for both image folders: the copies must not drift apart.
    for name in ("run_train.sh", "run_train_wrapper.sh"):
        assert (REPO / TRAIN_FOLDERS[0] / name).read_bytes() == (REPO / TRAIN_FOLDERS[1] / name).read_bytes()


@pytest.mark.parametrize("name", ["run_train.sh", "run_train_wrapper.sh"])
def test_scripts_have_help(name):
    result = subprocess.run(["bash", str(REPO / "train_cifar_ffcv" / name), "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "SBATCH_" in result.stdout and "#SBATCH" not in result.stdout


def test_spread_seeds_runs_one_pair_per_seed_per_round():
    """The pool's order: experiments in turn, within one the seeds' first fractions, then
    their second ones (pairs of a seed, which may share model A, rarely run together);
    nothing lost or repeated."""
    tasks = [sweep.Task(e, s, f) for e in ("x", "y") for s in (0, 1, 2) for f in (0.0, 0.5, 1.0)]
    order = sweep.spread_seeds(tasks)
    assert sorted(order, key=tasks.index) == tasks
    assert [(t.seed, t.frac) for t in order[:9]] == [
        (0, 0.0), (1, 0.0), (2, 0.0), (0, 0.5), (1, 0.5), (2, 0.5), (0, 1.0), (1, 1.0), (2, 1.0)]
    assert {t.experiment for t in order[:9]} == {"x"} and {t.experiment for t in order[9:]} == {"y"}
    # A narrowed plan (some pairs finished) keeps the rule over what is left.
    left = [sweep.Task("x", 0, 1.0), sweep.Task("x", 1, 0.5), sweep.Task("x", 1, 1.0)]
    assert [(t.seed, t.frac) for t in sweep.spread_seeds(left)] == [(0, 1.0), (1, 0.5), (1, 1.0)]
