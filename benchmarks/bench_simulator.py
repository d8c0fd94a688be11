"""Simulator throughput: cells/s (landmarks + protein + all compartment masks) per image size, 1 and 2 processes.

Usage: ``python benchmarks/bench_simulator.py [--n 200] [--sizes 32 64 128] [--workers 1 2]``

Prints wall-clock cells/s and CPU ms/cell (the CPU time is what the cores spend; on a shared machine wall-clock
throughput also depends on the other load, printed as the 1-minute load average).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from locscope.synth import SimulatorConfig, simulate_cell


def _simulate(args: tuple[int, int, str]) -> float:
    size, seed, mode = args
    start = time.process_time()
    simulate_cell(SimulatorConfig(size=size, mode=mode), seed=seed)  # type: ignore[arg-type]
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="cells per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--mode", default="crop", choices=["crop", "field"])
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  load average (1 min) before: {os.getloadavg()[0]:.2f}")
    print(f"{'size':>5} {'mode':>5} {'workers':>7} {'cells/s':>9} {'cpu ms/cell':>12}")
    for size in args.sizes:
        _simulate((size, 0, args.mode))  # warm-up (imports, caches)
        for workers in args.workers:
            jobs = [(size, seed, args.mode) for seed in range(args.n)]
            start = time.perf_counter()
            if workers == 1:
                cpu = [_simulate(job) for job in jobs]
            else:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    cpu = pool.map(_simulate, jobs, chunksize=8)
            wall = time.perf_counter() - start
            print(f"{size:>5} {args.mode:>5} {workers:>7} {args.n / wall:>9.1f} {1000 * sum(cpu) / len(cpu):>12.1f}")
    print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
