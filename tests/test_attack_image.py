"""Transfer attacks on image-kind pairs (repr_sim.attack with the image kind's hook), the
demo's way: the built-in shapes data (8x8, with the demo's OOD probes) and pairs of the
demo's own configs at its tiny scale (width-8 ResNet-18s, 3 epochs here so that the models
differ), trained single-threaded as the demo's workers do, attacked through `reprsim
attack`, then joined with their similarity file by `reprsim consequences`."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_fixtures import roots, run_measure

from repr_sim import attack, cli, consequences, demo, experiments, kinds, results, runs, splits
from repr_sim.analysis import detect_kind, read_header, read_result

DATA = {"size": 8, "n_train": 320, "n_test": 64}
DS_PAIRS = ((0, 0.0), (0, 0.5), (0, 1.0), (1, 0.0), (1, 0.5), (1, 1.0))  # >= 4 for consequences
TASK_PAIRS = ((0, 0.0), (0, 0.5))  # 4 of 8 classes each: none and 2 shared


@dataclass
class World:
    ds: Path
    task: Path


def train(experiment: str, pairs) -> Path:
    from repr_sim.data import builtin

    cfg = demo.demo_config(experiment, demo.SCALES["tiny"], "image", builtin.image_record(**DATA))
    experiments.set_key(cfg, "recipe.epochs", 3)
    for seed, frac in pairs:
        kinds.module("image", "train").train_pair(cfg, seed, frac, device="cpu")
    return experiments.experiment_dir(cfg)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from repr_sim.data import builtin

    root = tmp_path_factory.mktemp("attack_image")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with roots(root / "data", root / "runs"):
            builtin.write_images(root / "data", **DATA)
            yield World(train("demo_ds", DS_PAIRS), train("demo_task", TASK_PAIRS))
    finally:
        torch.set_num_threads(threads)


def run_attack(*argv) -> int:
    threads = torch.get_num_threads()  # reprsim attack sets its own (--workers)
    try:
        return cli.main(["attack", *map(str, argv), "--device", "cpu", "--workers", "1"])
    finally:
        torch.set_num_threads(threads)


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_attack_writes_both_files_in_their_schemas(world):
    assert run_attack(world.ds) == 0
    study, both = world.ds / results.TRANSFER_ATTACK_CSV, world.ds / results.TRANSFER_DIRECTIONS_CSV
    assert read_result(study).kind == "transfer"
    assert detect_kind(read_header(both), both)[0] == "transfer_directions"
    assert study.read_text().splitlines()[0] == ",".join(results.ASR_COLUMNS)
    assert both.read_text().splitlines()[0] == ",".join(results.TRANSFER_DIRECTIONS_COLUMNS)
    assert len(rows(study)) == len(DS_PAIRS) and len(rows(both)) == 2 * len(DS_PAIRS)
    for r in rows(both):
        assert r["eps"] == f"{1 / 255:g}"  # the study's dataset-split eps
        assert int(r["images"]) == DATA["n_test"]  # fewer than attack.images (500): all
        for column in results.TRANSFER_DIRECTIONS_COLUMNS[6:]:
            value = float(r[column])
            assert value == results.EMPTY or 0 <= value <= 1, (column, value)
    ab = [(r["normal_asr"], r["transfer_asr"]) for r in rows(both) if r["direction"] == "A->B"]
    assert ab == [(r["normal_asr"], r["transfer_asr"]) for r in rows(study)]


def test_task_split_attacks_only_the_shared_classes(world):
    assert run_attack(world.task) == 0
    both = {(r["frac_overlap"], r["direction"]): r
            for r in rows(world.task / results.TRANSFER_DIRECTIONS_CSV)}
    for direction in ("A->B", "B->A"):
        none = both[("0.0", direction)]  # no shared class: nothing attacked
        assert none["images"] == "0" and float(none["transfer_asr"]) == results.EMPTY
    # what the engine attacks: the shared classes' images, labels in the shared map
    pair = runs.pair_dir(world.task, 0, 0.5)
    split = splits.load(pair / "split_indices")
    hook = attack.hook_of("image", pair)
    everything = hook.probe_arrays(attack.pair_args(pair), "", {})
    shared = splits.class_indices(everything[1], split.shared_classes)
    images, labels = attack.attack_set(split, *everything)
    assert len(split.shared_classes) == 2 and len(images) == len(labels) == len(shared) > 0
    assert np.array_equal(images, everything[0][shared])
    assert sorted(set(labels.tolist())) == [0, 1]
    for direction in ("A->B", "B->A"):
        some = both[(repr(float(split.overlap)), direction)]  # the realised overlap
        assert some["eps"] == f"{2 / 255:g}" and int(some["images"]) == len(shared)
    assert float(rows(world.task / results.TRANSFER_ATTACK_CSV)[0]["transfer_asr"]) == results.EMPTY


def test_a_current_result_is_kept_and_a_lost_one_redone(world, capsys):
    exp = world.ds
    if not (exp / results.TRANSFER_ATTACK_CSV).is_file():
        assert run_attack(exp) == 0
    before = (exp / results.TRANSFER_ATTACK_CSV).read_bytes()
    capsys.readouterr()
    assert run_attack(exp) == 0
    assert f"0 attacked, {len(DS_PAIRS)} already attacked" in capsys.readouterr().out
    (runs.pair_dir(exp, 1, 0.5) / attack.RESULT).unlink()  # a killed run
    assert run_attack(exp) == 0
    assert f"1 attacked, {len(DS_PAIRS) - 1} already attacked" in capsys.readouterr().out
    assert (exp / results.TRANSFER_ATTACK_CSV).read_bytes() == before  # seeded: same numbers


@pytest.mark.parametrize("eps_pixels", [1, 16])
def test_adversarial_inputs_stay_within_eps_and_the_valid_range(world, eps_pixels):
    """In pixel terms: |adv - clean| <= eps * 255 and 0 <= adv <= 255 (16/255 makes the clip act)."""
    pair = runs.pair_dir(world.ds, 0, 0.5)
    args = attack.pair_args(pair)
    hook = attack.hook_of("image", pair)
    source, _ = hook.pair_models(pair, args, "cpu")
    assert not source.training and next(source.parameters()).dtype == torch.float32
    pipe = hook.input_map(args)
    images, labels = hook.probe_arrays(args, "", {})
    raw = next(attack.pixel_batches(images, 32, "cpu"))
    y = torch.as_tensor(labels[:32])
    x = attack.model_input(pipe, raw, "cpu")
    low, high = pipe.bounds("cpu")
    eps = eps_pixels / 255
    adv = attack.mi_fgsm(source, x, y, eps=eps * pipe.eps_scale("cpu"), steps=3, momentum=1.0,
                         low=low, high=high)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (pipe.mean, pipe.std))
    pixels = adv * std + mean  # back to the 0-255 scale
    assert float((pixels - raw).abs().max()) <= eps_pixels + 1e-3
    assert float(pixels.min()) >= -1e-3 and float(pixels.max()) <= 255 + 1e-3
    assert float((pixels - raw).abs().max()) > eps_pixels / 2  # it moved
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(loss(source(adv), y)) > float(loss(source(x), y))


def test_consequences_of_the_similarity_and_transfer_files(world, tmp_path, capsys):
    exp = world.ds
    if not (exp / results.TRANSFER_ATTACK_CSV).is_file():
        assert run_attack(exp) == 0
    assert run_measure([str(exp), "--device", "cpu", "--workers", "1", "--no-calibrate"]) == 0
    sim, asr = exp / results.IMAGE_SIM_CSV, exp / results.TRANSFER_ATTACK_CSV
    capsys.readouterr()
    assert cli.main(["consequences", str(sim), str(asr), "--metric", "cka",
                     "--permutations", "99"]) == 0
    assert f"{len(DS_PAIRS)} pairs joined" in capsys.readouterr().out
    table = consequences.consequences(*consequences.read_pair(sim, asr), metrics=("cka",),
                                      probes=(results.OVERLAP_PROBE,), n_perm=99)
    row = table.loc[("cka", results.OVERLAP_PROBE)]
    assert row["n"] == len(DS_PAIRS)
    for column in ("spearman_rho", "spearman_p", "partial_rho", "partial_p", "overlap_rho"):
        assert math.isfinite(row[column]), column
    lines = consequences.summary_lines(sim, asr, n_perm=99)
    assert len(lines) == 3 and "nan" not in " ".join(lines)
    assert f"{row['partial_rho']:+.3f}" in lines[2]

    # copied under the demo's names with their sidecars, the folder form pairs them
    out = tmp_path / "results"
    out.mkdir()
    for src, name in ((sim, "demo_ds_platonic"), (asr, "demo_ds_transfer_attack")):
        for suffix in (".csv", ".json"):
            (out / f"{name}{suffix}").write_bytes(src.with_suffix(suffix).read_bytes())
    assert read_result(out / "demo_ds_transfer_attack.csv").model == read_result(sim).model
    capsys.readouterr()
    assert cli.main(["consequences", str(out), "--metric", "cka", "--permutations", "99"]) == 0
    assert "demo_ds_transfer_attack.csv" in capsys.readouterr().out


def test_a_kind_without_an_attack_is_one_error_line(tmp_path, capsys):
    pair = tmp_path / "text_exp" / "seed_0" / "frac_0"
    pair.mkdir(parents=True)
    runs.atomic_write_json(pair / "args.json", {"kind": "text", "seed": 0, "frac": 0.0,
                                                "config": {"split": "dataset"}})
    assert run_attack(pair.parent.parent) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kind 'text' has no transfer attack" in err[0]
    assert "finetune, image" in err[0]
    assert kinds.hook("text", "attack", "pair_models") is None


def test_the_image_kind_declares_the_attack_settings():
    cfg = kinds.get("image").resolve({"kind": "image", "split": "task", "name": "x"})
    s = attack.settings(cfg)
    assert (s.eps, s.steps, s.momentum, s.images) == (2 / 255, 3, 1.0, 500)
    assert attack.settings({**cfg, "split": "dataset"}, images=7).images == 7
    assert np.isclose(attack.settings({**cfg, "attack": {**cfg["attack"], "eps": 0.5}}).eps, 0.5)
