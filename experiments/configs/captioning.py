"""Four captioners on the embedded digit strings (canvases of 1–4 digits, 24×48).

    python -m experiments.captioning                                # the table of BUILD_NOTES.md
    python -m experiments.captioning --config.epochs=1 --config.data.num_train=1000   # CI smoke run
    python -m experiments.captioning --config.decoders=attention_lstm,lstm --config.epochs=20
"""

import ml_collections

from experiments.configs import training


def get_config() -> ml_collections.ConfigDict:
    # 10,000 training canvases / 64 = 156 steps an epoch.
    config = training.base(batch_size=64, epochs=12, log_every=52, checkpoint_every=312, eval_every=312)
    config.data = ml_collections.ConfigDict({
        "name": "digit_captions",  # or caption_folder (experiments/configs/captioning_folder.py)
        "num_train": 10_000, "num_test": 2_000,  # canvases per split
        "seed": 0,  # the canvases' seed
        "data_dir": "",  # where TFDS keeps the prepared dataset ("" = its default)
        "folder": "", "image_size": 64, "min_count": 1, "max_length": 17,  # caption folders only
    })
    config.decoders = "rnn,lstm,attention_lstm,transformer"  # comma-separated, trained in this order
    # The encoder: any zoo model that ends in global pooling (its last feature map is read).
    # The small CNN's one max-pool leaves a 12×24 map of a 24×48 canvas.
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict({"widths": (16, 32, 64)})
    config.dtype = "float32"
    config.conv_impl = "xla"
    config.max_length = 6  # ids per caption: <START>, at most 4 words, <END>
    config.wordvec_dim = 64  # W, word vectors of the recurrent decoders
    config.hidden_dim = 128  # H, their hidden state
    config.transformer = ml_collections.ConfigDict({
        "embed_dim": 128, "num_heads": 4, "num_layers": 2, "feedforward_dim": 256, "dropout_rate": 0.1})
    training.optimizer(config, "adam", 0.002, schedule="cosine", weight_decay=0.0)
    config.beam_size = 3  # beam search beside greedy decoding
    config.eval_examples = 500  # test images decoded at every eval_every (the curves); all at the end
    config.eval_batch_size = 500
    config.attention_examples = 3  # test canvases in attention.png and in the samples of results.json
    return config
