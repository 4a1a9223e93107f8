"""The text kind: pairs of nanoGPT models on chunk splits of one corpus (dataset overlap)
or corpus splits over several (task overlap) (docs/protocol.md sections 1-3)."""

from ..base import TEXT_OUTPUTS, Kind

DEFAULTS = {
    "split": "dataset",
    "num_chunks": 80,
    "fracs": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "seeds": list(range(6)),
    "model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2, "bias": False,
              "block_size": 256},
    "recipe": {"iters": 10000, "batch_size": 128, "grad_accum": 2, "lr": 5e-4,
               "min_lr_ratio": 0.1, "warmup_frac": 0.1, "weight_decay": 0.1,
               "betas": [0.9, 0.95], "grad_clip": 1.0, "eval_interval": 100,
               "eval_iters": 300, "patience": 8, "compile": True, "dtype": "bfloat16",
               "log_interval": 10},
    "probes": {"corpora": ["shakespeare_all", "tinystories", "wikitext"]},
}

KIND = Kind(
    name="text",
    description="nanoGPT pairs on chunk splits of a corpus or corpus splits",
    defaults=DEFAULTS,
    outputs=TEXT_OUTPUTS,
    data="reprsim prepare-text CORPUS  (or python train_nanoGPT/data/<corpus>/prepare.py)",
    default_probe_size=82 * 250,  # the study's 20,500 windows per probe set
    preload=("torch", "repr_sim.kinds.text.train", "repr_sim.measure",
             "repr_sim.kinds.text.measure", "repr_sim.data.text", "datasets"),
)
