"""Train / validation / test splits by protein: no protein (or split group) ever appears in two splits.

Images of the same protein look alike, so a split by image leaks the answer into the test set; proteoscope and
CELL-Diff split by protein (80/10/10). Here every item carries a ``protein_id`` and optionally a ``split_group``; items
linked by either key (the connected components of the protein <-> group graph) land in the same split. Groups are
shuffled with a seeded generator and dealt out so each split's *item* count is as close as possible to its fraction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from locscope.errors import InputError

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")


def _components(protein_ids: Sequence[str], groups: Sequence[str | None]) -> np.ndarray:
    """Connected components of items linked by equal protein id or equal split group -> (N,) component index."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for protein, group in zip(protein_ids, groups):
        a = find("p:" + str(protein))
        if group not in (None, ""):
            b = find("g:" + str(group))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = [find("p:" + str(p)) for p in protein_ids]
    _, component = np.unique(np.asarray(roots, dtype=object).astype(str), return_inverse=True)
    return component


def split_by_protein(
    protein_ids: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    groups: Sequence[str | None] | None = None,
) -> np.ndarray:
    """Assign each item to ``'train'``, ``'val'`` or ``'test'`` so that no protein (or group) spans two splits.

    Parameters
    ----------
    protein_ids : sequence of str, length N
        Protein of each item (several items may share a protein).
    fractions : (3,) floats
        Target fractions of *items* in train, val and test; must be >= 0 and sum to 1 (within 1e-6).
    seed : int
        Seed of the shuffle of protein groups; the same inputs and seed always give the same split.
    groups : sequence of str or None, length N, optional
        Extra split groups (e.g. a cell line or a protein family); items sharing a group stay together.

    Returns
    -------
    (N,) ndarray of str
        The split name of every item.

    Raises
    ------
    InputError
        For invalid fractions or mismatched lengths.

    Examples
    --------
    >>> split_by_protein(["A", "A", "B", "C"], (0.5, 0.25, 0.25), seed=0).tolist()  # doctest: +SKIP
    ['train', 'train', 'test', 'val']
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or abs(fractions.sum() - 1.0) > 1e-6:
        raise InputError(f"split fractions {tuple(fractions.tolist())}: need three non-negative numbers summing to 1")
    n = len(protein_ids)
    if groups is None:
        groups = [None] * n
    if len(groups) != n:
        raise InputError(f"split groups: {len(groups)} values for {n} items")
    if n == 0:
        return np.asarray([], dtype="<U5")
    component = _components(protein_ids, groups)
    n_components = int(component.max()) + 1
    sizes = np.bincount(component, minlength=n_components)
    order = np.random.default_rng(seed).permutation(n_components)
    # Deal shuffled groups greedily to the split with the largest *relative* shortfall of items (ties -> earlier
    # split): every split with a non-zero fraction gets a group as early as possible, the counts end close to the
    # targets, and the result is deterministic.
    targets = fractions * n
    filled = np.zeros(3)
    assignment = np.empty(n_components, dtype=np.int64)
    for comp in order:
        deficit = np.where(fractions > 0, (targets - filled) / np.maximum(targets, 1e-12), -np.inf)
        split = int(np.argmax(deficit))
        assignment[comp] = split
        filled[split] += sizes[comp]
    return np.asarray(SPLIT_NAMES)[assignment[component]]
