"""The one line is the last and only thing: a library's own log of a failure we report (pydicom's
traceback for a damaged JPEG 2000 stream) and the echoes background event loops print after a failed
orbax save or restore ('Event loop is closed') stay off stderr; anything else still prints."""
from __future__ import annotations

import io
import logging
import sys
import threading

import numpy as np
import pydicom
import pytest
from test_dicom import write_dcm

from boostmis_jax.data.dicom import DicomOptions, read_dicom
from boostmis_jax.errors import UserError


def damaged_j2k(path):
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    if not get_decoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 decoder installed")
    arr = np.random.default_rng(0).integers(0, 256, (16, 16)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG2000", irreversible=False)
    write_dcm(path, arr)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([buf.getvalue()[: len(buf.getvalue()) // 3]])  # a truncated stream
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(path)
    return path


def test_damaged_jpeg2000_logs_nothing_before_the_line(tmp_path, caplog):
    path = damaged_j2k(tmp_path / "bad.dcm")
    level = logging.getLogger("pydicom").level
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UserError, match="bad.dcm: cannot decode the pixel data"):
        read_dicom(path, DicomOptions())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text[:2000]
    assert logging.getLogger("pydicom").level == level  # muted only inside the decode


@pytest.fixture
def hooks():
    saved = threading.excepthook, sys.unraisablehook, logging.getLogger("asyncio").level
    yield
    threading.excepthook, sys.unraisablehook = saved[:2]
    logging.getLogger("asyncio").setLevel(saved[2])


def test_event_loop_echoes_are_dropped_other_errors_kept(hooks, capfd):
    seen = []
    threading.excepthook = lambda args: seen.append(str(args.exc_value))
    sys.unraisablehook = lambda args: seen.append(str(args.exc_value))
    from boostmis_jax.errors import quiet_library_noise
    quiet_library_noise()

    def boom(msg):
        raise RuntimeError(msg)

    for msg in ("Event loop is closed", "a real bug"):
        t = threading.Thread(target=boom, args=(msg,))
        t.start()
        t.join()
    sys.unraisablehook(type("A", (), {"exc_value": RuntimeError("Event loop is closed")})())
    logging.getLogger("asyncio").error("Exception in callback", exc_info=RuntimeError("Event loop is closed"))
    assert seen == ["a real bug"]  # not ours to hide
    assert "Event loop is closed" not in capfd.readouterr().err
