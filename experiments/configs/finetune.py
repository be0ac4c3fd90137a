"""Transfer learning on the embedded digits: pretrain on digits 0–4 (supervised, and SimCLR), transfer to
digits 5–9 with 1%, 10% and 100% of their labels (1, 14 and 144 per class), from scratch or as a
feature extractor, the top stage or every layer fine-tuned.

    python -m experiments.finetune                                   # the table of MEASUREMENTS.md
    python -m experiments.finetune --config.pretrainings=supervised --config.label_fractions=0.1   # a quick look
    python -m experiments.finetune --config.pretrained_simclr=<workdir of experiments.simclr on digits 0–4>

Variant `cifar10_cpu`: the CIFAR-10 image folder, SimCLR pretrained on every training image without
labels (the encoder of simclr_cifar10.py:cpu30, 5 epochs), then fine-tuned with 1% and 10% of the
labels of the same ten classes (the semi-supervised setting of SimCLR's paper); 31 min on 2 CPU cores:

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.finetune --config=experiments/configs/finetune.py:cifar10_cpu \
        --config.data.folder="$d/cifar10-jpeg"
"""

import ml_collections

from experiments.configs import data_sources, simclr_cifar10


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # initialisation, batch order and the labelled subsets of every run
    config.data = data_sources.digits()  # classes and label_fraction are set per run from the keys below
    config.source_classes = "0,1,2,3,4"  # what the pretraining sees (its labels only for "supervised")
    config.target_classes = "5,6,7,8,9"  # the new task
    config.label_fractions = "0.01,0.1,1.0"  # of the target's training labels, stratified (at least 1 per class)
    config.pretrainings = "supervised,simclr"  # comma-separated subset
    config.cases = "scratch,linear,top,all"  # comma-separated subset of experiments.finetune.CASES
    # Workdirs of finished pretraining runs on the source classes to start from; "" trains one in
    # <workdir>/pretrain_supervised (experiments.classify) or <workdir>/pretrain_simclr (experiments.simclr).
    config.pretrained_supervised = ""
    config.pretrained_simclr = ""
    # The network of every run (pretraining and transfer share it).
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "width": 8})
    config.dtype = "float32"
    config.conv_impl = "auto"
    config.parallel = "shard_map"
    # Pretraining: experiments.classify and experiments.simclr with their own defaults but these.
    config.supervised = ml_collections.ConfigDict({"epochs": 10, "batch_size": 128, "learning_rate": 0.003})
    config.simclr = ml_collections.ConfigDict({"epochs": 300, "batch_size": 256, "learning_rate": 1.0})
    # Transfer: each cell an experiments.classify run of `steps` steps of min(batch_size, labelled examples),
    # Adam with a cosine decay; the pretrained layers that train at backbone_lr_multiplier × learning_rate.
    config.transfer = ml_collections.ConfigDict({
        "steps": 150, "batch_size": 32, "optimizer": "adam", "learning_rate": 0.003, "weight_decay": 1e-4,
        "backbone_lr_multiplier": 0.1, "finetune_stages": 1})
    config.log_every = 10
    config.checkpoint_every = 100
    config.keep_checkpoints = 1
    config.eval_every = 0  # of every run: 0 evaluates the test set at its end only
    if variant == "cifar10_cpu":
        cifar10_cpu(config)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of finetune.py; use :cifar10_cpu or none")
    return config


def cifar10_cpu(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """SimCLR on all of CIFAR-10's training images, then 1% and 10% of its labels (500 and 5,000)."""
    pretraining = simclr_cifar10.get_config("cpu30")
    config.data = data_sources.image_folder(image_size=32)
    config.source_classes = config.target_classes = ",".join(str(label) for label in range(10))
    config.label_fractions = "0.01,0.1"
    config.pretrainings = "simclr"
    config.model_options = ml_collections.ConfigDict(pretraining.model_options.to_dict())
    config.simclr = ml_collections.ConfigDict({
        "epochs": 5, "batch_size": pretraining.batch_size, "learning_rate": pretraining.learning_rate,
        "warmup_epochs": pretraining.warmup_epochs, "temperature": pretraining.temperature,
        "head_hidden_dim": pretraining.head_hidden_dim, "augment": pretraining.augment.to_dict()})
    config.transfer.update({"steps": 600, "batch_size": 64})
    config.log_every = 50
    config.checkpoint_every = 300
    return config
