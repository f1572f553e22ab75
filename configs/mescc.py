"""MESCC grading from precomputed ResNet-50 features (`{split}-features.npy` + `{split}-targets.npy`),
MLP head 2048-512-C, as a BoostMIS run: the release's class-balanced start (250 labels per class) and
active annotation rounds with K = 50 per selector (aus + bus, 100 new labels a round).

The release ships features, not images, so the weak/strong views are feature-space ones (Gaussian noise
and dropout, `aug.feat_*`) standing in for image augmentation.
"""
from boostmis_jax.defaults import get_config as _default


def get_config():
    c = _default()
    c.data.source = "mescc_features"
    c.data.path = "data/mescc"
    c.data.label_balance = "balanced"   # the release: 250 per class
    c.data.num_labels = 1500            # 250 x 6 grades; balanced takes a small class whole, with a warning
    c.model.name = "mlp"
    c.model.hidden = (512,)
    c.train.steps = 2000
    c.train.batch_size = 64
    c.ssl.uratio = 7
    c.al.cycles = 3
    c.al.budget = 50                    # K per selector, as the release
    c.al.steps_per_cycle = 1000
    return c
