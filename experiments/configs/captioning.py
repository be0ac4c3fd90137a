"""Four captioners on the embedded digit strings (canvases of 1–4 digits, 24×48).

    python -m experiments.captioning                                # the table of BUILD_NOTES.md
    python -m experiments.captioning --config.epochs=1 --config.data.num_train=1000   # CI smoke run
    python -m experiments.captioning --config.decoders=attention_lstm,lstm --config.epochs=8
"""

import ml_collections

from experiments.configs import training


def get_config() -> ml_collections.ConfigDict:
    # 40,000 training canvases / 64 = 625 steps an epoch. Tuned for the attention LSTM (BUILD_NOTES.md):
    # 10,000 canvases for 24 epochs fit the training set and stopped at 87% exact match on 4 digits.
    config = training.base(batch_size=64, epochs=4, log_every=50, checkpoint_every=625, eval_every=250)
    config.data = ml_collections.ConfigDict({
        "name": "digit_captions",  # or caption_folder (experiments/configs/captioning_folder.py)
        "num_train": 40_000, "num_test": 2_000,  # canvases per split
        "seed": 0,  # the canvases' seed
        "data_dir": "",  # where TFDS keeps the prepared dataset ("" = its default)
        "folder": "", "image_size": 64, "min_count": 1, "max_length": 17,  # caption folders only
    })
    config.decoders = "rnn,lstm,attention_lstm,transformer"  # comma-separated, trained in this order
    # The encoder: any zoo model that ends in global pooling (its last feature map is read).
    # The small CNN's one max-pool (after its second layer) leaves a 12×24 map of a 24×48 canvas; its
    # fourth layer widens each position's view to 13×13 pixels, more than a digit.
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict({"widths": (16, 32, 64, 64)})
    config.dtype = "float32"
    config.conv_impl = "xla"
    config.max_length = 6  # ids per caption: <START>, at most 4 words, <END>
    config.wordvec_dim = 64  # W, word vectors of the recurrent decoders
    config.hidden_dim = 128  # H, their hidden state
    config.transformer = ml_collections.ConfigDict({
        "embed_dim": 128, "num_heads": 4, "num_layers": 2, "feedforward_dim": 256, "dropout_rate": 0.1})
    training.optimizer(config, "adam", 0.002, schedule="cosine", weight_decay=1e-4)
    config.beam_size = 3  # beam search beside greedy decoding
    config.eval_examples = 500  # test images decoded at every eval_every (the curves); all at the end
    config.eval_batch_size = 500
    config.attention_examples = 3  # test canvases in attention.png and in the samples of results.json
    return config
