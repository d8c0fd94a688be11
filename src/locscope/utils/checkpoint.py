"""Strict, safe checkpoint I/O: safetensors weights + a JSON config dataclass, written atomically.

Published loaders often use ``strict=False`` and silently keep random layers when keys do not match; locscope refuses
instead, naming every missing, unexpected and misshaped key. Pickled checkpoints are only read with
``torch.load(weights_only=True)``, which cannot execute code.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from safetensors.torch import load_file, save_file

from locscope.errors import CheckpointError, InputError, one_line
from locscope.utils.atomic import atomic_path, write_json

C = TypeVar("C")

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and misshaped keys (no-op when all match)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"misshaped keys: {', '.join(misshaped)}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Check keys and shapes first (one clear error), then load with ``strict=True``."""
    check_state_dict(model, state_dict, source)
    model.load_state_dict(dict(state_dict), strict=True)


ACCEPTED_WEIGHT_FORMATS = ("safetensors files, or weights-only PyTorch checkpoints (.pth / .bin / .ckpt that hold "
                           "only tensors and plain values)")


def unsafe_pickle_error(path: str | Path, err: BaseException) -> InputError:
    """The one-line refusal of a pickle that holds more than tensors. It says which formats locscope accepts and never
    repeats PyTorch's advice to load with ``weights_only=False`` (that would run code from the file)."""
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(err))
    what = f" (it references {found.group(1)})" if found else ""
    return InputError(f"{path}: refusing to unpickle it: the file holds more than tensors{what}, and unpickling it "
                      f"could run code; locscope reads {ACCEPTED_WEIGHT_FORMATS}")


def check_finite_weights(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming the first floating-point tensor that holds NaN or Inf (weights are refused at load
    time: they would only produce garbage later)."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f"{source}: tensor '{key}' holds {bad} NaN / Inf value(s) of {tensor.numel()}; "
                                      f"refusing non-finite weights")


def read_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.bin`` tensor dict with ``weights_only=True`` or a ``.safetensors`` file.

    Raises
    ------
    InputError
        If the file is missing, not a checkpoint, holds anything but tensors (:func:`unsafe_pickle_error`).
    CheckpointError
        If a floating-point tensor holds NaN or Inf (:func:`check_finite_weights`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        try:
            obj = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise InputError(f"{path}: not a readable safetensors file ({err})") from None
        check_finite_weights(obj, str(path))
        return obj
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused a global: never suggest weights_only=False
        raise unsafe_pickle_error(path, err) from None
    except Exception as err:
        raise InputError(f"{path}: not a readable weights-only torch checkpoint ({type(err).__name__}: "
                         f"{one_line(str(err))[:200]}); locscope reads {ACCEPTED_WEIGHT_FORMATS}") from None
    for wrapper in ("state_dict", "model", "module"):  # Lightning / DeepSpeed / published-trainer wrappers
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a dict of tensors")
    check_finite_weights(obj, str(path))
    return dict(obj)


def save_pretrained(model: torch.nn.Module, config: Any, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (the config dataclass, plus ``extra`` metadata) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    payload = {"class": type(config).__name__, **dataclasses.asdict(config)}
    if extra:
        payload["_meta"] = dict(extra)
    write_json(directory / CONFIG_NAME, payload)
    return directory


def read_config(directory: str | Path, config_class: type[C], name: str = CONFIG_NAME) -> C:
    """Rebuild a config dataclass from ``config.json`` (or the file ``name``) in ``directory``; unknown fields are an
    error naming them (``_meta`` holds free-form metadata)."""
    path = Path(directory) / name
    if not path.is_file():
        raise InputError(f"{path}: config file not found (is {directory} a locscope model directory?)")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    payload.pop("class", None)
    payload.pop("family", None)  # the model hub's family name (locscope.models.hub)
    payload.pop("_meta", None)
    fields = {f.name for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    unknown = sorted(set(payload) - fields)
    if unknown:
        raise InputError(f"{path}: unknown config fields for {config_class.__name__}: {', '.join(unknown)}")
    for f in dataclasses.fields(config_class):  # type: ignore[arg-type]
        if f.name in payload and isinstance(payload[f.name], list):
            payload[f.name] = tuple(payload[f.name])  # JSON has no tuples
    return config_class(**payload)


def load_weights_into(model: torch.nn.Module, directory: str | Path) -> torch.nn.Module:
    """Load ``model.safetensors`` from ``directory`` into ``model`` strictly."""
    path = Path(directory) / WEIGHTS_NAME
    load_state_dict_strict(model, read_torch_weights(path), source=str(path))
    return model


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from one config dataclass: the class names
    it as ``config_class`` and keeps it as ``self.config`` (diffusers' ``ModelMixin`` convention, safetensors +
    ``config.json``)."""

    config_class: type

    def save_pretrained(self, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` atomically (``extra``: metadata such as the training step)."""
        return save_pretrained(self, self.config, directory, extra=extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu"):
        """Rebuild from ``config.json`` and load ``model.safetensors`` strictly (:class:`CheckpointError` lists bad
        keys); on ``device``, in eval mode."""
        model = cls(read_config(directory, cls.config_class))
        load_weights_into(model, directory)
        return model.to(device).eval()


def save_optimizer_state(directory: str | Path, state: Mapping[str, Any]) -> None:
    """Write an optimizer ``state_dict()`` without pickle: its tensors to ``optimizer.safetensors`` (keys
    ``"<parameter>|<name>"``), everything else to ``optimizer.json``. ``directory`` must exist (write into a
    temporary directory that is renamed afterwards)."""
    directory = Path(directory)
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}|{name}"] = value.detach().cpu().contiguous()
            else:
                scalars["state"].setdefault(str(index), {})[name] = value
    save_file(tensors, str(directory / "optimizer.safetensors"))
    write_json(directory / "optimizer.json", scalars)


def load_optimizer_state(directory: str | Path) -> dict[str, Any]:
    """Read what :func:`save_optimizer_state` wrote: an optimizer ``state_dict()`` keyed by parameter index (single
    process / DDP) or parameter name (FSDP full state)."""
    directory = Path(directory)
    scalars = json.loads((directory / "optimizer.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))

    def key_of(index: str):
        return int(index) if index.isdigit() else index

    state: dict[Any, dict] = {}
    for key, value in tensors.items():
        index, name = key.rsplit("|", 1) if "|" in key else key.split(".", 1)
        state.setdefault(key_of(index), {})[name] = value
    for index, values in scalars["state"].items():
        state.setdefault(key_of(index), {}).update(values)
    return {"state": state, "param_groups": scalars["param_groups"]}
