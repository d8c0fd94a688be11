"""The model hub: bundled model names -> model family -> loader.

Every ``model=`` argument (``--model NAME_OR_DIR`` on the command line) resolves here. A name is either a bundled
model (``celldiff-tiny``, ``designer-tiny``, ``subcell-tiny``: folders under ``locscope/assets/models``) or a path. A
model directory says its family in its ``config.json``: an explicit ``"family"`` field, or the ``"class"`` field that
:func:`locscope.utils.checkpoint.save_pretrained` writes (the config dataclass name, e.g. ``"CellDiffConfig"``). A path
that is not a locscope directory (e.g. a published SubCell ``model_config.yaml``) is claimed by a family's ``detect``.

>>> from locscope.models import hub
>>> ref = hub.resolve("celldiff-tiny")
>>> ref.family, ref.directory.name
('celldiff', 'celldiff-tiny')
>>> model = ref.load(device="cpu")          # CellDiff in eval mode  # doctest: +SKIP

Adding a family (one line per family, in the registry block at the end of this file)::

    register_family("celle2", loader="locscope.models.celle2:load_celle2",
                    config_classes=("Celle2Config",), title="CELL-E 2 model")
    register_bundled("celle2-tiny", "celle2")      # only if weights ship in assets/models/celle2-tiny/

``loader`` is ``"module:attribute"`` (imported only when a model of that family is loaded, so the hub stays cheap
to import) naming a callable ``loader(path, device, **options) -> torch.nn.Module`` in eval mode. A pipeline that
serves several families dispatches on :attr:`ModelRef.family`.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from locscope.errors import ArgumentError, InputError

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
#: The generator ``locscope generate`` and ``locscope demo`` use without ``--model``.
DEFAULT_GENERATOR = "celldiff-64"
CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Attributes
    ----------
    name : str
        Family name (``"celldiff"``), the value of a ``config.json`` ``"family"`` field.
    loader : str
        ``"module:attribute"`` of ``loader(path, device, **options)``.
    config_classes : tuple of str
        ``config.json`` ``"class"`` values that mean this family.
    title : str
        What to call a model of the family in messages (``"CELL-Diff model"``).
    detect : callable or None
        ``detect(path) -> bool`` for paths without a locscope ``config.json`` (published layouts).
    """

    name: str
    loader: str
    config_classes: tuple[str, ...] = ()
    title: str = "model"
    detect: Callable[[Path], bool] | None = None

    def load_function(self) -> Callable[..., Any]:
        """The loader callable (imports its module)."""
        module_name, _, attribute = self.loader.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``model=`` argument: its ``name`` as given, its ``family`` and where it lives (``path``: the model
    directory, or a file for published layouts)."""

    name: str
    family: str
    path: Path
    bundled: bool = False

    @property
    def directory(self) -> Path:
        """The model directory (the path itself, or the folder of a file)."""
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def title(self) -> str:
        return FAMILIES[self.family].title

    def load(self, device: Any = "cpu", **options: Any) -> Any:
        """Load the model with its family's loader (``options`` go to the loader)."""
        return FAMILIES[self.family].load_function()(self.path, device, **options)


FAMILIES: dict[str, ModelFamily] = {}
BUNDLED: dict[str, str] = {}   # bundled model name -> family; weights in ASSETS_DIR / "models" / name


def register_family(name: str, loader: str, *, config_classes: Iterable[str] = (), title: str = "model",
                    detect: Callable[[Path], bool] | None = None) -> ModelFamily:
    """Register a model family (see the module docstring); registering a name again replaces it."""
    family = ModelFamily(name, loader, tuple(config_classes), title, detect)
    FAMILIES[name] = family
    return family


def register_bundled(name: str, family: str) -> None:
    """Register a bundled model: ``locscope/assets/models/<name>/`` holds a model of ``family``."""
    if family not in FAMILIES:
        raise ValueError(f"register_bundled: unknown family {family!r} (register_family first)")
    BUNDLED[name] = family


def bundled_names(family: str | None = None) -> list[str]:
    """Bundled model names (of one family, or all)."""
    return [name for name, fam in BUNDLED.items() if family is None or fam == family]


def asset_path(relative: str | Path) -> Path:
    """Path of a file shipped in ``locscope/assets`` (e.g. ``"examples/proteins.fasta"``)."""
    return ASSETS_DIR / relative


