"""PneumoniaMNIST (MedMNIST v2 npz, 28x28 chest X-rays, normal vs pneumonia), ~1% labels.

`model.name=wrn28_2` gives the original backbone (GPU); the default CNN is the CPU-friendly option.
Add `--config.al.cycles=3` for BoostMIS's active annotation rounds.
"""
from boostmis_jax.defaults import get_config as _default


def get_config():
    c = _default()
    c.data.source = "medmnist_npz"
    c.data.path = "../shared/data/pneumoniamnist.npz"
    c.data.num_labels = 48      # ~1% of 4708
    c.model.name = "cnn"
    c.model.widths = (16, 32, 64)   # CPU-sized; wrn28_2 on a GPU
    c.train.steps = 1000
    c.train.batch_size = 16
    c.ssl.uratio = 3
    c.train.eval_every = 250
    c.checkpoint.every_steps = 250
    c.al.budget = 16
    c.al.steps_per_cycle = 500
    return c
