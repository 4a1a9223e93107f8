"""The LLM kind: LoRA fine-tunes of a Llama-style base model on text overlap splits
(docs/protocol.md section 6.5; docs/llm.md).

Dataset overlap (`split = "dataset"`): chunk splits of one corpus (tiny-codes in the study).
Task overlap (`split = "task"`): corpus splits over the six corpora, 3 per model. Each model
of a pair is the frozen base plus its own LoRA adapter (`split_<i>/adapter_model.safetensors`);
`reprsim measure` compares the two adapted models' mean-pooled final-norm features.
"""

from ... import results
from ..base import Kind, Output

LLM_CORPORA = ["tinywebtext", "tinycodes", "shakespeare_all", "tinystories", "wikitext",
               "tinytextbooks"]

DEFAULTS = {
    "split": "task",
    "base_model": "meta-llama/Llama-3.2-1B-Instruct",  # a folder, or a hub name in the HF cache
    "preset": "v2",  # which prepared corpora (repr_sim.data.hftext): text/<corpus>/<preset>_hf_<hash>/
    "corpus": "tinycodes",
    "corpora": LLM_CORPORA,
    "num_chunks": 80,
    "fracs": [0.0, 0.3333333333333333, 0.6666666666666666, 1.0],
    "seeds": [0, 1, 2, 3],
    "lora": {"r": 32, "alpha": 64, "dropout": 0.05,
             "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj"]},
    "recipe": {"steps": 1000, "sequences_per_step": 32, "batch_size": 8, "block_size": 512,
               "lr": 5e-5, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
               "grad_clip": 1.0, "dtype": "bfloat16", "save_every": 50, "log_interval": 10,
               "val_windows": 256, "cpu_threads": 0},
    "probes": {"windows": None, "dtype": "float32", "per_block": False,
               "corpora": None},
}

KIND = Kind(
    name="llm",
    description="LoRA fine-tunes of a Llama-style model on chunk or corpus splits",
    defaults=DEFAULTS,
    outputs=(Output(results.LLM_SIM_CSV, "_platonic"),
             Output(results.LLM_LOSS_CSV, "_platonic_loss")),
    data="reprsim prepare-text CORPUS --preset v2 --tokenizer hf:<base model>  "
         "(or bash llm_finetune/run_write_data.sh)",
    default_probe_size=None,  # the study's 10,000 (dataset) / 5,000 (task) windows: probes.windows
    preload=("torch", "transformers", "peft", "repr_sim.kinds.llm.train",
             "repr_sim.kinds.llm.measure"),
)
