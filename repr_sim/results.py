"""Result files, declared once: their names, headers, the empty-probe value, the partition x.

Writers (the kinds' measurers, `reprsim measure`, the demo) and readers (repr_sim.analysis,
repr_sim.summary, repr_sim.plots, the notebook) take every column name and file name from
here, so a header cannot drift between the two sides. A result file is recognised by its
header, never by its name (docs/protocol.md section 3):

    similarity          seed,metric,frac_overlap,metric_<probe>[,metric_<probe>...]
    accuracy            seed,frac_overlap,model_idx,acc
    loss                seed,frac_overlap,model_idx,val_loss
    partition           seed,metric,partition,model0,model1,<probe>[,<probe>...]
    partition_accuracy  seed,partition,model,acc
"""

from __future__ import annotations

from dataclasses import dataclass

EMPTY = -1.0  # every metric of an empty (or too small) probe set; an accuracy with no shared class

# ---- headers -----------------------------------------------------------------------------
SIMILARITY_KEYS = ("seed", "metric", "frac_overlap")
PARTITION_KEYS = ("seed", "metric", "partition", "model0", "model1")
ACCURACY_COLUMNS = ("seed", "frac_overlap", "model_idx", "acc")
LOSS_COLUMNS = ("seed", "frac_overlap", "model_idx", "val_loss")
PARTITION_ACC_COLUMNS = ("seed", "partition", "model", "acc")


@dataclass(frozen=True)
class Schema:
    """One kind of result file: its leading columns, whether more (probe) columns follow."""

    kind: str
    keys: tuple[str, ...]
    exact: bool  # True: no further columns; False: one or more probe columns follow
    description: str


SCHEMAS = (
    Schema("similarity", SIMILARITY_KEYS, False, "similarity file"),
    Schema("partition", PARTITION_KEYS, False, "label-partition similarity file"),
    Schema("accuracy", ACCURACY_COLUMNS, True, "accuracy file"),
    Schema("loss", LOSS_COLUMNS, True, "text loss file"),
    Schema("partition_accuracy", PARTITION_ACC_COLUMNS, True, "label-partition accuracy file"),
)

# ---- probe columns -----------------------------------------------------------------------
OVERLAP_PROBE = "metric_overlap"  # the in-distribution probe of image and VAE files
OOD_ONE_PROBE = "metric_ood_one"  # task split: the classes only one model was trained on
OOD_ALL_PREFIX = "metric_ood_all_"  # + the registry dataset of an OOD probe set

# Label partitions (docs/protocol.md section 4): the val set's column, the study's table's
# probe columns, and the x value of each partition.
PARTITION_VAL_PROBE = "partition_metric"
PARTITION_PROBES = (PARTITION_VAL_PROBE, "cifar10", "mnist", "svhn")
PARTITION_X = {"partition1": 0.0, "partition2": 0.5, "partition3": 1.0}

# Probe columns that only exist in task-overlap files (the probe sets depend on which
# classes or corpora the two models share).
TEXT_TASK_PROBES = ("metric_common", "metric_OOD_for_one", "metric_OOD_for_all")
TASK_PROBES = (OOD_ONE_PROBE, *TEXT_TASK_PROBES)

# ---- file names in an experiment folder ----------------------------------------------------
IMAGE_SIM_CSV = "platonic_ffcv.csv"  # image, partition and VAE experiments
IMAGE_ACC_CSV = "platonic_acc_ffcv.csv"
VAE_LOSS_CSV = "platonic_loss_ffcv.csv"
TEXT_SIM_CSV = "platonic.csv"
TEXT_LOSS_CSV = "platonic_loss.csv"


def similarity_header(probe_columns) -> list[str]:
    return [*SIMILARITY_KEYS, *probe_columns]


def partition_header(probe_columns) -> list[str]:
    return [*PARTITION_KEYS, *probe_columns]


# ---- the study's second version (docs/protocol.md sections 6.2-6.7) ----------------------------------
# Transfer-attack success between the two models of a pair: image attacks (MI-FGSM) write
# normal_asr first; the Llama jailbreak files have the same columns in the other order.
ASR_COLUMNS = ("seed", "frac_overlap", "normal_asr", "transfer_asr")
JAILBREAK_COLUMNS = ("seed", "frac_overlap", "transfer_asr", "normal_asr")
TRANSFER_ASR = "transfer_asr"  # the victim (split_1) model's error on the adversarial inputs
NORMAL_ASR = "normal_asr"  # the source model's own error on them
TRANSFER_KINDS = ("transfer", "jailbreak")
SCHEMAS += (
    Schema("transfer", ASR_COLUMNS, True, "transfer-attack file"),
    Schema("jailbreak", JAILBREAK_COLUMNS, True, "transfer-jailbreak file"),
)

