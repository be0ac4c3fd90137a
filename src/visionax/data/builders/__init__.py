"""TFDS builders prepared to array_record without TensorFlow: embedded digits and any image folder."""
