"""The keys every training config holds: seed, devices, batch, the loop's cadence, the optimizer and
where to start from. Not an experiment config itself."""

import ml_collections

from experiments.configs import data_sources


def base(*, batch_size: int, epochs: int, log_every: int, checkpoint_every: int, eval_every: int,
         keep_checkpoints: int = 2) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = batch_size  # global: split over every device of every host
    config.epochs = epochs
    config.parallel = "shard_map"  # or "pmap": the same numbers
    config.init_from = ""  # a workdir whose latest checkpoint gives the encoder's weights
    config.data = data_sources.digits()
    config.validation_fraction = 0.0  # the share of each class held out of training for validation (0: none)
    config.log_every = log_every  # steps between metric records (metrics.jsonl, TensorBoard)
    config.checkpoint_every = checkpoint_every
    config.keep_checkpoints = keep_checkpoints
    config.eval_every = eval_every  # steps between evaluations (0: only at the end)
    return config


def optimizer(config: ml_collections.ConfigDict, name: str, learning_rate: float, *, schedule: str,
              weight_decay: float, scale_learning_rate: bool = False, warmup_epochs: int = 0
              ) -> ml_collections.ConfigDict:
    """`config` with the keys `visionax.train.optimizer.create_optimizer` reads."""
    config.optimizer = name  # a name of visionax.optim.OPTIMIZERS
    config.learning_rate = learning_rate  # the base rate (× batch_size/256 if scale_learning_rate)
    config.scale_learning_rate = scale_learning_rate  # the linear scaling rule
    config.schedule = schedule  # constant, cosine, warmup_cosine or step
    config.warmup_epochs = warmup_epochs  # used by warmup_cosine
    config.weight_decay = weight_decay  # λθ added to the gradient
    config.weight_decay_mask = "weights"  # kernels only (no biases, no normalisation); or "all"
    return config


def supervised(config: ml_collections.ConfigDict, *, loss: str = "softmax", l2_penalty: float = 0.0
               ) -> ml_collections.ConfigDict:
    """`config` with the keys of `visionax.train.supervised.SupervisedSettings`: the loss, the L2
    penalty, the augmentation (all off by default) and the Polyak decay of averaged parameters."""
    config.loss = loss  # softmax or svm
    config.svm_margin = 1.0
    config.l2_penalty = l2_penalty  # λ of loss + λ·R(W), biases excluded
    config.polyak_decay = 0.99
    config.augment = ml_collections.ConfigDict(
        {"crop_padding": 0, "flip_probability": 0.0, "cutout_size": 0, "mixup_alpha": 0.0})
    return config
