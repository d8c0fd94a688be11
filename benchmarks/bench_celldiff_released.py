"""Released CELL-Diff (v2, latent) generation: seconds per 256 x 256 image, the released procedure vs locscope's,
and the error of each fast option against the exact released DDIM-100 on the tiny golden model.

    OMP_NUM_THREADS=1 python benchmarks/bench_celldiff_released.py --part speed --threads 1 --length 500
    python benchmarks/bench_celldiff_released.py --part quality

``speed``: the released HPA configuration (U-Net 320/640/1280/1280 with 2 layers per block, 64 x 64 x 4 latents,
8 adaLN-Zero blocks of width 1280, frozen ESM2-650M, VAE 128/256/512) with random weights. The released weights cannot
be downloaded here; to stay within the machine's per-process memory, parameters of the same shape and name share one
random tensor (same FLOPs and memory traffic per call; 1.67 G parameters would need 6.7 GB in float32). FLOPs per call
are counted (torch's FlopCounterMode on the meta device; ESM2 from its shapes); each part is timed on its own (wall
and process CPU seconds): one denoiser call with the sequence embedding precomputed (bf16 autocast, fp32, and last dynamic int8
Linear layers, converted in place), ESM2 +
projection for one sequence, one VAE encode and one decode. Seconds per image are assembled from these by counting
calls: released DDIM-100 = 100 x (denoiser + ESM2) + 3 encodes + 1 decode; locscope = ESM2 once + N x denoiser +
3 encodes + 1 decode.

``quality``: on ``../shared/golden/celldiff_v2_pipeline_tiny`` (random tiny weights), decoded images of each option
against the exact released DDIM-100 (ESM2 recomputed every step, fp32) from the same landmarks and noises, and the
difference between two independent DDIM-100 samples as the scale of "different image".
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from locscope.models.celldiff_v2 import (
    CellDiffV2Config,
    CellDiffV2VAEConfig,
    PublishedCellDiff,
    PublishedCellVAE,
    ReleasedCellDiff,
    _rebuild_non_persistent_buffers,
    build_published_celldiff,
    load_published_vae,
    read_published_state_dict,
)
from locscope.pipelines.generate_released import published_grey, quantize_int8_, released_eps_fn, sample_released

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"


def cpu_description() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{model or 'unknown CPU'}; torch capability {torch.backends.cpu.get_cpu_capability()}; " \
           f"{torch.get_num_threads()} torch thread(s); torch {torch.__version__}"


def timed(fn, repeat: int, warmup: int = 0) -> dict:
    """Median wall and process-CPU seconds of ``fn()`` over ``repeat`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "n": repeat}


def shared_random_(module: torch.nn.Module, seed: int = 0) -> int:
    """Give a meta-device module random weights in place, one tensor per (shape, name); returns unique elements."""
    generator = torch.Generator().manual_seed(seed)
    pool: dict[tuple, torch.nn.Parameter] = {}
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            key = (tuple(param.shape), name)
            if key not in pool:
                if param.dim() >= 2:
                    value = torch.randn(param.shape, generator=generator) / math.sqrt(param[0].numel())
                else:
                    value = (1.0 if name == "weight" else 0.0) + 0.02 * torch.randn(param.shape, generator=generator)
                pool[key] = torch.nn.Parameter(value, requires_grad=False)
            setattr(sub, name, pool[key])
        for name, buffer in list(sub.named_buffers(recurse=False)):
            if buffer.is_meta and name == "inv_freq":
                head_dim = 2 * buffer.numel()
                sub.register_buffer(name, 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)))
    return sum(p.numel() for p in pool.values())


def released_hpa_config(length: int) -> tuple[CellDiffV2Config, CellDiffV2VAEConfig]:
    return CellDiffV2Config(max_protein_sequence_len=max(2048, length)), CellDiffV2VAEConfig()


def build_random_released(length: int) -> tuple[ReleasedCellDiff, dict]:
    config, vae_config = released_hpa_config(length)
    with torch.device("meta"):
        model = PublishedCellDiff(config)
    total = sum(p.numel() for p in model.parameters())
    esm = sum(p.numel() for p in model.net.protein_sequence_embedding.model.parameters())
    unique = shared_random_(model)
    _rebuild_non_persistent_buffers(model)
    model.eval()
    torch.manual_seed(0)
    vae = PublishedCellVAE(vae_config).eval().requires_grad_(False)
    info = {"denoiser_parameters": total, "unique_parameter_elements": unique,
            "esm_parameters": esm,
            "vae_parameters": sum(p.numel() for p in vae.parameters())}
    return ReleasedCellDiff(model, vae, {}, "ddim100", {}), info


def count_flops(length: int) -> dict:
    """FLOPs (matmuls + convolutions) per call at the released HPA configuration, counted on the meta device; ESM2's
    from its shapes (its transformers masking code cannot run on meta tensors): 2 x linear weights x tokens +
    4 x tokens^2 x width per layer (scores and weighted sum)."""
    from torch.utils.flop_counter import FlopCounterMode

    config, vae_config = released_hpa_config(length)
    tokens = length + 2
    side = config.sample_size
    with torch.device("meta"):
        model = PublishedCellDiff(config).eval()
        vae = PublishedCellVAE(vae_config).eval()
        latent = torch.zeros(1, config.latent_channels, side, side)
        cell = torch.zeros(1, config.latent_channels * 3, side, side)
        embeds = torch.zeros(1, tokens, config.hidden_size)
        ids = torch.zeros(1, tokens, dtype=torch.long)
        counts = {}
        for name, call in (
            ("denoiser", lambda: model.net(latent, cell, ids, torch.tensor([100]), sequence_embeds=embeds)),
            ("vae_encode", lambda: vae.encode(torch.zeros(1, 1, side * 4, side * 4))),
            ("vae_decode", lambda: vae.decode(latent)),
        ):
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                call()
            counts[name] = counter.get_total_flops()
    esm = model.net.protein_sequence_embedding.model.lm.esm
    linear = sum(m.weight.numel() for m in esm.encoder.modules() if isinstance(m, torch.nn.Linear))
    counts["esm2"] = 2 * linear * tokens + 4 * tokens**2 * config.esm_embed_dim * config.esm_num_layers
    counts["esm2"] += 2 * config.esm_embed_dim * config.hidden_size * tokens * (config.esm_embed_dim != config.hidden_size)
    gflop = {k: round(v / 1e9, 1) for k, v in counts.items()}
    vae_total = 3 * counts["vae_encode"] + counts["vae_decode"]
    per_image = {"released_ddim100 (ESM2 at every step)": 100 * (counts["denoiser"] + counts["esm2"]) + vae_total,
                 "locscope_ddim100 (ESM2 once)": counts["esm2"] + 100 * counts["denoiser"] + vae_total}
    for steps in (10, 15, 20, 25):
        per_image[f"locscope_dpmsolver{steps}"] = counts["esm2"] + steps * counts["denoiser"] + vae_total
    return {"gflop_per_call": gflop, "tflop_per_image": {k: round(v / 1e12, 2) for k, v in per_image.items()}}


@torch.no_grad()
def part_speed(args) -> dict:
    flops = count_flops(args.length)
    print(json.dumps(flops, indent=1), flush=True)
    released, info = build_random_released(args.length)
    config = released.model.config
    size = released.image_size
    from locscope.models.celldiff_v2 import CellDiffV2Tokenizer

    rng = np.random.default_rng(0)
    sequence = "M" + "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), args.length - 1))
    tokens = CellDiffV2Tokenizer().batch_encode([sequence])
    generator = torch.Generator().manual_seed(0)
    shape = (1, config.latent_channels, config.sample_size, config.sample_size)
    cell = torch.randn(1, 3 * config.latent_channels, config.sample_size, config.sample_size, generator=generator)
    x = torch.randn(shape, generator=generator)
    t = torch.tensor([100])
    s1m = torch.full_like(x, 0.5)
    results: dict = {"cpu": cpu_description(), "sequence_residues": args.length, "image_size": size, **info,
                     "flops": flops, "max_rss_mb_after_build": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(info), flush=True)
    embeds = torch.zeros(1, tokens.shape[1], config.hidden_size)
    landmark = torch.rand(1, 1, size, size, generator=generator) * 2 - 1
    parts = {  # most informative first: partial results are printed as they come
        "denoiser_bf16": lambda: released_eps_fn(released, cell, tokens, embeds, "bf16")(x, t, s1m),
        "denoiser_fp32": lambda: released_eps_fn(released, cell, tokens, embeds)(x, t, s1m),
        "esm2_and_projection": lambda: released.model.net.embed_sequence(tokens),
        "vae_encode": lambda: released.vae.encode(landmark),
        "vae_decode": lambda: released.vae.decode(x),
    }
    # last: quantizes the denoiser's Linear layers in place (the quantization itself is not timed)
    parts["denoiser_int8"] = lambda: released_eps_fn(released, cell, tokens, embeds, "int8")(x, t, s1m)
    timings = {}
    for name, call in parts.items():
        if name in args.skip:
            continue
        if name == "denoiser_int8":
            started = time.process_time()
            quantize_int8_(released)
            results["int8_quantization_cpu_s"] = round(time.process_time() - started, 2)
        timings[name] = timed(call, args.repeat, warmup=args.warmup)
        key = {"esm2_and_projection": "esm2"}.get(name, "denoiser" if name.startswith("denoiser") else name)
        timings[name]["gflop_per_cpu_s"] = round(flops["gflop_per_call"][key] / timings[name]["cpu_s"], 1)
        print(name, json.dumps(timings[name]), flush=True)
    results["timings"] = timings
    if all(k in timings for k in parts if k != "denoiser_int8"):
        for kind in ("cpu_s", "wall_s"):
            vae = 3 * timings["vae_encode"][kind] + timings["vae_decode"][kind]
            esm, net, bf16 = (timings[k][kind] for k in ("esm2_and_projection", "denoiser_fp32", "denoiser_bf16"))
            out = {"released_ddim100 (ESM2 at every step)": 100 * (net + esm) + vae,
                   "locscope_ddim100_fp32 (exact, ESM2 once)": esm + 100 * net + vae,
                   "locscope_ddim100_bf16": esm + 100 * bf16 + vae}
            for steps in (10, 15, 20, 25):
                out[f"locscope_dpmsolver{steps}_fp32"] = esm + steps * net + vae
                out[f"locscope_dpmsolver{steps}_bf16"] = esm + steps * bf16 + vae
                if "denoiser_int8" in timings:
                    out[f"locscope_dpmsolver{steps}_int8"] = esm + steps * timings["denoiser_int8"][kind] + vae
            if "denoiser_int8" in timings:
                out["locscope_ddim100_int8"] = esm + 100 * timings["denoiser_int8"][kind] + vae
            results[f"seconds_per_image_{kind}"] = {k: round(v, 1) for k, v in out.items()}
            print(kind, json.dumps(results[f"seconds_per_image_{kind}"], indent=1), flush=True)
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


@torch.no_grad()
def part_quality(args) -> dict:
    golden = GOLDEN / "celldiff_v2_pipeline_tiny"
    published = json.loads((golden / "config.json").read_text())
    model = build_published_celldiff(read_published_state_dict(GOLDEN / "celldiff_v2_tiny" / "cell_diff_tiny.bin"),
                                     published)
    vae = load_published_vae(golden / "vae_tiny.bin", published)
    released = ReleasedCellDiff(model, vae, published, "ddim100", {})
    config = model.config
    tokens = torch.from_numpy(np.load(golden / "input_tokens.npy"))
    names = (("nucleus", "nucleus"), ("er", "ER"), ("microtubules", "microtubule"))
    images = {key: torch.from_numpy(published_grey(np.load(golden / f"input_{file}_rgb_uint8.npy")[..., plane],
                                                   colour))[None, None]
              for (key, file), plane, colour in zip(names, (2, 0, 0), ("blue", "yellow", "red"))}
    shape = (1, config.latent_channels, config.sample_size, config.sample_size)
    options = [("ddim100_fp32_esm_once", "ddim", 100, "fp32"), ("ddim100_bf16", "ddim", 100, "bf16")]
    options += [(f"ddim{n}_fp32", "ddim", n, "fp32") for n in (10, 20, 50)]
    options += [(f"dpmsolver{n}_fp32", "dpmsolver", n, "fp32") for n in (10, 15, 20, 25, 50)]
    options += [(f"dpmsolver{n}_bf16", "dpmsolver", n, "bf16") for n in (20, 25)]
    options += [("ddim100_int8", "ddim", 100, "int8"), ("dpmsolver10_int8", "dpmsolver", 10, "int8")]
    quantized = ReleasedCellDiff(copy.deepcopy(model), vae, published, "ddim100", {})  # int8 in place on a copy
    errors: dict[str, list] = {name: [] for name, *_ in options}
    spread = []
    for seed in range(args.noises):
        generator = torch.Generator().manual_seed(seed)
        cell = model.cell_latent({k: vae.sample_latent(images[k], torch.randn(shape, generator=generator))
                                  for k, _ in names})
        noise = torch.randn(shape, generator=generator)
        reference = sample_released(released, cell, tokens, noise, embed_once=False)
        other = sample_released(released, cell, tokens, torch.randn(shape, generator=generator), embed_once=False)
        spread.append(_error(other, reference))
        for name, sampler, steps, precision in options:
            pair = quantized if precision == "int8" else released
            errors[name].append(_error(sample_released(pair, cell, tokens, noise, sampler=sampler, steps=steps,
                                                       precision=precision), reference))
    summary = {name: _mean(values) for name, values in errors.items()}
    summary["independent_ddim100_sample (scale reference)"] = _mean(spread)
    results = {"cpu": cpu_description(), "noises": args.noises, "reference": "released DDIM-100 fp32, ESM2 every step",
               "decoded_image_error": summary}
    print(json.dumps(results, indent=1), flush=True)
    return results


def _error(image: torch.Tensor, reference: torch.Tensor) -> dict:
    diff = (image - reference).abs()
    return {"max_abs": float(diff.max()), "rmse": float(diff.pow(2).mean().sqrt())}


def _mean(values: list[dict]) -> dict:
    return {"max_abs": float(max(v["max_abs"] for v in values)),
            "rmse_mean": float(np.mean([v["rmse"] for v in values]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("speed", "quality", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--length", type=int, default=500, help="residues of the (random) sequence")
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per part")
    parser.add_argument("--warmup", type=int, default=0, help="untimed calls per part before timing")
    parser.add_argument("--noises", type=int, default=4, help="quality: independent noises averaged")
    parser.add_argument("--skip", nargs="*", default=[], help="speed parts to skip")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    results = {}
    if args.part in ("quality", "all"):
        results["quality"] = part_quality(args)
    if args.part in ("speed", "all"):
        results["speed"] = part_speed(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
