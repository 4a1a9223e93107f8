"""The label-partition kind: task overlap alone, several label sets of one dataset
(ColorShapeDigit800k), the image trainer per model (docs/protocol.md sections 1-3)."""

from ..base import IMAGE_OUTPUTS, Kind

DEFAULTS = {
    "split": "partition",
    "mode": "none",
    "arch": "resnet18",
    "fracs": [0.0, 0.5, 1.0],  # partitions 1, 2, 3
    "seeds": list(range(10)),
    "recipe": {"epochs": 20, "batch_size": 512, "drop_last": False, "lr": 0.5,
               "peak_epoch": 10, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
               "label_smoothing": 0.1},
    # Colour is part of the labels, so no colour jitter.
    "augment": {"flip": 0.5, "brightness": 0, "contrast": 0, "saturation": 0, "jitter_p": 0,
                "translate": 2, "cutout": 4, "fill": "mean"},
    "loader": {},
    "probes": {"ood": {"cifar10": "cifar10_28", "digit": "digit_only", "mnist": "mnist_28",
                       "shape": "shape_only", "svhn": "svhn_28"}},
}

KIND = Kind(
    name="partition",
    description="label partitions of ColorShapeDigit800k, one ResNet per label set",
    defaults=DEFAULTS,
    outputs=IMAGE_OUTPUTS,
    data="python train_task_only/prepare_data.py  (the tree, then its betons)",
    default_probe_size=42 * 512,  # the study's 42 batches of 512 per probe set
    preload=("torch", "repr_sim.kinds.image.train", "repr_sim.kinds.partition.train",
             "repr_sim.measure", "repr_sim.kinds.partition.measure"),
)
