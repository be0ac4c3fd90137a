"""The captioners on a caption folder (the Flickr8k/COCO layout: `<folder>/{train,test}/images/*`
with `captions.json` mapping each file to its captions), with a ResNet-18 encoder.

    python -m experiments.captioning --config=experiments/configs/captioning_folder.py \
        --config.data.folder=<dir>
"""

import ml_collections

from experiments.configs import captioning


def get_config() -> ml_collections.ConfigDict:
    config = captioning.get_config()
    config.data.name = "caption_folder"
    config.data.image_size = 64  # images resized to 64×64 when the folder is prepared
    config.data.min_count = 5  # rarer words become <UNK>
    config.data.max_length = 17  # <START>, at most 15 words, <END>
    config.max_length = 17
    # ResNet-18 with the CIFAR stem (stride 1, no max-pool): an 8×8 map of a 64×64 image.
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "width": 32})
    config.conv_impl = "auto"
    config.wordvec_dim = 256
    config.hidden_dim = 512
    config.transformer.update({"embed_dim": 256, "num_heads": 4, "num_layers": 2, "feedforward_dim": 1024})
    config.epochs = 10
    config.batch_size = 128
    config.log_every = 50
    config.checkpoint_every = 500
    config.eval_every = 500
    config.learning_rate = 0.001
    return config
