"""Random-access read speed and memory: the locscope store vs a CELL-Diff-layout LMDB of PNG images.

Both hold the same N cells (4 channels, 256 x 256, 8-bit): the real CELL-Diff HPA sample cells from
``../shared/data/celldiff_samples/hpa`` under the 8 symmetries of the square and random intensity scalings (or smooth
random images when the shared data is absent). Each reader runs in its own fresh subprocess, reads ``--reads`` random
items (seeded) and reports samples/s, its peak RSS (``VmHWM``) and how much its RSS grew while reading (VmRSS after
the first 10% of reads vs at the end: a flat-RAM reader grows ~0).

The LMDB reader does what CELL-Diff's ``HPALMDBDataset.__getitem__`` does per item, minus the torchvision transforms:
``txn.get`` + ``pickle.loads`` + PIL decode of each PNG and selection of its band (``split()[1]`` protein,
``split()[2]`` nucleus, ``split()[0]`` microtubules, ``convert('L')`` ER). The store reader is ``Store.open(path)[i]``
(images + sequence + labels + split).

Usage::

    .venv/bin/python benchmarks/bench_store.py --items 2000 --reads 2000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOCSCOPE_SHARED", ROOT.parent / "shared"))
CHANNELS = ("protein", "nucleus", "microtubules", "er")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mb() -> float:
    """Current resident set size (MB)."""
    return _status_mb("VmRSS")


def vm_hwm_mb() -> float:
    """Peak resident set size of this process (MB). Unlike ``ru_maxrss``, not inherited from the parent at fork."""
    return _status_mb("VmHWM")


def base_cells() -> tuple[list[dict[str, np.ndarray]], str]:
    """Four-channel 256x256 uint8 cells: the real HPA samples (protein borrowed from the NLS cell) or synthetic."""
    hpa = SHARED / "data" / "celldiff_samples" / "hpa"
    if hpa.is_dir():
        from locscope.io import read_image

        nls = read_image(hpa / "nls").channels
        cells = []
        for name in ("1", "2", "3", "4", "5", "nls"):
            channels = dict(read_image(hpa / name).channels)
            channels.setdefault("protein", nls["protein"])
            cells.append({c: channels[c] for c in CHANNELS})
        return cells, f"real HPA samples ({hpa})"
    from skimage.filters import gaussian

    rng = np.random.default_rng(0)
    cells = [{c: (gaussian(rng.random((256, 256)), 2) * 255).astype(np.uint8) for c in CHANNELS} for _ in range(6)]
    return cells, "synthetic smooth noise (shared data absent)"


def make_items(n: int, seed: int = 0):
    """``n`` store items built from the base cells (symmetry + intensity scaling so items differ)."""
    from locscope.data.transforms import dihedral

    cells, _ = base_cells()
    rng = np.random.default_rng(seed)
    for i in range(n):
        cell = dihedral(cells[i % len(cells)], (i // len(cells)) % 8)
        gain = rng.uniform(0.7, 1.0)
        yield {
            "id": f"cell{i:06d}", "protein_id": f"P{i % 97:03d}", "sequence": "MPKKKRKV" * 20,
            "images": {c: np.round(v * gain).astype(np.uint8) for c, v in cell.items()},
            "labels": {"level1": ["nucleoplasm"]},
        }


def build(workdir: Path, n: int) -> tuple[Path, Path]:
    from locscope.data.store import write_store
    from locscope.io.celldiff_lmdb import write_celldiff_lmdb

    store = workdir / "store"
    write_store(store, make_items(n), channels=list(CHANNELS), image_shape=(256, 256), image_dtype="uint8",
                n_items=n, progress=False)
    lmdb_dir = workdir / "lmdb"
    write_celldiff_lmdb(lmdb_dir, make_items(n), bit_depth=8, progress=False)
    return store, lmdb_dir


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# ------------------------------------------------------------------------------------------------ readers (subprocess)
def read_store(path: str, indices: np.ndarray):
    from locscope.data.store import Store

    store = Store.open(path)

    def get(i: int):
        return store[int(i)]

    return get


def read_lmdb(path: str, indices: np.ndarray):
    import lmdb
    from PIL import Image

    keys = []
    for name in ("train", "val", "test"):
        keys += json.loads((Path(path) / f"{name}_keys.json").read_text())
    txn = lmdb.open(path, readonly=True, lock=False, max_readers=1024).begin()

    def get(i: int):
        data = pickle.loads(txn.get(keys[int(i)].encode()))  # what CELL-Diff does (unsafe on untrusted files)
        return {
            "protein": np.asarray(Image.open(io.BytesIO(data["protein_img"])).split()[1]),
            "nucleus": np.asarray(Image.open(io.BytesIO(data["nucleus_img"])).split()[2]),
            "microtubules": np.asarray(Image.open(io.BytesIO(data["microtubules_img"])).split()[0]),
            "er": np.asarray(Image.open(io.BytesIO(data["ER_img"])).convert("L")),
            "sequence": data["protein_seq"],
        }

    return get


def worker(kind: str, path: str, n_items: int, reads: int, seed: int) -> dict:
    indices = np.random.default_rng(seed).integers(0, n_items, reads)
    rss_start = vm_rss_mb()
    get = (read_store if kind == "store" else read_lmdb)(path, indices)
    for i in indices[:20]:  # warm-up: imports, first file handles
        get(i)
    warm = max(1, reads // 10)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in indices[:warm]:
        get(i)
    rss_early = vm_rss_mb()
    for i in indices[warm:]:
        get(i)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "reader": kind, "reads": reads, "seconds": seconds, "samples_per_s": reads / seconds,
        "cpu_ms_per_sample": 1000 * cpu_seconds / reads, "load_average_1min": os.getloadavg()[0],
        "peak_rss_mb": vm_hwm_mb(),
        "rss_start_mb": rss_start, "rss_after_10pct_mb": rss_early, "rss_end_mb": vm_rss_mb(),
        "rss_growth_mb": vm_rss_mb() - rss_early,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000, help="Cells in each dataset.")
    parser.add_argument("--reads", type=int, default=2000, help="Random items read per reader.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="Where to build (default: a temp dir, removed).")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.items, args.reads, args.seed)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        _, source = base_cells()
        t0 = time.perf_counter()
        store, lmdb_dir = build(workdir, args.items)
        print(f"data: {args.items} cells x 4 channels 256x256 uint8 from {source}; built both in "
              f"{time.perf_counter() - t0:.1f} s")
        print(f"on disk: store {dir_size_mb(store):.1f} MB, CELL-Diff LMDB {dir_size_mb(lmdb_dir):.1f} MB")
        results = {}
        for kind, path in (("store", store), ("lmdb", lmdb_dir)):
            out = subprocess.run([sys.executable, __file__, "--items", str(args.items), "--reads", str(args.reads),
                                  "--seed", str(args.seed), "--worker", kind, str(path)],
                                 check=True, capture_output=True, text=True)
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'reader':<24}{'samples/s':>12}{'CPU ms/sample':>15}{'peak RSS MB':>14}{'RSS growth MB':>16}{'load':>7}")
        names = {"store": "locscope store (zarr)", "lmdb": "CELL-Diff LMDB + PNG"}
        for kind, r in results.items():
            print(f"{names[kind]:<24}{r['samples_per_s']:>12.1f}{r['cpu_ms_per_sample']:>15.2f}{r['peak_rss_mb']:>14.1f}"
                  f"{r['rss_growth_mb']:>16.1f}{r['load_average_1min']:>7.1f}")
        store, lmdb_ = results["store"], results["lmdb"]
        print(f"speed-up: {store['samples_per_s'] / lmdb_['samples_per_s']:.2f}x wall-clock, "
              f"{lmdb_['cpu_ms_per_sample'] / store['cpu_ms_per_sample']:.2f}x CPU time per sample")
        print(json.dumps(results))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
