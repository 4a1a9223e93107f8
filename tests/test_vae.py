"""The VAE experiments (docs/protocol.md sections 2-3, the study's train_vae/).

Data: tiny CIFAR-10 raw batches in the real format whose images are structured
(generated shapes, so that a VAE has something to learn; random pixels have nothing),
fake MNIST and SVHN raw files, turned into 28x28 betons by `reprsim write-data` exactly as
train_vae/run_write_ffcv_data.sh does. Training and measurement are the real
`reprsim train vae_cifar10_{ds,task}` and `reprsim measure` at 1-4 epochs on the CPU.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from repr_sim import analysis, cli, kinds, models, runs, summary
from repr_sim.data import betons, fake, registry, shapes
from repr_sim.kinds.vae import train as train_vae
from repr_sim.metrics import METRICS
from repr_sim.models.vae import ConvVAE, vae_loss

torch.set_num_threads(1)  # tiny models: one thread is faster than two on a busy machine

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference" / "plotting_results"
DS_HEADER = "seed,metric,frac_overlap,metric_overlap,metric_ood_all_mnist,metric_ood_all_svhn"
TASK_HEADER = ("seed,metric,frac_overlap,metric_overlap,metric_ood_one,metric_ood_all_mnist,"
               "metric_ood_all_svhn")
N_TRAIN, N_TEST = 200, 100
FAST = ["--epochs", "1", "--device", "cpu"]
DS_PAIRS = [(0, 0.0), (0, 1.0), (1, 0.0), (1, 1.0)]
TASK_PAIRS = [(0, 0.0), (0, 0.4), (0, 1.0), (1, 0.4), (1, 0.6)]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- the model (no data) --------------------------------------------------------------------
def test_the_architecture_is_the_studys():
    model = models.build("vae", 10)
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == \
        [(1, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2))]
    assert (model.fc_mu.in_features, model.fc_mu.out_features) == (128 * 7 * 7, 20)
    assert (model.fc_logvar.in_features, model.fc_logvar.out_features) == (128 * 7 * 7, 20)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        recon, mu, logvar = model(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (3, 20)
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1
    assert isinstance(model.decoder[-1], torch.nn.Sigmoid)
    with pytest.raises(ValueError, match="expected images"):
        model.encode(torch.rand(3, 3, 28, 28))


def test_features_are_the_latent_mean():
    torch.manual_seed(0)
    model = ConvVAE().eval()
    x = torch.rand(5, 1, 28, 28)
    feats = model.features(x)
    conv_out = model.encoder(x)  # the mean head applied to the encoder's output
    assert torch.equal(feats, model.fc_mu(conv_out))
    assert not torch.allclose(feats, model.fc_logvar(conv_out))
    assert torch.equal(model.features(x), feats)  # no sampling involved


def test_loss_is_summed_bce_plus_kl():
    torch.manual_seed(1)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    recon = torch.rand(4, 1, 28, 28, dtype=torch.float64).clamp(0.01, 0.99)
    mu, logvar = torch.randn(4, 20, dtype=torch.float64), torch.randn(4, 20, dtype=torch.float64)
    bce = -(x * recon.log() + (1 - x) * (1 - recon).log()).sum()
    # KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2) / 2 - 1/2, per dimension
    s2 = logvar.exp()
    kl = (-0.5 * logvar + (s2 + mu**2) / 2 - 0.5).sum()
    assert float(vae_loss(recon, x, mu, logvar)) == pytest.approx(float(bce + kl), rel=1e-12)
    assert float(vae_loss(recon, x, mu, logvar, beta=0.0)) == pytest.approx(float(bce), rel=1e-12)


def test_grey_is_the_luma_in_unit_range():
    rgb = np.array([[[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 10, 10]]]], np.uint8)
    g = train_vae.grey(rgb)
    assert g.shape == (1, 1, 2, 2)
    expected = np.array([[0.299, 0.587], [0.114, 10 / 255]])
    assert np.allclose(g[0, 0].numpy(), expected, atol=1e-6)


def test_the_shipped_configs_carry_the_study_values():
    for name, fracs in (("vae_cifar10_ds", [round(0.1 * i, 1) for i in range(11)]),
                        ("vae_cifar10_task", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])):
        cfg = kinds.load(name)
        assert (cfg["kind"], cfg["arch"], cfg["dataset"], cfg["resolution"], cfg["mode"]) == \
            ("vae", "vae", "cifar10", 28, "constrained")
        assert cfg["split"] == ("dataset" if name.endswith("_ds") else "task")
        assert cfg["fracs"] == fracs and cfg["seeds"] == list(range(10))
        assert cfg["recipe"] == {"epochs": 30, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-5,
                                 "beta": 1.0}
        assert cfg["latent_dim"] == 20
        assert cfg["probes"]["ood"] == [registry.beton_name(d, 28) for d in ("mnist", "svhn")]


# ---- data and runs ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae")
    mp = pytest.MonkeyPatch()
    mp.setenv("REPRSIM_DATA", str(root / "data"))
    mp.setenv("REPRSIM_RUNS", str(root / "runs"))
    mp.setenv("REPRSIM_VERIFY", "0")
    data = root / "data"
    parts = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels, _ = shapes.generate(n, size=32, seed=0, label="digit", split=split)
        parts[split] = (images, labels)
    fake.write_cifar10(data, parts["train"], parts["test"])
    fake.fake_mnist(data, 10, 30, seed=2)
    fake.fake_svhn(data, 10, 30, seed=3)
    # What train_vae/run_write_ffcv_data.sh runs.
    assert cli.main(["write-data", "cifar10", "--resolution", "28", "--workers", "1"]) == 0
    assert cli.main(["write-data", "mnist", "svhn", "--resolution", "28", "--workers", "1"]) == 0
    yield {"root": root, "parts": parts}
    mp.undo()


def test_the_betons_are_the_registry_images_at_28(env):
    images, labels = betons.load_arrays(betons.beton_path("cifar10_28", "test"))
    expected = registry.get("cifar10").load(None, "test", resolution=28)
    assert np.array_equal(images, expected[0]) and np.array_equal(labels, env["parts"]["test"][1])
    x, _ = train_vae.load_grey(betons.beton_path("mnist_28", "test"))
    mnist, _ = registry.get("mnist").load(None, "test")  # native 28x28, grey in 3 channels
    assert np.allclose(x[:, 0].numpy(), mnist[..., 0] / 255.0, atol=1e-6)


@pytest.fixture(scope="module")
def trained(env):
    for name, pairs in (("vae_cifar10_ds", DS_PAIRS), ("vae_cifar10_task", TASK_PAIRS)):
        for seed, frac in pairs:
            assert cli.main(["train", name, "--seed", str(seed), "--frac", str(frac), *FAST]) == 0
        exp = env["root"] / "runs" / name
        assert cli.main(["measure", str(exp), "--save-features", "--workers", "1"]) == 0
    return env["root"] / "runs"


def test_the_run_folders_follow_the_image_layout(trained):
    folder = trained / "vae_cifar10_task" / "seed_0" / "frac_0.4"
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {"args.json", "done", "status.json", "split_indices/split.json", "split_0/checkpoint.pth",
            "split_0/log.txt", "split_1/checkpoint.pth", "split_1/log.txt"} <= names
    args = json.loads((folder / "args.json").read_text())
    assert (args["kind"], args["arch"], args["split"], args["num_classes"]) == ("vae", "vae", "task", [5, 5])
    assert "width" not in args


def test_the_result_files_have_the_resnet_cifar10_schemas(trained):
    for name, header, pairs in (("vae_cifar10_ds", DS_HEADER, DS_PAIRS),
                                ("vae_cifar10_task", TASK_HEADER, TASK_PAIRS)):
        exp = trained / name
        sim = analysis.read_result(exp / "platonic_ffcv.csv")
        assert (exp / "platonic_ffcv.csv").read_text().splitlines()[0] == header
        assert sim.kind == "similarity" and sim.split == ("task" if "task" in name else "dataset")
        assert len(sim.data) == len(pairs) * len(METRICS)
        assert list(sim.data["seed"]) == [s for s, _ in pairs for _ in METRICS]
        loss = analysis.read_result(exp / "platonic_loss_ffcv.csv")
        assert loss.kind == "loss" and len(loss.data) == 2 * len(pairs)
        assert not (exp / "platonic_acc_ffcv.csv").exists()  # a VAE has no classifier
        meta = json.loads((exp / "platonic_ffcv.json").read_text())
        assert (meta["arch"], meta["dataset"]) == ("vae", "cifar10")
    if REFERENCE.is_dir():  # the study's own VAE files have these headers
        for ref, header in (("vae_platonic_ds_cifar10.csv", DS_HEADER),
                            ("vae_platonic_task_cifar10.csv", TASK_HEADER)):
            assert (REFERENCE / ref).read_text().splitlines()[0] == header


def test_empty_probe_sets_give_minus_one_exactly_where_protocol_says(trained):
    task = analysis.read_result(trained / "vae_cifar10_task" / "platonic_ffcv.csv").data
    frac = task["frac_overlap"]
    assert (task.loc[frac == 0.0, "metric_overlap"] == -1).all()
    assert (task.loc[frac == 1.0, "metric_ood_one"] == -1).all()
    middle = task[(frac > 0) & (frac < 1)]
    assert (middle[["metric_overlap", "metric_ood_one"]] != -1).all().all()
    loss = analysis.read_result(trained / "vae_cifar10_task" / "platonic_loss_ffcv.csv").data
    assert (loss.loc[loss["frac_overlap"] == 0.0, "val_loss"] == -1).all()
    assert (loss.loc[loss["frac_overlap"] > 0, "val_loss"] > 0).all()
    ds = analysis.read_result(trained / "vae_cifar10_ds" / "platonic_ffcv.csv").data
    assert (ds[list(ds.columns[3:])] != -1).all().all()


def _load(path: Path) -> ConvVAE:
    model = ConvVAE()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def test_measured_features_are_each_models_latent_mean(trained, env):
    folder = trained / "vae_cifar10_ds" / "seed_0" / "frac_1"
    x, _ = train_vae.load_grey(betons.beton_path("cifar10_28", "test"))
    svhn, _ = train_vae.load_grey(betons.beton_path("svhn_28", "test"))
    for i in (0, 1):
        model = _load(folder / f"split_{i}" / "checkpoint.pth")
        with torch.no_grad():
            mean = model.encode(x)[0].numpy()
            svhn_mean = model.encode(svhn)[0].numpy()
        saved = np.load(folder / "features" / f"metric_overlap_model{i + 1}.npy")
        assert np.allclose(saved, mean, atol=1e-5)
        saved = np.load(folder / "features" / f"metric_ood_all_svhn_model{i + 1}.npy")
        assert np.allclose(saved, svhn_mean, atol=1e-5)


def test_a_model_against_itself_scores_cka_one(trained, tmp_path):
    """CKA of a model with itself is 1 up to the study's 1e-6 guard: h / (sqrt(h h) + 1e-6)
    with h = HSIC(K, K) of the prepared features (computed here in float64)."""
    from repr_sim.metrics import prepare

    source = trained / "vae_cifar10_ds" / "seed_0" / "frac_0"
    pair = runs.pair_dir(tmp_path / "self", 0, 0.0)
    shutil.copytree(source, pair, ignore=shutil.ignore_patterns("measure.json", "features", ".*"))
    shutil.copy(pair / "split_0" / "checkpoint.pth", pair / "split_1" / "checkpoint.pth")
    assert cli.main(["measure", str(tmp_path / "self"), "--save-features", "--workers", "1"]) == 0
    sim = analysis.read_result(tmp_path / "self" / "platonic_ffcv.csv")
    for column in sim.value_columns:
        values = dict(zip(sim.data["metric"], sim.data[column], strict=True))
        feats = [np.load(pair / "features" / f"{column}_model{i}.npy") for i in (1, 2)]
        assert np.array_equal(feats[0], feats[1])
        x = prepare(torch.from_numpy(feats[0])).double().numpy()
        n = len(x)
        h_matrix = np.eye(n) - np.ones((n, n)) / n
        k = x @ x.T
        hsic = np.trace(k @ h_matrix @ k @ h_matrix)
        assert values["cka"] == pytest.approx(hsic / (np.sqrt(hsic * hsic) + 1e-6), abs=1e-6)
        # (On the OOD sets of a barely trained VAE, h is small and the guard shows: 0.99.)
        if column == "metric_overlap":
            assert values["cka"] == pytest.approx(1.0, abs=1e-6)
        assert values["mutual_knn"] == 1.0 and values["lcs_knn"] == 10.0, column
    loss = analysis.read_result(tmp_path / "self" / "platonic_loss_ffcv.csv").data["val_loss"]
    assert loss.iloc[0] == loss.iloc[1]  # the same model, the same seeded sample


def test_loss_decreases_on_a_tiny_set(env, monkeypatch, tmp_path):
    monkeypatch.setenv("REPRSIM_RUNS", str(tmp_path))
    cfg = kinds.load("vae_cifar10_ds", ["recipe.epochs=4"])
    folder = train_vae.train_pair(cfg, 0, 0.5, device="cpu")
    for i in (0, 1):
        rows = [json.loads(r) for r in (folder / f"split_{i}" / "log.txt").read_text().splitlines()]
        train, test = [r["train_loss"] for r in rows], [r["test_loss"] for r in rows]
        assert len(rows) == 4
        assert all(b < a for a, b in zip(train, train[1:], strict=False)), train
        assert test[-1] < test[0], test


def test_pairs_are_seeded_for_real(env, monkeypatch, tmp_path):
    states = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        monkeypatch.setenv("REPRSIM_RUNS", str(tmp_path / run))
        folder = train_vae.train_pair(kinds.load("vae_cifar10_task", ["recipe.epochs=1", "recipe.batch_size=50"]),
                                      seed, 0.6, device="cpu")
        states[run] = [torch.load(folder / f"split_{i}" / "checkpoint.pth", weights_only=True)
                       for i in (0, 1)]
    for i in (0, 1):
        assert all(torch.equal(states["a"][i][k], states["b"][i][k]) for k in states["a"][i])
        assert not torch.equal(states["a"][i]["fc_mu.weight"], states["c"][i]["fc_mu.weight"])
    assert not torch.equal(states["a"][0]["fc_mu.weight"], states["a"][1]["fc_mu.weight"])


def test_a_killed_run_resumes_to_the_same_models(env, monkeypatch, tmp_path):
    cfg = kinds.load("vae_cifar10_ds", ["recipe.epochs=2", "recipe.batch_size=50"])
    monkeypatch.setenv("REPRSIM_RUNS", str(tmp_path / "whole"))
    whole = train_vae.train_pair(cfg, 0, 0.5, device="cpu")

    monkeypatch.setenv("REPRSIM_RUNS", str(tmp_path / "killed"))
    save = runs.atomic_torch_save

    def kill_after_first_epoch(obj, path):
        save(obj, path)
        if Path(path).name == "epoch.pt" and Path(path).parent.name == "split_1":
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "atomic_torch_save", kill_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_vae.train_pair(cfg, 0, 0.5, device="cpu")
    monkeypatch.setattr(runs, "atomic_torch_save", save)
    killed = runs.pair_dir(tmp_path / "killed" / "vae_cifar10_ds", 0, 0.5)
    assert (killed / "split_1" / "epoch.pt").is_file() and not runs.is_done(killed)
    resumed = train_vae.train_pair(cfg, 0, 0.5, device="cpu")
    assert runs.is_done(resumed) and not (resumed / "split_1" / "epoch.pt").exists()
    for i in (0, 1):
        a = torch.load(whole / f"split_{i}" / "checkpoint.pth", weights_only=True)
        b = torch.load(resumed / f"split_{i}" / "checkpoint.pth", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), i
        assert (whole / f"split_{i}" / "log.txt").read_text().count("\n") == 2


def test_the_summary_places_the_vae_files(trained, tmp_path):
    for name in ("vae_cifar10_ds", "vae_cifar10_task"):
        for stem in ("platonic_ffcv", "platonic_loss_ffcv"):
            for suffix in (".csv", ".json"):
                shutil.copy(trained / name / f"{stem}{suffix}", tmp_path / f"{name}_{stem}{suffix}")
    result = summary.summarize(tmp_path)
    files = result.files.set_index("file")
    assert files.loc["vae_cifar10_ds_platonic_ffcv.csv", "placed_in"] == "Dataset Overlap"
    assert files.loc["vae_cifar10_task_platonic_ffcv.csv", "placed_in"] == "Task + Dataset Overlap"
    assert set(files["architecture"]) == {"vae"}
    assert np.isfinite(result.mi.loc["mutual_information", ["Dataset Overlap",
                                                            "Task + Dataset Overlap"]]).all()
    assert set(result.acc["quantity"]) == {"validation loss"} and len(result.acc) == 2


# ---- bad input ------------------------------------------------------------------------------------
def test_a_missing_beton_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRSIM_DATA", str(tmp_path))
    monkeypatch.setenv("REPRSIM_RUNS", str(tmp_path / "runs"))
    assert cli.main(["train", "vae_cifar10_ds", "--seed", "0", "--frac", "0.5", *FAST]) == 2
    line = one_error_line(capsys)
    assert "missing beton" in line and "cifar10_28" in line and "run_write_ffcv_data.sh" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--workers", "2"], "--workers does not apply to vae"),
    (["--set", "resolution=32"], "28x28 inputs"),
    (["--set", "split=rows"], "split must be one of"),
    (["--set", "recipe.beta=-1"], "recipe.beta must be a non-negative number"),
])
def test_bad_options_are_one_clear_error(env, capsys, args, words):
    assert cli.main(["train", "vae_cifar10_ds", "--seed", "5", "--frac", "0.5", *FAST, *args]) == 2
    assert words in one_error_line(capsys)
