"""Embedded default: scikit-learn's bundled handwritten digits (real 8x8 scans, 10 classes), 50 labels,
a small CNN, BoostMIS thresholding -- trains in about a couple of minutes on 2 CPU cores."""
from boostmis_jax.defaults import get_config as _default


def get_config():
    c = _default()
    c.data.source = "sklearn_digits"
    c.data.num_labels = 50
    c.model.name = "cnn"
    c.model.widths = (32, 64)
    c.aug.flip = False          # digits are not mirror-symmetric
    c.train.steps = 400
    c.train.batch_size = 32
    c.ssl.uratio = 4
    c.train.eval_every = 100
    c.checkpoint.every_steps = 100
    return c
