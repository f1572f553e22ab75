"""Study: BoostMIS against SSL and AL baselines on PneumoniaMNIST (MedMNIST v2, 28x28 chest X-rays, normal vs
pneumonia), every arm on the same budget curve (equal arms: boostmis_jax/study/methods.py).

  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir runs/study_pneumonia
  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir DIR --config.study.preset=gpu
  ... --config.study.train_minority=0.1   # normal cut to 10% of train (one cut per seed); 0.02: 2%
  ... --config.study.methods=cold          # the cold-start arms (study.COLD_METHODS): first picks without
                                           # labels on a SimCLR embedding vs random, with/without its init

The data is read from ../shared/data/pneumoniamnist.npz beside this checkout (or --config.data.path=...).
cpu: the core arms x 10 seeds, a small CNN, 300 + 3 x 100 steps (estimated ~80 min on 2 CPU cores from the
previous round's measured 0.11-0.15 s per SSL step; not run in full). gpu: the core arms x 20 seeds, the CNN
in bfloat16 at batch 64, 400 + 3 x 200 steps, several runs at once on one device (study.workers=auto).
Primary endpoint: the area under the balanced-accuracy budget curve (study.primary) on a test set carved
from train (data.test_from_train; the shipped test split is shifted), the shipped test reported beside it.
"""
from pathlib import Path

from boostmis_jax.defaults import get_config as _default
from boostmis_jax.study import CORE_METHODS, study_section

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pneumoniamnist.npz"


def get_config(preset: str = "cpu"):
    c = _default()
    c.data.source = "medmnist_npz"
    c.data.path = str(DATA)
    c.data.num_labels = 48              # ~1% of 4708 train rows
    c.data.label_balance = "random"     # drawn without reading labels, as a user would
    c.data.test_from_train = 0.15       # the primary test: 15% of train (stratified, seed 0); the shipped
    #                                     test (37.5% normal vs 25.8% in train) reported beside it (official/*)
    c.al.budget = 16                    # K per selector: 32 annotated per round
    c.al.cycles = 3
    c.model.name = "cnn"
    c.train.log_every = 50
    if preset in ("gpu", "full"):
        c.model.widths = (32, 64, 128)
        c.model.dtype = "bfloat16"
        c.train.batch_size = 64
        c.ssl.uratio = 3
        c.train.steps = 400
        c.al.steps_per_cycle = 200
        c.train.eval_every = 100
        c.checkpoint.every_steps = 200
        selfsup_steps = 1000
        seeds = range(20)
    else:
        c.model.widths = (16, 32, 64)
        c.train.batch_size = 16
        c.ssl.uratio = 3
        c.train.steps = 300
        c.al.steps_per_cycle = 100
        c.train.eval_every = 50
        c.checkpoint.every_steps = 100
        selfsup_steps = 300
        seeds = range(10)
    c.study = study_section(CORE_METHODS, seeds, preset, reference="medmnist_v2_pneumonia")
    c.study.selfsup_steps = selfsup_steps
    return c
