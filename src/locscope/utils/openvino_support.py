"""Importing OpenVINO and NNCF without their usage telemetry.

OpenVINO's model converter and NNCF report usage to Google Analytics unless the user has opted out: their
``openvino_telemetry`` package treats a missing consent file as consent for these tools and writes a client id and
counters under ``~/intel``. locscope sends no data anywhere and writes nothing outside the folders it is given, so
before the first import it makes the package's consent check answer "declined" for this process (the answer an
opted-out user gets): the tools then write no id and send nothing.
"""

from __future__ import annotations

from types import ModuleType

_declined = False


def decline_telemetry() -> None:
    """Make ``openvino_telemetry``'s consent check return "declined" in this process (idempotent; a no-op without
    the package). Every ``Telemetry.init`` (the converter and NNCF re-initialise it) then sets ``consent = False``."""
    global _declined
    if _declined:
        return
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        _declined = True
        return

    def declined(self, enable_opt_in_dialog=None, disable_in_ci=False):
        return ConsentCheckResult.DECLINED

    OptInChecker.check = declined
    from openvino_telemetry import Telemetry

    # an instance created before this call (by an earlier import of nncf) stops sending too; none is created here
    existing = getattr(Telemetry, "_SingletonMetaClass__single_instance", None)
    if existing is not None:
        existing.consent = False
    _declined = True


def import_openvino() -> ModuleType:
    """``openvino``, telemetry declined."""
    decline_telemetry()
    import openvino

    return openvino


def import_nncf() -> ModuleType:
    """``nncf``, telemetry declined."""
    decline_telemetry()
    import nncf

    return nncf


__all__ = ["decline_telemetry", "import_nncf", "import_openvino"]
