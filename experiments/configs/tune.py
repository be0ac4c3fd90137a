"""The hyperparameter recipe of lecture 8 run on a supervised config (default: experiments.classify's
small CNN on the embedded digits), with the search settings in `config.tune`.

    python -m experiments.tune                                         # the report of MEASUREMENTS.md
    python -m experiments.tune --config=experiments/configs/classify.py   # any supervised config, default search
    python -m experiments.tune --config=experiments/configs/tune.py:classify --config.tune.dense_sweep=0
    python -m experiments.tune --config.tune.overfit_steps=20 --config.tune.lr_iterations=10 \
        --config.tune.random_trials=2 --config.tune.grid_learning_rates=2 --config.tune.weight_decays=0 \
        --config.tune.coarse_epochs=1 --config.tune.longer_trials=1 --config.tune.longer_epochs=1 \
        --config.tune.dense_sweep=0                                   # CI smoke run

A variant names the supervised config in experiments/configs to tune (`tune.py:<name>`).
"""

import importlib

import ml_collections


def search() -> ml_collections.ConfigDict:
    """The recipe's settings (also used for a supervised config that has no `tune` block)."""
    return ml_collections.ConfigDict({
        "validation_fraction": 0.1,  # held out of training when the config holds out nothing
        # 1. The initial loss (regularisation off) within this relative distance of ln C (SVM: (C − 1)Δ).
        "initial_loss_tolerance": 0.25,
        # 2. Overfit the first overfit_batches minibatches (regularisation off) for overfit_steps steps.
        "overfit_batches": 5,
        "overfit_steps": 200,
        # 3. These learning rates for lr_iterations steps with a small weight decay: the lowest training loss.
        "lr_candidates": "0.1,0.01,0.001,0.0001",
        "lr_iterations": 100,
        "lr_weight_decay": 1e-4,
        # 4. Around it (± search_decades): random_trials log-uniform learning rates, each with a weight decay
        #    drawn from weight_decays, beside the grid of grid_learning_rates × weight_decays; coarse_epochs each.
        "search_decades": 1.0,
        "weight_decays": "1e-4,1e-5,0",
        "random_trials": 9,
        "grid_learning_rates": 3,
        "coarse_epochs": 3,
        "rank_by": "loss",  # validation "loss" or "accuracy" ranks the trials
        # 5. The best longer_trials of step 4 trained longer_epochs at a constant learning rate.
        "longer_trials": 3,
        "longer_epochs": 15,
        # 6. The curves' rules: "still falling" when the training and validation losses both fell by more than
        #    `falling` (relative) over the last quarter of the evaluations; "overfitting" when the final training
        #    accuracy exceeds the validation accuracy by more than overfit_gap; otherwise "underfitting" at a
        #    final training accuracy below fit_accuracy ("fits" above).
        "falling": 0.02,
        "overfit_gap": 0.05,
        "fit_accuracy": 0.99,
        "eval_points": 10,  # evaluations along each trial's curve
        "eval_examples": 512,  # training examples evaluated for the training curve
        # A check of the recipe: dense_sweep log-spaced learning rates over the candidates' range, trained as
        # step 5 (0: none) from dense_sweep_seeds initialisations and batch orders (seed, seed + 1, ...); the
        # report gives the rate of the lowest mean validation loss beside the recipe's.
        "dense_sweep": 12,
        "dense_sweep_seeds": 3,
    })


def get_config(variant: str = "classify") -> ml_collections.ConfigDict:
    try:
        module = importlib.import_module(f"experiments.configs.{variant}")
    except ModuleNotFoundError:
        raise ValueError(f"no supervised config experiments/configs/{variant}.py; use e.g. tune.py:classify") from None
    config = module.get_config()
    config.tune = search()
    return config