def family_of(path: str | Path) -> str | None:
    """The family a model directory (its ``config.json``) or a published file says it is; None if none does.

    Raises
    ------
    InputError
        If ``config.json`` is not valid JSON (naming the file and line).
    """
    path = Path(path)
    config = path / CONFIG_NAME
    if config.is_file():
        try:
            payload = json.loads(config.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{config}: invalid JSON at line {err.lineno}: {err.msg}") from None
        if isinstance(payload, dict):
            if payload.get("family") in FAMILIES:
                return payload["family"]
            for family in FAMILIES.values():
                if payload.get("class") in family.config_classes:
                    return family.name
    for family in FAMILIES.values():
        if family.detect is not None and family.detect(path):
            return family.name
    return None


def family_of_model(model: str | Path | None, default: str) -> str | None:
    """The family of a ``model=`` argument without loading anything: a bundled name's family, or what a path's
    ``config.json`` (or a family's ``detect``) says; None for anything else (:func:`resolve` then reports it).

    A pipeline serving several families dispatches on this before it loads (``generate``: CELL-Diff / latent here,
    ``celle2`` and ``celldiff-released`` to their own loops).
    """
    name = str(model) if model else default
    if name in BUNDLED:
        return BUNDLED[name]
    return family_of(Path(name)) if Path(name).exists() else None


def resolve(model: str | Path | None = None, *, default: str | None = None, families: Iterable[str] | None = None,
            argument: str = "model") -> ModelRef:
    """Resolve a bundled name or a path to a :class:`ModelRef`.

    Parameters
    ----------
    model : str, Path or None
        A bundled name (:func:`bundled_names`) or a model directory / published model file; None -> ``default``.
    default : str, optional
        The bundled name used when ``model`` is None.
    families : iterable of str, optional
        The families the caller can run; another family is an error. The first one names the expected model in
        messages.
    argument : str
        The caller's argument name, which error messages (:class:`~locscope.errors.ArgumentError`) start with; the
        CLI shows the command's flag instead.

    Raises
    ------
    InputError
        If nothing is found there, its family is unknown or not one of ``families``.
    """
    accepted = tuple(families) if families is not None else tuple(FAMILIES)
    title = FAMILIES[accepted[0]].title if len(accepted) == 1 else "model"
    name = str(model if model is not None else (default or ""))
    if not name:
        raise ArgumentError(argument, f": no model given (bundled names: {', '.join(bundled_names()) or 'none'})")
    if name in BUNDLED:
        ref = ModelRef(name, BUNDLED[name], ASSETS_DIR / "models" / name, bundled=True)
    else:
        path = Path(name)
        family = family_of(path) if path.exists() else None
        if family is None:
            names = [n for n in BUNDLED if BUNDLED[n] in accepted]
            raise ArgumentError(argument, f"{name}: no {title} at {path} (expected a directory with config.json "
                                          f"naming its family + its weights; bundled names: "
                                          f"{', '.join(names) or 'none'})")
        ref = ModelRef(name, family, path)
    if ref.family not in accepted:
        raise ArgumentError(argument, f"{name}: a {FAMILIES[ref.family].title} ({ref.family}); expected "
                                      f"{' or '.join(accepted)}")
    return ref


def load(model: str | Path | None = None, *, default: str | None = None, families: Iterable[str] | None = None,
         device: Any = "cpu", argument: str = "model", **options: Any) -> Any:
    """``resolve(...)`` then load: the model in eval mode on ``device``."""
    return resolve(model, default=default, families=families, argument=argument).load(device, **options)


def _published_subcell(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in {".yaml", ".yml"}


def _published_celle2(path: Path) -> bool:
    """A released CELL-E 2 config (``model.target: celle_main.CELLE_trainer``) or a folder holding one."""
    candidates = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
    return any(p.is_file() and p.suffix.lower() in {".yaml", ".yml"} and "CELLE_trainer" in p.read_text(errors="ignore")
               for p in candidates)


def _released_celldiff(path: Path) -> bool:
    """A folder whose ``config.json`` is a released CELL-Diff (v2, latent) config (it names its VAE checkpoint)."""
    config = path / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        payload = json.loads(config.read_text())
    except json.JSONDecodeError:
        return False
    return isinstance(payload, dict) and all(k in payload for k in ("vae_loadcheck_path", "esm_embedding",
                                                                       "cell_image"))


def _released_guided_i2i(path: Path) -> bool:
    """A released guided-I2I network file (``{epoch}_Network.pth``) or a folder holding one (or its
    ``network_config.json``)."""
    if path.is_file():
        return path.name.endswith("_Network.pth")
    return path.is_dir() and (any(path.glob("*_Network.pth")) or (path / "network_config.json").is_file())


# ------------------------------------------------------------------------------------------- the registry
# One register_family line per model family; one register_bundled line per model shipped in assets/models/.
register_family("celldiff", "locscope.models.celldiff:CellDiff.from_pretrained", config_classes=("CellDiffConfig",),
                title="CELL-Diff model")
register_family("designer", "locscope.models.designer:SequenceDesigner.from_pretrained",
                config_classes=("DesignerConfig",), title="sequence designer")
register_family("celle2", "locscope.models.celle2:load_celle2", config_classes=("Celle2Config",),
                title="CELL-E 2 model", detect=_published_celle2)  # before subcell: its detect takes any yaml
register_family("subcell", "locscope.models.subcell:load_subcell", config_classes=("SubCellConfig",),
                title="SubCell model", detect=_published_subcell)
register_family("latent", "locscope.models.latent:LatentDiffusion.from_pretrained",
                config_classes=("LatentDiffusionConfig",), title="latent diffusion model")
register_family("celldiff-released", "locscope.models.celldiff_v2:load_released_checkpoint_set",
                title="released CELL-Diff checkpoint set", detect=_released_celldiff)
register_family("localizer", "locscope.models.localizer:SequenceLocalizer.from_pretrained",
                config_classes=("LocalizerConfig",), title="sequence localizer")

register_family("stain", "locscope.models.stain:load_stain", config_classes=("StainConfig",),
                title="virtual-staining model", detect=_released_guided_i2i)

register_family("readout", "locscope.models.readout:ReadoutClassifier.from_pretrained",
                config_classes=("ReadoutConfig",), title="compartment read-out classifier")

register_bundled("celldiff-64", "celldiff")
register_bundled("celldiff-tiny", "celldiff")
register_bundled("designer-tiny", "designer")
register_bundled("subcell-tiny", "subcell")
register_bundled("localizer-small", "localizer")
register_bundled("compartment-readout", "readout")
register_bundled("stain-tiny", "stain")  # its noisy classifier in stain-tiny/classifier/
register_bundled("celle2-tiny", "celle2")
register_bundled("latent-tiny", "latent")

__all__ = [
    "ASSETS_DIR", "BUNDLED", "DEFAULT_GENERATOR", "FAMILIES", "ModelFamily", "ModelRef", "asset_path", "bundled_names", "family_of",
    "load", "register_bundled", "register_family", "resolve",
]
