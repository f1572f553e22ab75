"""Study: BoostMIS against SSL and AL baselines on PneumoniaMNIST (MedMNIST v2, 28x28 chest X-rays, normal vs
pneumonia) at equal labels and equal steps.

  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir runs/study_pneumonia
  python -m boostmis_jax.study --config configs/study_pneumonia.py --workdir DIR --config.study.preset=full

The data is read from ../shared/data/pneumoniamnist.npz beside this checkout (or --config.data.path=...).
reduced: a CPU-sized CNN, 8 methods x 3 seeds, about 90 minutes on 2 CPU cores. full: WRN-28-2 in bfloat16,
every method x 5 seeds, longer training and four annotation rounds, for a GPU. The table prints MedMNIST v2's
published fully supervised results beside the every-label row (study.reference).
"""
from pathlib import Path

from boostmis_jax.defaults import get_config as _default
from boostmis_jax.study import METHODS, study_section

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pneumoniamnist.npz"


def get_config(preset: str = "reduced"):
    c = _default()
    c.data.source = "medmnist_npz"
    c.data.path = str(DATA)
    c.data.num_labels = 48              # ~1% of 4708 train rows, stratified
    c.al.budget = 16                    # K per selector: 32 annotated per round
    c.train.log_every = 50
    if preset == "full":
        c.model.name = "wrn28_2"
        c.model.dtype = "bfloat16"
        c.train.batch_size = 64
        c.ssl.uratio = 7
        c.train.steps = 8000
        c.al.cycles = 4
        c.al.steps_per_cycle = 2000
        c.train.eval_every = 500
        c.checkpoint.every_steps = 1000
        methods, seeds = list(METHODS), range(5)
    else:
        c.model.name = "cnn"
        c.model.widths = (16, 32, 64)
        c.train.batch_size = 16
        c.ssl.uratio = 3
        c.train.steps = 600
        c.al.cycles = 3
        c.al.steps_per_cycle = 200
        c.train.eval_every = 100
        c.checkpoint.every_steps = 200
        methods = ["supervised", "fixmatch", "flexmatch", "freematch", "boostmis_ssl", "boostmis",
                   "random_al", "full_supervised"]
        seeds = range(3)
    c.study = study_section(methods, seeds, preset, reference="medmnist_v2_pneumonia")
    return c
