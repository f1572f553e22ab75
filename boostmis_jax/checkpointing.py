"""Orbax checkpoints: the train state pytree plus a JSON record of the active-learning bookkeeping
(labeled set, oracle labels, cycle, phase, picks, best validation score) saved as one atomic step.

A checkpoint that exists but cannot be restored is an error, never a silent restart from scratch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from boostmis_jax.errors import UserError

logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpointer:
    def __init__(self, workdir: str | os.PathLike, *, keep: int = 3):
        self.dir = Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.dir,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Asynchronous save; orbax commits the step atomically, so a kill mid-save leaves the older ones."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def restore_meta(self) -> tuple[int, dict] | None:
        """(step, meta) of the latest checkpoint without touching the state: read first, so a config that no
        longer matches the state's shapes is reported by key, not as a shape mismatch."""
        step = self.latest_step()
        if step is None:
            return None
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001  orbax raises many types for truncated/foreign files
            msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise UserError(f"checkpoint {self.dir / str(step)} cannot be read ({msg}); move that folder "
                            f"aside to resume from an older step, or use a new --workdir") from None
        return step, dict(out["meta"])

    def restore(self, abstract_state: dict) -> tuple[int, dict, dict] | None:
        """(step, state, meta) of the latest checkpoint, or None when there is none."""
        step = self.latest_step()
        if step is None:
            return None
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                              abstract_state)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001  orbax raises many types for truncated/foreign files
            msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise UserError(f"checkpoint {self.dir / str(step)} is corrupt or does not match this config "
                            f"({msg}); delete that folder to fall back to an older step, or use a new "
                            f"--workdir") from None
        return step, out["state"], dict(out["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
