"""Library warnings while DICOM is read: said by tilepipe (the source's warnings, the summary, the
log), never printed raw, and never taken from a thread that is not reading DICOM.

The real case: every JPEG frame of the wsi_cmu1 slide says RGB while its JFIF marker says YCbCr,
and pydicom warns about it. The test suite ignores that warning (pyproject), so each test here
sets the default filter itself, as a library caller's process has."""

from __future__ import annotations

import logging
import threading
import warnings

import tilepipe
from tests.dicom_helpers import dicom_data
from tilepipe.sources import SourceSpec
from tilepipe.sources.dicom import DicomSource
from tilepipe.sources.dicom_warnings import library_warnings

JFIF = "codestream contains a JFIF APP marker"


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_pydicom_warning_becomes_a_source_warning_and_a_log_line(tmp_path):
    logger = logging.getLogger("tilepipe.sources.dicom")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("default")
            source = DicomSource(SourceSpec(path=str(dicom_data("wsi_cmu1")), level=3))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [w for w in shown if JFIF in str(w.message)]  # nothing raw
    [said] = [w for w in source.warnings if JFIF in w]
    assert said.startswith(f"{dicom_data('wsi_cmu1')}: pydicom warns: ")
    assert [m for m in handler.messages if JFIF in m] == [said]  # logged once, though every frame warns


def test_plan_and_summary_carry_the_library_warning(tmp_path):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        info = tilepipe.plan(str(dicom_data("wsi_cmu1")), level=3, model="standin", weights="none")
        summary = tilepipe.run(str(dicom_data("wsi_cmu1")), str(tmp_path / "s.zarr"), level=3, model="standin",
                               weights="none")
    assert any(JFIF in w for w in info["input"]["warnings"]) and any(JFIF in w for w in summary["warnings"])
    assert not [w for w in shown if JFIF in str(w.message)]


def test_other_threads_keep_their_warnings_while_a_scope_is_open():
    inside, done = threading.Event(), threading.Event()

    def reader():
        with library_warnings("some.dcm") as taken:
            warnings.warn("from the reading thread")
            inside.set()
            done.wait(5)
        reader.taken = taken

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        thread = threading.Thread(target=reader)
        thread.start()
        inside.wait(5)
        warnings.warn("from another thread")
        done.set()
        thread.join()
        warnings.warn("after the scope")
    assert [str(w.message) for w in shown] == ["from another thread", "after the scope"]
    assert reader.taken == ["test_dicom_warnings warns: from the reading thread"]
