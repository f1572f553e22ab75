"""The host-side bookkeeping of a run, in one typed record that every checkpoint carries as JSON.

The device state (weights, optimizer, threshold memory) lives in the train-state pytree; what lives here is
what the loop decides on the host: where the run is (cycle, phase), who is labeled and by whom (the initial
split plus the oracle's answers), what each cycle picked and scored, and the best validation score so far.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PHASES = ("selfsup", "initial", "train", "acquire", "done")  # the first two: selfsup.py


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
    timing: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per phase (PhaseTimer)
    config: dict = dataclasses.field(default_factory=dict)     # what the run trains with (resume checks)
    data_fingerprint: str = ""
    val_rows: list[int] = dataclasses.field(default_factory=list)  # answered rows held out as validation

    def hold_out(self, rows) -> None:
        """Move answered rows from the labeled set to validation (data.val_share; selfsup.py)."""
        rows = {int(i) for i in rows}
        self.labeled = [i for i in self.labeled if i not in rows]
        self.val_rows = sorted(set(self.val_rows) | rows)

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
        d["val_rows"] = [int(i) for i in d.get("val_rows", [])]
        d["oracle_labels"] = {int(k): int(v) for k, v in d.get("oracle_labels", {}).items()}
        d["picks"] = {int(k): v for k, v in d.get("picks", {}).items()}
        return cls(**d)


# Keys a resumed run may change: cadence, output and placement settings that do not change the numbers,
# plus al.cycles (extending a run on purpose) and data.path (checked by the data fingerprint instead).
MAY_CHANGE = ("train.log_every", "train.eval_every", "train.eval_batch_size", "checkpoint.", "parallel.",
              "al.cycles", "al.oracle", "al.chunk", "al.knn_block", "data.path")


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_changes(old: dict, new: dict, defaults: dict | None = None) -> list[str]:
    """'key: old -> new' for every key that changes results between a checkpoint's config and this one.

    A key the checkpoint does not know (added to the defaults since) counts as its default."""
    a, b = {**_flatten(defaults or {}), **_flatten(old)}, _flatten(new)
    changed = []
    for key in sorted(set(a) | set(b)):
        if any(key == m or (m.endswith(".") and key.startswith(m)) for m in MAY_CHANGE):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            changed.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return changed


def data_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 over the arrays' shapes, dtypes and bytes: the same data under another path passes, other
    data with the same shapes does not."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        if a.size:  # an empty split (no labeled val folder yet) has only its shape
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]
