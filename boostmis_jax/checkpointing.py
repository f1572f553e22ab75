"""Orbax checkpoints: the train state pytree plus a JSON record of the active-learning bookkeeping
(labeled set, oracle labels, cycle, phase, picks, best validation score) saved as one atomic step.

A checkpoint that exists but cannot be restored is an error, never a silent restart from scratch. A save
that fails (a full disk, a read-only or vanished filesystem) is one line saying what is needed; orbax writes
each step in `N.orbax-checkpoint-tmp` and renames it on commit, so the earlier checkpoints stay intact and
the partial folder is removed (and never taken as the latest).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from boostmis_jax.errors import UserError, cap
from boostmis_jax.workdir import MB, WorkdirLock, folder_size, latest_checkpoint, mount_point

logging.getLogger("absl").setLevel(logging.WARNING)


class _QuietOrbax(logging.Filter):
    """Orbax logs every failed background write with its traceback (56 of them for one full disk), then
    raises; the raise is what reaches the user, as one line (`Checkpointer._failed`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


logging.getLogger("absl").addFilter(_QuietOrbax())

_OS_CODE = re.compile(r"os_error_code='?(\d+)")  # tensorstore's ValueError text for an OS-level failure
_TMP_STEP = re.compile(r"checkpoints/(\d+)\.orbax-checkpoint-tmp")


class Checkpointer:
    def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, lock: WorkdirLock | None = None):
        """`lock`: the prepared workdir's lock, released (after the last save is on disk) by `close`."""
        self.dir = Path(workdir).absolute() / "checkpoints"
        self.lock = lock
        self._pending: int | None = None     # the step whose asynchronous save may still fail
        self._need = 0                       # bytes one checkpoint takes, for the full-disk line
        self._error: UserError | None = None
        try:
            _refuse_lost_checkpoints(self.dir)
            self.manager = ocp.CheckpointManager(
                self.dir,
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
                item_names=("state", "meta"),
            )
        except BaseException as e:
            if lock is not None:
                lock.release()
            if isinstance(e, OSError):
                raise UserError(f"cannot open the checkpoint folder {self.dir} ({e.strerror or e}); choose "
                                f"another --workdir") from None
            raise

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Asynchronous save; orbax commits the step atomically, so a kill mid-save leaves the older ones.
        A failure (this step's, or the previous step's surfacing now) is one UserError line."""
        if self._error is not None:
            raise self._error
        if step in self.manager.all_steps():
            return
        self._need = max(self._need, _nbytes(state))
        try:
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)), force=True)
        except Exception as e:  # noqa: BLE001  orbax/tensorstore raise OSError, ValueError, ...
            try:  # let the previous step's save commit first: its tmp folder must not be taken as partial
                self.manager.wait_until_finished()
            except Exception:  # noqa: BLE001, S110  its own failure is reported with this one below
                pass
            raise self._failed(e, step) from None
        self._pending = step

    def _failed(self, e: BaseException, step: int | None) -> BaseException:
        """The one-line UserError for a failed save of `step` (or of the step a tmp path in the message
        names); an error that is no filesystem fault (a bug) is returned as is."""
        code = getattr(e, "errno", None) if isinstance(e, OSError) else None
        m = _OS_CODE.search(str(e))
        if code is None and m:
            code = int(m.group(1))
        if code is None and "No space left on device" in str(e):
            code = errno.ENOSPC
        if code is None:
            return e
        m = _TMP_STEP.search(str(e))
        failed = int(m.group(1)) if m else step
        self._pending = None
        self._remove_partial()
        found = latest_checkpoint(self.dir)
        intact = (f"earlier checkpoints are intact (latest: step {found[0]})" if found
                  else "no earlier checkpoint exists")
        where = self.dir / str(failed)
        if code in (errno.ENOSPC, errno.EDQUOT):
            need = max(self._need, folder_size(found[1]) if found else 0)
            what = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
            self._error = UserError(
                f"{what} on {mount_point(self.dir)} while saving checkpoint {failed} to {where}; free "
                f"{max(need, MB) / MB:.0f} MB (one checkpoint) or point --workdir elsewhere; {intact}")
        else:
            self._error = UserError(
                f"cannot save checkpoint {failed} to {where} ({os.strerror(code)}); fix that filesystem or point "
                f"--workdir elsewhere; {intact}")
        return self._error

    def _remove_partial(self) -> None:
        """Drop orbax's uncommitted `N.orbax-checkpoint-tmp*` folders: they hold the space the save needed."""
        if jax.process_index() != 0 or not self.dir.is_dir():
            return
        for p in self.dir.iterdir():
            if ".orbax-checkpoint-tmp" in p.name:
                shutil.rmtree(p, ignore_errors=True)

    def restore_meta(self) -> tuple[int, dict] | None:
        """(step, meta) of the latest checkpoint without touching the state: read first, so a config that no
        longer matches the state's shapes is reported by key, not as a shape mismatch."""
        step = self.latest_step()
        if step is None:
            return None
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001  orbax raises many types for truncated/foreign files
            msg = _library_message(e)
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
            msg = _library_message(e)
            raise UserError(f"checkpoint {self.dir / str(step)} is corrupt or does not match this config "
                            f"({msg}); delete that folder to fall back to an older step, or use a new "
                            f"--workdir") from None
        return step, out["state"], dict(out["meta"])

    def wait(self) -> None:
        if self._error is not None:
            raise self._error
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001  see save
            raise self._failed(e, self._pending) from None
        self._pending = None

    def close(self) -> None:
        """Wait for the last save, close orbax, then release the workdir lock; a save failure already
        reported is not raised again."""
        try:
            if self._error is None:
                self.wait()
        finally:
            try:
                self.manager.close()
            except Exception:
                if self._error is None:
                    raise
            finally:
                if self.lock is not None:
                    self.lock.release()


def _library_message(e: BaseException) -> str:
    """orbax/tensorstore's first line without its 'See full TensorStore details: <bound method ...>' tail."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return cap(re.sub(r"\.?\s*See full TensorStore details:.*", "", first), 160)


# What a run leaves beside its checkpoints once it trained (the folder is made before any of these).
RUN_OUTPUTS = ("summary.json", "model", "metrics.jsonl", "test_predictions.csv")


def _refuse_lost_checkpoints(ckpt_dir: Path) -> None:
    """checkpoints/ gone while the run's outputs are there (deleted to save space, a partial copy): starting
    again from step 0 would overwrite them with a different run. Refuse; say how to start anew on purpose."""
    if ckpt_dir.exists():
        return
    found = [n for n in RUN_OUTPUTS if (ckpt_dir.parent / n).exists()]
    if found:
        raise UserError(f"{ckpt_dir}: missing, but {ckpt_dir.parent} holds a run's outputs "
                        f"({', '.join(found)}); "
                        "restore the checkpoints folder to resume, or use a new --workdir (or delete those "
                        "outputs) to train from scratch")


def _nbytes(state) -> int:
    return sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
