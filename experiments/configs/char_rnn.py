"""Character language models: the vanilla RNN, the LSTM and the GRU side by side on one text.

    python -m experiments.char_rnn                          # the embedded Python documentation, CPU
    python -m experiments.char_rnn --config.data.text_file=shakespeare.txt   # any UTF-8 file
    python -m experiments.char_rnn --config.cells=lstm --config.num_steps=200   # a quick look
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # initialisation (the same for every cell) and sampling
    config.cells = "rnn,lstm,gru"  # comma-separated names of visionax.models.char_lm.CELLS
    # The text: the embedded Python documentation ("") or a UTF-8 file; the last 10% is held out.
    config.data = ml_collections.ConfigDict({"text_file": "", "data_dir": ""})  # data_dir: TFDS folder ("" default)
    config.embedding = 64  # size of the learned character vectors
    config.hidden = 256  # units of every cell (the LSTM has 4x, the GRU 3x the RNN's recurrent weights)
    # Truncated BPTT: batch_size contiguous streams read chunk_length characters at a time, the hidden
    # state carried from chunk to chunk; 32 × 64 = 2,048 characters a step, one pass over the
    # embedded text's 418,543 training characters every 204 steps.
    config.batch_size = 32
    config.chunk_length = 64  # also the chunk of the held-out evaluation's scan (same number, less memory)
    config.num_steps = 1000  # optimizer steps per cell
    # Adam with a cosine decay from learning_rate to decay_to × learning_rate over num_steps (1: constant),
    # after clipping the gradient to a global norm of clip_norm.
    config.learning_rate = 3e-3
    config.decay_to = 0.1
    config.clip_norm = 5.0
    # The training loop's cadence (visionax.train.loop.fit), in steps; eval: held-out bits per character.
    config.log_every = 10  # a record holds the mean loss (and the mean chunk position) of these steps
    config.eval_every = 250  # 0: only at the end
    config.checkpoint_every = 250
    config.keep_checkpoints = 2
    # Samples after training: sample_length characters after the prompt at each temperature (0: greedy).
    config.sample_prompt = "The "
    config.sample_length = 300
    config.sample_temperatures = "0.2,0.5,1.0"  # comma-separated, each >= 0
    return config
