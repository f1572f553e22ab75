"""The host-side bookkeeping of a run, in one typed record that every checkpoint carries as JSON.

The device state (weights, optimizer, threshold memory) lives in the train-state pytree; what lives here is
what the loop decides on the host: where the run is (cycle, phase), who is labeled and by whom (the initial
split plus the oracle's answers), what each cycle picked and scored, and the best validation score so far.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PHASES = ("train", "acquire", "done")


@dataclasses.dataclass
class Book:
    labeled: list[int]                                         # train rows with a label (split + oracle)
    cycle: int = 0
    phase: str = "train"                                       # one of PHASES
    oracle_labels: dict[int, int] = dataclasses.field(default_factory=dict)
    n_latest: int = 0                                          # N_A: rows annotated in the latest round
    picks: dict[int, list[dict]] = dataclasses.field(default_factory=dict)
    history: list[dict] = dataclasses.field(default_factory=list)   # one row per finished cycle
    best_val: float | None = None                              # best val macro-F1 in the current cycle
    tau: float = 1.0                                           # the threshold at the end of the last stage
    wall_time_s: float = 0.0
    config: dict = dataclasses.field(default_factory=dict)     # what the run trains with (resume checks)
    data_fingerprint: str = ""

    def labels(self, train_y: np.ndarray) -> np.ndarray:
        """Train labels with the oracle's answers in place (they may differ from the file's)."""
        out = np.asarray(train_y, np.int32).copy()
        for i, y in self.oracle_labels.items():
            out[i] = y
        return out

    def record_answers(self, picks: list[dict], answers: dict[int, int]) -> None:
        """Grow the labeled set by one round of answers and move on to the next cycle's training."""
        self.oracle_labels.update({int(i): int(y) for i, y in answers.items()})
        self.picks[self.cycle] = [{**p, "label": int(answers[p["index"]])} for p in picks]
        self.labeled = sorted(set(self.labeled) | set(answers))
        self.n_latest = len(answers)
        self.cycle += 1
        self.phase = "train"
        self.best_val = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["oracle_labels"] = {str(k): v for k, v in self.oracle_labels.items()}
        d["picks"] = {str(k): v for k, v in self.picks.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Book:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["labeled"] = [int(i) for i in d["labeled"]]
        d["oracle_labels"] = {int(k): int(v) for k, v in d.get("oracle_labels", {}).items()}
        d["picks"] = {int(k): v for k, v in d.get("picks", {}).items()}
        return cls(**d)
