"""End-to-end training throughput of ``celldiff-tiny``: ``locscope train celldiff`` as a user runs it, the code of a
reference commit against the working tree, interleaved in rounds so that drift of the machine hits every variant.

Every run trains the bundled ``celldiff-tiny/train_config.yaml`` cut to ``--steps`` steps (one epoch, a log line
every 5 steps, validation off) from the same seed on a small 32 x 32 store that each code version builds for itself
(``locscope train celldiff-data --size 32 --synthetic N``). The rate of a run is the median of its logged
``examples_per_s`` after the first two log intervals (the warm-up, and for ``compile`` the compilation); a variant's
rate is the median over its runs, with the quartiles of all its intervals. ``loss`` is the last interval's mean
training loss: equal settings and seeds give equal losses per step, which is how "at equal loss per step" is checked.

Variants (``--variants``, comma-separated):

- ``before``: the reference commit (``--before``, default the code before the training-speed work), fp32, 1 process;
- ``fp32``: the working tree, fp32, 1 process;
- ``bf16``: the working tree, ``bf16: auto`` (bf16 autocast where the CPU computes bf16 natively), 1 process;
- ``ddp``: ``bf16: auto``, 2 DDP processes (gloo) of batch 16 each, one thread each;
- ``ddp-compile``: that with ``compile: true`` (the first round compiles; inductor caches the kernels on disk).

Prints the CPU (model and the flags the runtime decides by) and a markdown table; ``--out`` writes every interval.

    python benchmarks/bench_training_e2e.py --rounds 3 --steps 60
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "src/locscope/assets/models/celldiff-tiny/train_config.yaml"
BEFORE = "794b8aa"  # the last commit before the training-speed changes (docs/benchmarks.md)
VARIANTS = {
    "before": ("before", {"bf16": False}),
    "fp32": ("now", {"bf16": False}),
    "bf16": ("now", {"bf16": "auto"}),
    "ddp": ("now", {"bf16": "auto", "devices": 2, "strategy": "ddp_find_unused_parameters_true", "batch_size": 16}),
    "ddp-compile": ("now", {"bf16": "auto", "devices": 2, "strategy": "ddp_find_unused_parameters_true",
                            "batch_size": 16, "compile": True}),
}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def cpu_description() -> str:
    """CPU model, online cores and the instruction-set flags the runtime chooses precisions by."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(f for f in FLAGS if f in flags) or 'none listed'}"


def run(tree: Path, args: list[str], log: Path) -> None:
    """``python -m locscope ARGS`` with ``tree``'s sources on one thread per process; output to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "locscope", *args], env=env, stdout=handle,
                              stderr=subprocess.STDOUT, cwd=tree)
    if done.returncode:
        raise SystemExit(f"locscope {' '.join(args[:2])} failed with {done.returncode}: see {log}")


def source_tree(ref: str, work: Path) -> Path:
    """The repository's ``src`` at ``ref``, unpacked under ``work`` (``git archive``; the checkout is not touched)."""
    tree = work / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def intervals(run_dir: Path) -> list[dict]:
    """The training log lines (those with a throughput) of ``run_dir/metrics.jsonl``."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [line for line in lines if "examples_per_s" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git ref of the reference code (default %(default)s)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cells", type=int, default=800, help="grammar proteins in the store")
    parser.add_argument("--work", default=None, help="keep stores and runs here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="JSON with every interval")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.steps < 20 or args.steps % 5:
        parser.error("--steps: a multiple of 5, at least 20")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        trees = {"now": REPO}
        if any(VARIANTS[n][0] == "before" for n in names):
            trees["before"] = source_tree(args.before, work)
        stores = {}
        for key, tree in trees.items():
            stores[key] = work / f"store-{key}"
            run(tree, ["train", "celldiff-data", "--out", str(stores[key]), "--size", "32", "--synthetic",
                       str(args.cells), "--seed", "0"], work / f"store-{key}.log")
        base = yaml.safe_load(CONFIG.read_text())
        base.update(max_steps=args.steps, steps_per_epoch=args.steps, log_every_steps=5, val_items=1,
                    max_minutes=60)
        results: dict[str, list] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names:
                key, overrides = VARIANTS[name]
                config = work / f"{name}.yaml"
                config.write_text(yaml.safe_dump({**base, **overrides}))
                out = work / f"run-{name}-{r}"
                wall = time.perf_counter()
                run(trees[key], ["train", "celldiff", "--data", str(stores[key]), "--config", str(config),
                                 "--out", str(out)], work / f"run-{name}-{r}.log")
                lines = intervals(out)
                rate = statistics.median(line["examples_per_s"] for line in lines[2:])
                results[name].append({"round": r, "rate": rate, "wall_s": time.perf_counter() - wall,
                                      "loss": lines[-1].get("loss"), "intervals": lines})
                print(json.dumps({"variant": name, "round": r, "examples_per_s": round(rate, 1),
                                  "loss": lines[-1].get("loss")}), flush=True)

    import torch

    print(f"\nCPU: {cpu_description()}; torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {args.rounds} rounds of {args.steps} steps, batch 32 per step")
    reference = statistics.median(r["rate"] for r in results[names[0]])
    print(f"\n| variant | examples / s (median of runs) | quartiles of intervals | vs {names[0]} | loss at step "
          f"{args.steps} |\n|---|---|---|---|---|")
    for name in names:
        rate = statistics.median(r["rate"] for r in results[name])
        every = sorted(line["examples_per_s"] for r in results[name] for line in r["intervals"][2:])
        q = statistics.quantiles(every, n=4) if len(every) > 1 else [every[0]] * 3
        losses = sorted({f"{r['loss']:.4f}" for r in results[name] if r["loss"] is not None})
        print(f"| {name} | {rate:.1f} | {q[0]:.1f}-{q[2]:.1f} | {rate / reference:.2f}x | "
              f"{', '.join(map(str, losses))} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_description(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
