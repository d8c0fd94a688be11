"""Options several commands share (``--seed``, ``--device``, ``--landmarks``, ...) and the SubCell / CELL-Diff option
sets of the commands that run those models."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from locscope.errors import InputError

SeedOption = typer.Option(0, "--seed", help="Random seed (results are reproducible for a seed).")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
ConditionOption = typer.Option("auto", "--condition", help="Models with the compartment bottleneck: where the "
                               "protein is placed from. auto (the model's fraction head, deferring to the sequence "
                               "localizer where the head is unsure when the model folder has condition_prior.json) | "
                               "head (the fraction head alone).")
MaxLengthOption = typer.Option(2048, "--max-length", help="Longest accepted sequence (longer ones fail unless "
                                                        "--truncate).")
TruncateOption = typer.Option(False, "--truncate", help="Cut sequences longer than --max-length, keeping both termini "
                                                        "(the first and last halves); the cut is reported.")
OverwriteOption = typer.Option(False, "--overwrite", help="Replace an earlier output of this command in --out (the new "
                                                          "one is written beside it, then swapped in); other non-empty "
                                                          "folders are always refused.")

LANDMARKS_HOW = "--landmarks a.png b.png c.png (one option, several files), a repeated --landmarks, or a folder"
# the words a shell glob puts after "--landmarks first.png" (only the first is the option's value)
MoreLandmarks = typer.Argument(None, hidden=True, metavar="LANDMARK_FILES", help="Further files after --landmarks.")


def landmark_files(option: Optional[list[Path]], extra: Optional[list[Path]],
                   required: bool = True) -> list[Path]:
    """The landmark files of ``--landmarks a b c``: the option's values plus the words after it; files without the
    option (or none when ``required``) are an error saying how to give them."""
    if extra and not option:
        raise InputError(f"{extra[0]}: landmark files are given with --landmarks; {LANDMARKS_HOW}")
    if required and not option:
        raise InputError(f"give landmark images: {LANDMARKS_HOW}")
    return [*(option or []), *(extra or [])]


# SubCell: embed, classify
SubcellModelOption = typer.Option(None, "--model", help="Model directory (config.json + model.safetensors) or a "
                                                        "published SubCell model_config.yaml; default: the bundled "
                                                        "subcell-tiny.")
ChannelsOption = typer.Option(None, "--channels", help="Channel variant of a 3-channel published model: rbg | ybg.")
SubcellBatchOption = typer.Option(16, "--batch-size", help="Cells per forward pass.")
SubcellPrecisionOption = typer.Option("auto", "--precision", help="auto (CPU: OpenVINO int8 calibrated on 64 cells "
                                                                 "spread over the input and verified against fp32 on "
                                                                 "8 more, else bf16) | bf16 (autocast) | fp32 (exact) "
                                                                 "| int8 (CPU: dynamic int8 Linear layers).")
BackendOption = typer.Option("auto", "--backend", help="auto | torch | openvino (CPU; with --precision int8: static "
                                                    "int8 calibrated on 64 cells, not verified).")
CalibrationOption = typer.Option(64, "--calibration-cells", help="OpenVINO int8: cells that calibrate it (the default "
                                                                 "mode checks it on 8 more).")
CacheOption = typer.Option(True, "--cache/--no-cache", help="Default mode: read / write calibrated int8 models in "
                                                           "$LOCSCOPE_CACHE_DIR (see `locscope cache`).")
ImageSizeOption = typer.Option(None, "--image-size", help="Resize cells to this side; 0 = keep. Default: the "
                                                         "training size of locscope models, unchanged for published "
                                                         "YAML models.")

#: The SubCell model and runtime options: (keyword of the pipeline functions, type, option).
SUBCELL_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("model", Optional[str], SubcellModelOption), ("channels", Optional[str], ChannelsOption),
    ("batch_size", int, SubcellBatchOption), ("precision", str, SubcellPrecisionOption),
    ("backend", str, BackendOption), ("calibration_cells", int, CalibrationOption), ("use_cache", bool, CacheOption),
    ("image_size", Optional[int], ImageSizeOption),
)


def with_subcell_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a Typer command the SubCell options of :data:`SUBCELL_OPTIONS` in place of its parameter ``subcell``;
    the command receives them as ``subcell``, a dict of keyword arguments for the SubCell pipeline functions."""
    signature = inspect.signature(command)
    names = [name for name, _, _ in SUBCELL_OPTIONS]
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name == "subcell":
            parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option,
                                             annotation=kind) for name, kind, option in SUBCELL_OPTIONS]
        else:
            parameters.append(parameter)

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        return command(**{k: v for k, v in kwargs.items() if k not in names},
                       subcell={name: kwargs[name] for name in names})

    wrapper.__signature__ = signature.replace(parameters=parameters)
    return wrapper

# CELL-Diff image scoring: design, localize, explain
MethodOption = typer.Option("combined", "--method", help="image (K generated images read off the simulator's "
                            "compartments) | head (the model's sequence-only compartment head) | combined (mean).")
SamplesOption = typer.Option(4, "--samples", help="Generated images (standard simulator cells) per sequence, K.")
SamplerOption = typer.Option("dpmsolver", "--sampler", help="Image sampler: dpmsolver | ddim.")
StepsOption = typer.Option(None, "--steps", help="Image denoising steps (default: the model's, as in generate: "
                           "CELL-Diff 10 with dpmsolver / 100 with ddim, latent diffusion 8 / 50).")
GuidanceOption = typer.Option(None, "--guidance", help="Classifier-free guidance scale (default: the model's, as in "
                              "generate: CELL-Diff 2, latent diffusion 3).")
SequenceBatchOption = typer.Option(16, "--batch-size", help="Sequences per network batch.")
