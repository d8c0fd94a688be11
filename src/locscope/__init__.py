"""locscope: a virtual microscope for protein localization."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("locscope")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from locscope.errors import LocscopeError, InputError  # noqa: E402

__all__ = ["__version__", "LocscopeError", "InputError"]
