"""The fine-tuning kind (docs/protocol.md sections 6.1-6.3): pairs of pretrained timm ResNets or ViTs
fine-tuned on dataset or task splits of an image dataset, or on the ColorShapeDigit label
partitions; measured with the eight metrics on pre-logit features; and attacked with
MI-FGSM between the two models of a pair (`reprsim attack`). Training:
repr_sim.kinds.finetune.train; measurement: .measure; attacks: repr_sim.attack with this
kind's hook .attack; docs/finetune.md.
"""

from ... import results
from ..base import Kind, Output

# The study's values (docs/protocol.md section 6.1); an experiment lists what differs.
DEFAULTS = {
    "split": "dataset",  # "dataset", "task" or "partition"
    "mode": "constrained",
    "dataset": "cifar100",  # registry entry: classes
    "betons": "",  # the beton folder under $REPRSIM_DATA/ffcv/ ("": the dataset's name)
    "arch": "resnet18",  # any timm model name
    "pretrained": "a1_in1k",  # the timm tag, named explicitly; "none": random initialisation
    "pretrained_file": "",  # a local weights file (relative: under $REPRSIM_DATA); "": HF cache
    "model_kwargs": {},  # extra timm.create_model keywords (tiny test models)
    "input_size": 224,  # inputs upsampled to this side on the device, after augmentation
    # "study": mean = std = 127 on the 0-255 scale for every model, as the study did;
    # "weights": the pretrained weights' own mean/std (ImageNet's for the ResNets).
    "normalisation": "study",
    "fracs": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "seeds": [0, 1, 2, 3],
    "recipe": {"epochs": 5, "batch_size": 256, "drop_last": True, "peak_epoch": 1,
               "label_smoothing": 0.1},
    # Per family (repr_sim.models.timm_models.family); recipe.optimizer/lr/weight_decay/
    # momentum, when a config sets them, override these.
    "optim": {"resnet": {"optimizer": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4},
              "vit": {"optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.05}},
    "augment": {"flip": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.3,
                "jitter_p": 0.3, "translate": 8, "cutout": 10, "fill": [127, 127, 127]},
    "loader": {},
    # Dataset split: one column metric_<dataset> per probe beton (its test part); task
    # split: metric_overlap, metric_ood_one, then these; partitions: partition_metric only.
    "probes": {"sets": ["cifar100", "tinyimagenet", "cifar10"]},
    # MI-FGSM (docs/protocol.md section 6.3); eps on the 0-1 pixel scale, 0 = by split (1/255
    # dataset, 2/255 task).
    "attack": {"eps": 0, "steps": 3, "momentum": 1.0, "images": 500, "batch_size": 100,
               "seed": 0, "probe": ""},
}

KIND = Kind(
    name="finetune",
    description="pretrained timm ResNet/ViT pairs fine-tuned on overlap splits, transfer attacks",
    defaults=DEFAULTS,
    outputs=(Output(results.IMAGE_SIM_CSV, "_platonic"),
             Output(results.IMAGE_ACC_CSV, "_platonic_acc")),
    data="bash vit_resnet_different_model_size/run_write_ffcv_data.sh [--tiny]",
    default_probe_size=None,  # whole sets (partitions: the study's 42 batches of 512)
    preload=("torch", "timm", "repr_sim.kinds.finetune.train", "repr_sim.models.timm_models",
             "repr_sim.measure", "repr_sim.kinds.finetune.measure"),
)