# v2 probe columns: the dataset-overlap files of the timm models score every model on all
# three image test sets (metric_<dataset>); the diffusion files name their CIFAR-10 test
# probe "train_ds"; the Llama files name the corpus (metric_tinycodes) and use the text task
# probes of TEXT_TASK_PROBES.
V2_IMAGE_PROBES = ("metric_cifar100", "metric_tinyimagenet", "metric_cifar10")
DIFFUSION_PROBE = "metric_train_ds"
LLM_DS_PROBE = "metric_tinycodes"
LLM_OOD_ONE_PROBE = "metric_OOD_for_one"

# LoRA fine-tunes of Llama-style models (repr_sim.kinds.llm, docs/protocol.md section 6.5): the
# similarity file of the study's LLM scripts (dataset overlap metric_<corpus>, task overlap
# the text task probes), and a per-model validation-loss file in the loss schema.
LLM_SIM_CSV = "platonic_llm.csv"
LLM_LOSS_CSV = "platonic_llm_loss.csv"

# Diffusion UNets (docs/protocol.md section 6.4; repr_sim.kinds.diffusion): the similarity file of a
# dataset split has the one probe column DIFFUSION_PROBE (the CIFAR-10 test set), that of a
# task split the image task probes; the per-model file is the "loss" schema (each EMA
# model's epsilon-prediction MSE on the in-distribution probe images).
DIFFUSION_SIM_CSV = IMAGE_SIM_CSV
DIFFUSION_LOSS_CSV = VAE_LOSS_CSV
DIFFUSION_DS_PROBES = (DIFFUSION_PROBE,)
DIFFUSION_TASK_PROBES = (OVERLAP_PROBE, OOD_ONE_PROBE)

# The transfer attacks of the finetune and image kinds (repr_sim.attack, `reprsim attack`):
# transfer_attack.csv in the study's schema (ASR_COLUMNS, direction split_0 -> split_1, every
# attacked image counted), and beside it both directions with the rates over the images
# both models classify correctly when clean (-1 where there are none).
TRANSFER_ATTACK_CSV = "transfer_attack.csv"
TRANSFER_DIRECTIONS_CSV = "transfer_attack_directions.csv"
TRANSFER_DIRECTIONS_COLUMNS = ("seed", "frac_overlap", "direction", "eps", "images",
                               "both_correct", "normal_asr", "transfer_asr",
                               "normal_asr_both_correct", "transfer_asr_both_correct")
SCHEMAS += (
    Schema("transfer_directions", TRANSFER_DIRECTIONS_COLUMNS, True,
           "transfer-attack file, both directions"),
)

# ---- null-calibrated companions (issue 14; docs/calibration.md) -------------------------------
# `reprsim measure --calibrate` writes beside each similarity (or partition) file a companion
# with the SAME rows (same key columns, same order) and, per probe column C of the file, three
# columns: C (the calibrated score), C_p (the permutation p-value), C_tau (the null threshold
# at the measurement's alpha); -1 in all three for an empty probe set. Its name: "_calibrated"
# after the file's "platonic" token (platonic_ffcv.csv -> platonic_calibrated_ffcv.csv,
# platonic.csv -> platonic_calibrated.csv, demo_ds_platonic.csv ->
# demo_ds_platonic_calibrated.csv), else after the stem. Its sidecar (<stem>.json) is the
# similarity file's plus "calibration": {"permutations", "alpha", "seed"}. A companion is
# recognised by its header: the keys of its similarity kind, then probe columns in triples
# C, C_p, C_tau (CALIBRATED_SUFFIXES).
CALIBRATED_SUFFIXES = ("", "_p", "_tau")  # calibrated score, p-value, threshold
CALIBRATED_TOKEN = "_calibrated"
CALIBRATED_KINDS = {"similarity_calibrated": "similarity", "partition_calibrated": "partition"}
SCHEMAS += (
    Schema("similarity_calibrated", SIMILARITY_KEYS, False, "calibrated similarity file"),
    Schema("partition_calibrated", PARTITION_KEYS, False,
           "calibrated label-partition similarity file"),
)


def calibrated_name(name: str) -> str:
    """The companion's file name of a similarity file's name (see above)."""
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    at = stem.find("platonic")
    cut = at + len("platonic") if at >= 0 else len(stem)
    return f"{stem[:cut]}{CALIBRATED_TOKEN}{stem[cut:]}" + (f".{suffix}" if dot else "")


def calibrated_columns(probe_columns) -> list[str]:
    """C, C_p, C_tau for each probe column C, in order."""
    return [f"{c}{s}" for c in probe_columns for s in CALIBRATED_SUFFIXES]


def calibrated_probes(columns) -> tuple[str, ...] | None:
    """The probe columns C of a companion's value columns (triples C, C_p, C_tau), or None
    when the columns are not such triples."""
    columns = tuple(columns)
    if not columns or len(columns) % len(CALIBRATED_SUFFIXES):
        return None
    probes = columns[::len(CALIBRATED_SUFFIXES)]
    return probes if list(columns) == calibrated_columns(probes) else None
