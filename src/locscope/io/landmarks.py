"""Float landmark stacks ``H x W x C`` (TIFF) with a declared channel order.

ProtiCelli stores its reference cells as float32 TIFFs already normalised to ``[-1, 1]``:
``(microtubules, nucleus, ER)`` for landmark-only inputs and ``(microtubules, protein, nucleus, ER)`` when the
protein image is included (e.g. ``RELA_A-431/cell_9.tiff``). Sizes need not be square (456 x 512 happens).
Without a ``channel_order`` those two orders are assumed for 3 and 4 channels; any other count needs one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from locscope import channels as ch
from locscope.errors import InputError
from locscope.io.records import ImageRecord, check_file, name_channels, value_range

PROTICELLI_LANDMARK_ORDER: tuple[str, ...] = (ch.MICROTUBULES, ch.NUCLEUS, ch.ER)
PROTICELLI_PROTEIN_ORDER: tuple[str, ...] = (ch.MICROTUBULES, ch.PROTEIN, ch.NUCLEUS, ch.ER)
DEFAULT_ORDERS: dict[int, tuple[str, ...]] = {3: PROTICELLI_LANDMARK_ORDER, 4: PROTICELLI_PROTEIN_ORDER}


def landmark_record(path: Path, stack: np.ndarray, channel_order: Sequence[str] | None = None,
                    metadata: dict[str, Any] | None = None) -> ImageRecord:
    """Name the planes of an ``(H, W, C)`` float stack (``format="landmark-stack"``).

    Parameters
    ----------
    path : Path
        Source file (for error messages and the record).
    stack : ndarray, shape (H, W, C)
        Float planes.
    channel_order : sequence of str, optional
        Names of the ``C`` planes; default :data:`DEFAULT_ORDERS` (ProtiCelli) for ``C`` in {3, 4}.
    metadata : dict, optional
        Extra facts to keep.

    Raises
    ------
    InputError
        Wrong channel count, non-float data, NaN / inf values.
    """
    if stack.ndim != 3:
        raise InputError(f"{path}: landmark stack must be H x W x C, got shape {tuple(stack.shape)}")
    n_channels = stack.shape[-1]
    names = name_channels(path, n_channels, channel_order)
    meta = dict(metadata or {})
    if names is None:
        if n_channels not in DEFAULT_ORDERS:
            raise InputError(f"{path}: wrong channel count: {n_channels} channels and no channel_order; "
                             "ProtiCelli stacks have 3 (microtubules, nucleus, er) or 4 (microtubules, protein, nucleus, er)")
        names = list(DEFAULT_ORDERS[n_channels])
        meta["channel_source"] = f"ProtiCelli {n_channels}-channel order"
    else:
        meta["channel_source"] = "channel_order"
    if stack.dtype.kind != "f":
        raise InputError(f"{path}: landmark stacks are float, got {stack.dtype}")
    if not np.isfinite(stack).all():
        bad = np.argwhere(~np.isfinite(stack))[0]
        raise InputError(f"{path}: non-finite value at row {bad[0]} col {bad[1]} channel '{names[bad[2]]}'")
    low, high = value_range(stack)
    meta.setdefault("source_shape", list(stack.shape))
    meta["source_dtype"] = str(stack.dtype)
    meta["value_range"] = [low, high]
    # ProtiCelli inputs live in [-1, 1]; record whether this one does (a few pixels overshoot after resizing)
    meta["in_minus1_1"] = bool(low >= -1.0 and high <= 1.0)
    planes = {name: stack[..., i] for i, name in enumerate(names)}
    return ImageRecord(path, "landmark-stack", planes, metadata=meta)


def read_landmark_stack(path: str | Path, channel_order: Sequence[str] | None = None) -> ImageRecord:
    """Read a float ``H x W x C`` landmark TIFF.

    Parameters
    ----------
    path : path
        TIFF holding an ``(H, W, C)`` (or ``(C, H, W)`` with ``C <= 8``) float array.
    channel_order : sequence of str, optional
        Channel names in file order; default ProtiCelli's order for 3 or 4 channels.

    Returns
    -------
    ImageRecord
        ``format="landmark-stack"``, float32 ``(H, W)`` planes, values as stored (ProtiCelli: ``[-1, 1]``).

    Examples
    --------
    >>> rec = read_landmark_stack("RELA_A-431/cell_9.tiff")   # doctest: +SKIP
    >>> list(rec.channels), rec.shape                        # doctest: +SKIP
    (['microtubules', 'protein', 'nucleus', 'er'], (456, 512))
    """
    import tifffile

    path = check_file(path)
    try:
        array = np.asarray(tifffile.imread(path))
    except Exception:
        raise InputError(f"{path}: truncated or corrupt TIFF file") from None
    if array.ndim == 3 and array.shape[0] <= 8 < array.shape[-1]:
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    elif array.ndim == 2:
        array = array[..., None]
    return landmark_record(path, array, channel_order=channel_order, metadata={"source_shape": list(array.shape)})
