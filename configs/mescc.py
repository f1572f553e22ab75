"""MESCC grading from precomputed ResNet-50 features (`{split}-features.npy` + `{split}-targets.npy`),
MLP head 2048-512-C, feature-space weak/strong views."""
from boostmis_jax.defaults import get_config as _default


def get_config():
    c = _default()
    c.data.source = "mescc_features"
    c.data.path = "data/mescc"
    c.data.num_labels = 60
    c.model.name = "mlp"
    c.model.hidden = (512,)
    c.train.steps = 2000
    c.train.batch_size = 64
    c.ssl.uratio = 7
    c.al.budget = 20
    return c
