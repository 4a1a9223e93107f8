"""The image kind: pairs of ResNets on dataset or task splits of an image dataset
(docs/protocol.md sections 1-3). Training: repr_sim.kinds.image.train; measurement:
repr_sim.kinds.image.measure; transfer attacks between the two models of a pair (`reprsim
attack`): repr_sim.kinds.image.attack."""

from ..base import IMAGE_OUTPUTS, Kind

# The study's CIFAR recipe (docs/protocol.md section 2); an experiment lists what differs.
DEFAULTS = {
    "split": "dataset",
    "mode": "constrained",
    "arch": "resnet18_cifar",
    "fracs": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "seeds": list(range(10)),
    "recipe": {"epochs": 50, "batch_size": 512, "drop_last": True, "lr": 0.5, "peak_epoch": 10,
               "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
               "label_smoothing": 0.1},
    "augment": {"flip": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.3,
                "jitter_p": 0.3, "translate": 8, "cutout": 10, "fill": "mean"},
    "loader": {},
    "probes": {"ood": ["mnist", "svhn"]},
    # MI-FGSM transfer attacks (`reprsim attack`, repr_sim.attack; the keys and values of the
    # fine-tuning kind, docs/protocol.md section 6.3): eps on the 0-1 pixel scale, 0 = by
    # split (1/255 dataset, 2/255 task); probe "" = the experiment's test beton.
    "attack": {"eps": 0, "steps": 3, "momentum": 1.0, "images": 500, "batch_size": 100,
               "seed": 0, "probe": ""},
}

KIND = Kind(
    name="image",
    description="ResNet pairs on dataset or task splits of an image dataset",
    defaults=DEFAULTS,
    outputs=IMAGE_OUTPUTS,
    data="reprsim write-data DATASET [PROBES...]  (FFCV betons under $REPRSIM_DATA/ffcv/)",
    default_probe_size=None,  # the study's: every input of every probe set
    preload=("torch", "repr_sim.kinds.image.train", "repr_sim.models.resnet",
             "repr_sim.measure", "repr_sim.kinds.image.measure", "repr_sim.data.shapes",
             "ffcv.fields", "ffcv.reader", "ffcv.writer"),
)
