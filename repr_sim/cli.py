"""`reprsim`: one entry point, one subcommand per job. Each parses, validates, calls one function.

Handlers are imported lazily ("module:function") so that `reprsim similarity` does not pay
for FFCV or the text stack. A handler returns the exit code. Bad input raises UserError
(or ValueError from the library), which becomes one line on stderr and exit code 2.
Set REPRSIM_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import UserError


def _handler(spec: str):
    def run(args):
        module, func = spec.split(":")
        return getattr(importlib.import_module(f"repr_sim.{module}"), func)(args)

    return run


def _add(sub, name: str, spec: str, help: str, description: str | None = None):
    p = sub.add_parser(name, help=help, description=description or help)
    p.set_defaults(func=_handler(spec))
    return p


# ---- foundation -------------------------------------------------------------------------
def add_similarity(sub):
    p = _add(sub, "similarity", "metrics.cli:cli_similarity",
             "score two feature matrices (N x D, .npy or .pt) with the similarity metrics")
    p.add_argument("a", help="features of model A (.npy or .pt, N x D)")
    p.add_argument("b", help="features of model B (.npy or .pt, N x D)")
    p.add_argument("--metrics", nargs="+", default=None, help="subset of metrics (default: all eight)")
    p.add_argument("--topk", type=int, nargs="+", default=[10],
                   help="neighbours for the kNN metrics (default 10); several values need --calibrate")
    p.add_argument("--no-prepare", action="store_true",
                   help="score the features as given (default: clamp at the 0.95 quantile, L2-normalise rows)")
    p.add_argument("--calibrate", action="store_true",
                   help="calibrate against row permutations of b (docs/protocol.md section 5) and print a table")
    p.add_argument("--permutations", type=int, default=200, metavar="K",
                   help="with --calibrate: permutations in the null (default 200)")
    p.add_argument("--alpha", type=float, default=0.05, help="with --calibrate: level (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="with --calibrate: permutation seed (default 0)")


# ---- data -------------------------------------------------------------------------------
def add_write_data(sub):
    p = _add(sub, "write-data", "data.cli:cli_write_data",
             "write datasets to FFCV .beton files under $REPRSIM_DATA/ffcv/<name>/")
    p.add_argument("datasets", nargs="+", help="registry names (cifar10, cifar100, tinyimagenet, mnist, svhn, ...)")
    p.add_argument("--data-root", default=None, help="data root (default: $REPRSIM_DATA or data/)")
    p.add_argument("--resolution", type=int, default=None,
                   help="image side for probe datasets (e.g. 64 for TinyImageNet models)")
    p.add_argument("--name", default=None, help="beton folder name (default: dataset name, with _<res> for resized probes)")
    p.add_argument("--download", action="store_true", help="let torchvision download the raw files")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="splits to write (default: train and test; test only for the probe sets)")
    p.add_argument("--workers", type=int, default=None, help="writer processes (default: usable CPUs)")


def add_reorg(sub):
    p = _add(sub, "reorg-tinyimagenet", "data.cli:cli_reorg_tinyimagenet",
             "group tiny-imagenet-200 validation images into per-class folders (idempotent)")
    p.add_argument("--data-root", default=None, help="data root (default: $REPRSIM_DATA or data/)")


# ---- training ---------------------------------------------------------------------------
def add_train(sub):
    from .train import add_options

    p = _add(sub, "train", "train:cli_train", "train one pair of models (one seed, one fraction)")
    p.add_argument("experiment", help="experiment name (e.g. cifar10_ds) or path to a .toml config")
    add_options(p)


def add_sweep(sub):
    p = _add(sub, "sweep", "sweep:cli_sweep",
             "expand experiments into (seed, frac) tasks; submit a SLURM array or run them here")
    p.add_argument("experiments", nargs="*", help="experiment names or config paths")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="narrow the seeds")
    p.add_argument("--fracs", nargs="+", type=float, default=None, help="narrow the fractions")
    p.add_argument("--launcher", choices=["auto", "slurm", "pool", "local"], default=None,
                   help="slurm: one job array per experiment; pool: --workers pairs at once "
                        "here; local: one pair after another here (default: $LAUNCHER, else "
                        "slurm when it answers, else local)")
    p.add_argument("--workers", type=int, default=None,
                   help="pool launcher: pairs trained at once (default: usable CPUs)")
    p.add_argument("--pairs-per-gpu", type=int, default=None, metavar="M",
                   help="train M pairs at once on each GPU (the CPU without one): the pool "
                        "launcher runs M per visible GPU, the SLURM launcher packs M tasks into "
                        "each array element (default: $PAIRS_PER_GPU, else one; docs/gpu.md)")
    p.add_argument("--sbatch-script", default=None, help="array task body for SLURM")
    p.add_argument("--log-dir", default=None, help="where SLURM output goes")
    p.add_argument("--train-args", default="", help="extra arguments for `reprsim train`")
    p.add_argument("--sbatch-args", default="", help="extra arguments for sbatch")
    p.add_argument("--task", type=int, default=None, help="run task N of the pending list (array task body)")
    p.add_argument("--task-file", default=None, help="task list written at submission (array task body)")
    p.add_argument("--dry-run", action="store_true", help="print the pending tasks, run nothing")


# ---- measurement ------------------------------------------------------------------------
def add_measure(sub):
    p = _add(sub, "measure", "measure:cli_measure",
             "measure trained pairs: accuracy, features on probe sets, eight metrics, result CSVs",
             description="Measure the finished pairs of experiment folders: accuracy (or validation "
                         "loss), features of both models on the probe sets, the eight metrics, one "
                         "result file per pair, merged into the study's CSVs in each experiment "
                         "folder (platonic_ffcv.csv and platonic_acc_ffcv.csv for images, platonic.csv "
                         "and platonic_loss.csv for text). Pairs with a current result are kept; "
                         "unfinished pairs are skipped, so a sweep can be measured while it trains.")
    p.add_argument("runs_dirs", nargs="*", metavar="RUNS_DIR",
                   help="experiment folders made by `reprsim train` ($REPRSIM_RUNS/<experiment>)")
    p.add_argument("--below", action="store_true",
                   help="a RUNS_DIR that is not an experiment folder stands for the experiment "
                        "folders inside it; none given: the runs root (what run_metrics.sh does)")
    p.add_argument("--probe-size", type=int, default=None,
                   help="inputs per probe set, a seeded random subset (default: images the whole "
                        "set; text 20500 windows)")
    p.add_argument("--batch-size", type=int, default=500, help="inputs per forward pass (default 500)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--workers", type=int, default=None,
                   help="CPU threads for feature extraction and scoring (default: usable CPUs)")
    p.add_argument("--force", action="store_true", help="re-measure pairs that already have a result")
    p.add_argument("--save-features", action="store_true",
                   help="also save features as .npy per model and probe set (<pair>/features/)")
    p.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default=None,
                   help="feature precision on CUDA for the image kinds (default: fp16, as they "
                        "train; the metrics are computed in float32/float64 either way)")
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                   help="also write the null-calibrated companion beside each similarity CSV "
                        "(platonic_calibrated*.csv: calibrated score, p-value, tau per probe; "
                        "docs/calibration.md); default: on")
    p.add_argument("--permutations", type=int, default=None, metavar="K",
                   help="permutations in each null (default 200)")
    p.add_argument("--alpha", type=float, default=None, metavar="A",
                   help="level of the calibration threshold tau (default 0.05)")
    p.add_argument("--calibration-seed", type=int, default=None, metavar="S",
                   help="seed of the permutations (default 0)")


# ---- analysis ---------------------------------------------------------------------------
def add_analyze(sub):
    p = _add(sub, "analyze", "analysis:cli_analyze",
             "mutual information, R^2, slope and Spearman of a result CSV against overlap")
    p.add_argument("csv", help="a result CSV (similarity, partition, accuracy, transfer attack)")
    p.add_argument("--metric", default=None,
                   help="one of the eight metrics (default cka; with --study v2 the study's "
                        "choice: cka, cknna for the diffusion files)")
    p.add_argument("--all-metrics", action="store_true", help="one table over all eight metrics")
    p.add_argument("--study", choices=["v2"], default=None,
                   help="the table the study's v2 notebook made for this file: its metric, "
                        "probe column(s) and rows, slips included (docs/v2_analysis.md); "
                        "default: this project's rules")
    p.add_argument("--calibrated", action="store_true",
                   help="the table on the null-calibrated scores (the companion beside a "
                        "similarity file, or the companion given), and per overlap level the "
                        "fraction of pairs significant at alpha (docs/calibration.md)")
    p.add_argument("--alpha", type=float, default=None,
                   help="with --calibrated: level of the significance counts (default: the "
                        "measurement's, 0.05)")
    p.add_argument("--fdr", action="store_true",
                   help="with --calibrated: also count after a Benjamini-Hochberg "
                        "false-discovery-rate adjustment (per probe column, all pairs)")
    p.add_argument("--out", default=None, help="write the table as CSV here (with "
                   "--calibrated also <stem>_significance.csv beside it)")


def add_plot(sub):
    p = _add(sub, "plot", "plots:cli_plot", "box plots of a result CSV against overlap")
    p.add_argument("csv", nargs="+",
                   help="a result CSV (similarity, partition, accuracy, transfer attack); "
                        "several: one figure with a panel per file (model size), each showing "
                        "the probe and rows of the study's v2 table")
    p.add_argument("--metric", default=None,
                   help="one of the eight metrics (default cka; several files: the study's "
                        "choice, cknna for the diffusion files)")
    p.add_argument("--study", choices=["v2"], default=None,
                   help="one panel per file as the study's v2 figures (its probe and rows), "
                        "also for a single file")
    p.add_argument("--calibrated", action="store_true",
                   help="box plots of the null-calibrated scores (the companion beside a "
                        "similarity file, or the companion given; docs/calibration.md)")
    p.add_argument("--out", required=True, help="figure file (.pdf, .png or .svg)")


def add_summary(sub):
    p = _add(sub, "summary", "summary:cli_summary",
             "the headline mutual-information table and the accuracy table over a results folder")
    p.add_argument("results_dir", help="folder of result CSVs")
    p.add_argument("--out", default=None, help="output folder (default: results_dir)")
    p.add_argument("--latex", action="store_true",
                   help="also print LaTeX tables (and write summary_*.tex)")
    p.add_argument("--metric", default=None,
                   help="one of the eight metrics (default cka, as the study; with --study v2 "
                        "the study's choice per file: cka, cknna for the diffusion files)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files whose name or path under the folder matches "
                        "(repeatable), e.g. 'vae_*mnist*'")
    p.add_argument("--study", choices=["v2"], default=None,
                   help="the study's v2 rules: each file's table as the v2 notebook made it "
                        "(docs/v2_analysis.md); default: this project's rules")
    p.add_argument("--compare", action="store_true",
                   help="also compute the table under the other rules and write both side by "
                        "side, overall and per architecture, to summary_compare.csv")


def add_consequences(sub):
    p = _add(sub, "consequences", "consequences:cli_consequences",
             "does a pair's similarity predict how well an attack transfers between its models?",
             description="Join a similarity file and its transfer-attack file on (seed, "
                         "frac_overlap); per metric and probe: Spearman rho of transfer_asr "
                         "with the similarity (permutation p), the partial rank correlation "
                         "controlling for overlap (permutations within each overlap level), "
                         "and the mutual information. Given one folder: every transfer file "
                         "in it with its similarity file (same split, model and dataset).")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="SIM_FILE ASR_FILE (a similarity CSV and its transfer-attack CSV), "
                        "or one results folder")
    p.add_argument("--metric", default=None,
                   help="only this metric (default: every metric in the file; the plot: cka)")
    p.add_argument("--permutations", type=int, default=9999,
                   help="permutations for both p-values (default 9999)")
    p.add_argument("--out", default=None, help="write the table as CSV here")
    p.add_argument("--plot", default=None,
                   help="figure file (.pdf, .png, .svg): transfer success against similarity, "
                        "one panel per probe, coloured by overlap")


# ---- demo and text ----------------------------------------------------------------------
def add_demo(sub):
    p = _add(sub, "demo", "demo:cli_demo", "run the built-in study end to end on this machine")
    p.add_argument("--text", action="store_true", help="the built-in text study instead")
    p.add_argument("--scale", choices=["full", "tiny"], default="full",
                   help="tiny: the smallest scale (what the tests run)")
    p.add_argument("--out", default=None, help="results folder (default: plotting/plotting_results)")


def add_prepare_text(sub):
    p = _add(sub, "prepare-text", "data.hftext:cli_prepare_text",
             "tokenise a corpus into $REPRSIM_DATA/text/<corpus>/{train,val}.bin")
    p.add_argument("corpus", help="shakespeare_all, tinystories, wikitext, tinycodes, tinytextbooks, tinywebtext")
    p.add_argument("--data-files", nargs="+", default=None, help="local .txt/.json/.jsonl/.parquet files")
    p.add_argument("--tokenizer", default="gpt2", metavar="{gpt2,bytes,hf:MODEL_OR_FOLDER}",
                   help="gpt2, bytes, or hf:<model in the HF cache or tokenizer folder> "
                        "(data in text/<corpus>/<preset>_hf_<hash>/)")
    p.add_argument("--preset", choices=["v1", "v2"], default=None,
                   help="corpora and val splits of the study's v1 (default) or v2 (LLM) scripts")
    p.add_argument("--dtype", choices=["uint16", "uint32"], default=None,
                   help="token dtype (default: uint16 if the vocabulary fits, else uint32)")
    p.add_argument("--num-proc", type=int, default=None, help="tokeniser processes (default: usable CPUs)")
    p.add_argument("--data-root", default=None, help="data root (default: $REPRSIM_DATA or data/)")
    p.add_argument("--force", action="store_true", help="prepare again even if already prepared")


def add_attack(sub):
    p = _add(sub, "attack", "attack:cli_attack",
             "MI-FGSM transfer attacks between the two models of each pair (kinds finetune, image)",
             description="Attack the finished pairs of experiment folders (kinds with an attack "
                         "hook: finetune, image) with MI-FGSM (docs/protocol.md section 6.3) in "
                         "both directions, one result per pair (attack.json), merged into "
                         "transfer_attack.csv (the study's schema, split_0 -> split_1) and "
                         "transfer_attack_directions.csv. Settings: the config's attack.* keys "
                         "(eps 0 = 1/255 for dataset splits, 2/255 for task splits); task "
                         "splits attack the shared classes only, label partitions are skipped. "
                         "Pairs with a current result are kept, so a killed run resumes.")
    p.add_argument("runs_dirs", nargs="+", metavar="RUNS_DIR",
                   help="experiment folders of kind finetune or image ($REPRSIM_RUNS/<experiment>)")
    p.add_argument("--images", type=int, default=None,
                   help="images attacked per pair (default: the config's attack.images, 500)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--workers", type=int, default=None, help="CPU threads (default: usable CPUs)")
    p.add_argument("--force", action="store_true", help="attack pairs that already have a result")


def add_sample(sub):
    p = _add(sub, "sample", "kinds.diffusion.sample:cli_sample",
             "generate from a checkpoint: text from a GPT, a PNG grid from a diffusion UNet")
    p.add_argument("checkpoint", help="ckpt.pt of a GPT or split_<i>/ckpt.pth of a diffusion pair")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--guidance", type=float, default=None,
                   help="diffusion: classifier-free guidance scale (default: the config's, 3.0)")
    p.add_argument("--ddim-steps", type=int, default=None,
                   help="diffusion: DDIM steps (default: the config's, 50)")
    p.add_argument("--per-class", type=int, default=8, help="diffusion: images per class (default 8)")
    p.add_argument("--out", default=None,
                   help="diffusion: PNG path (default: samples_seed<S>.png beside the checkpoint)")
    p.add_argument("--fid", type=int, default=0, metavar="N",
                   help="diffusion: also the FID of N samples against the test set (needs "
                        "pytorch-fid and its weights locally; else skipped with a line)")


COMMANDS = [add_similarity, add_write_data, add_reorg, add_train, add_sweep, add_measure,
            add_analyze, add_plot, add_summary, add_consequences, add_demo, add_prepare_text,
            add_sample, add_attack]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reprsim", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"reprsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as e:
        if os.environ.get("REPRSIM_DEBUG"):
            raise
        print(f"reprsim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reprsim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
