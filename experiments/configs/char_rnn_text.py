"""The character models on a text of your own (Karpathy's char-rnn setting: tiny Shakespeare's 1.1 MB
`input.txt`, or any UTF-8 file), larger and longer than the embedded-text default.

    python -m experiments.char_rnn --config=experiments/configs/char_rnn_text.py \
        --config.data.text_file=input.txt

The last 10% of the file is held out. 64 streams × 100 characters a step; 5,000 steps read 32 MB,
about 30 passes over a 1.1 MB text.
"""

import ml_collections

from experiments.configs import char_rnn


def get_config() -> ml_collections.ConfigDict:
    config = char_rnn.get_config()
    config.data.text_file = "input.txt"  # relative to the working directory; a missing file is one line
    config.embedding = 128
    config.hidden = 512
    config.batch_size = 64
    config.chunk_length = 100
    config.num_steps = 5000
    config.learning_rate = 2e-3
    config.eval_every = 1000
    config.checkpoint_every = 500
    config.sample_prompt = "\n"
    config.sample_length = 600
    return config
