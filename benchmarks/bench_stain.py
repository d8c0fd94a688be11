"""Virtual staining: model size, sampler cost and the Table-2-shaped evaluation on held-out simulator cells.

    python benchmarks/bench_stain.py --classes 1000                # what brightfield / Cell Painting show of the class
    python benchmarks/bench_stain.py --speed                       # counts + one stain-base forward at 512 x 512
    python benchmarks/bench_stain.py --sample-512 2 [--guided]     # a whole stain-base sample at 512 x 512
    python benchmarks/bench_stain.py --quality stain-tiny|RUN/model [--classifier CLF/model] [--images 32]
                                      [--scales 0 1 4] [--table-steps 50] [--ddpm-steps 1000 [100 ...]] [--fast-steps 10 25 50]

``--classes N``: N simulator cells (32 x 32, random perturbation); a linear probe (standardized logistic regression,
5-fold cross-validated) predicts the perturbation class from the handcrafted per-channel profiles
(:func:`locscope.metrics.staining.cellprofiler_features`) of the five Cell Painting channels, of the brightfield
plane, and of both: accuracy and per-class recall (do the labels carry information brightfield lacks).
``--speed``: parameters of stain-base (the published Target2 network, 118 classes) and stain-tiny; CPU seconds and
peak resident memory of one stain-base forward pass at 512 x 512 (batch 1, the cost of one sampling step; fp32);
network / classifier evaluations per image of every sampler and guidance combination, counted by running the sampler
loops with a network stub.
``--sample-512 N``: one whole 512 x 512 sample through ``locscope.pipelines.stain.predict_stains`` with stain-base
(random weights, 3 brightfield planes, class label through AdaGN; ``--guided``: + its noisy classifier at scale 1),
ancestral DDPM respaced to N steps: CPU seconds per step and the process's peak resident memory (run each
configuration in its own process: the peak is per process).
``--quality``: held-out simulator cells (seeds disjoint from training): per-channel PCC / SSIM / MSE / MAE and the
feature-level metrics (NN match, NN top-5, MTdist, CPcor on handcrafted profiles) for no label (null class) / label
through AdaGN / AdaGN + classifier guidance at each scale (DDIM, ``--table-steps`` steps; with the classifier's mean
log-probability of each cell's class on the samples), then PCC of the published DDPM at each ``--ddpm-steps``
(fewer than T: respaced) against DDIM and DPM-Solver++ at each ``--fast-steps`` (``--no-table``: only these).
Every line printed is a measurement; the CPU model is printed first.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speed() -> None:
    from locscope.diffusion.stain_sampler import LinearSchedule, sample_stain
    from locscope.models.stain import StainUNet, count_parameters, stain_base_config, stain_tiny_config

    base_config = stain_base_config()
    with torch.device("meta"):
        base_params = count_parameters(StainUNet(base_config))
    tiny_params = count_parameters(StainUNet(stain_tiny_config(classes=tuple("abcde"), condition_planes=1)))
    print(json.dumps({"stain_base_parameters": base_params, "stain_tiny_parameters": tiny_params}), flush=True)

    schedule = LinearSchedule(2000, 1e-6, 0.01)
    for sampler, steps in (("ddpm", None), ("ddim", 50), ("dpmsolver", 20), ("dpmsolver", 10)):
        for guidance, scale in ((None, 0.0), (None, 1.0), (3.0, 0.0)):
            out = sample_stain(lambda y, g, k: torch.zeros_like(y), (1, 5, 8, 8), schedule, torch.tensor([0]), 1,
                               sampler=sampler, steps=steps, classifier_gradient=lambda y, g: torch.zeros_like(y),
                               classifier_scale=scale, guidance=guidance, generator=torch.Generator().manual_seed(0))
            print(json.dumps({"sampler": sampler, "steps": out.steps, "classifier_scale": scale, "guidance": guidance,
                              "network_evaluations": out.network_evaluations,
                              "classifier_evaluations": out.classifier_evaluations}), flush=True)

    torch.manual_seed(0)
    model = StainUNet(base_config).eval()
    x = torch.randn(1, 8, 512, 512)
    with torch.no_grad():
        start_cpu, start = time.process_time(), time.perf_counter()
        model(x[:, :3], x[:, 3:], torch.tensor([0.5]), torch.tensor([3]))
        cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    print(json.dumps({"stain_base_forward_512": {"cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
                                                 "threads": torch.get_num_threads(),
                                                 "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF)
                                                                      .ru_maxrss / 1e6, 2)}}), flush=True)


def sample_512(steps: int, guided: bool) -> None:
    from locscope.models.stain import StainClassifier, StainUNet, classifier_config_for, stain_base_config
    from locscope.pipelines.stain import StainModels, predict_stains

    torch.manual_seed(0)
    config = stain_base_config()
    denoiser = StainUNet(config).eval()
    classifier = StainClassifier(classifier_config_for(config)).eval() if guided else None
    models = StainModels(denoiser, classifier, "stain-base (random weights)")
    brightfield = torch.randn(1, config.condition_planes, 512, 512)
    start_cpu, start = time.process_time(), time.perf_counter()
    predictions, stats = predict_stains(models, brightfield, 3, sampler="ddpm", steps=steps,
                                        classifier_scale=1.0 if guided else 0.0,
                                        generator=torch.Generator().manual_seed(0))
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    print(json.dumps({"stain_base_sample_512": {
        "steps": stats.steps, "classifier_guidance": guided, "network_evaluations": stats.network_evaluations,
        "classifier_evaluations": stats.classifier_evaluations, "shape": list(predictions.shape),
        "cpu_seconds": round(cpu, 2), "cpu_seconds_per_step": round(cpu / stats.steps, 2),
        "wall_seconds": round(wall, 2), "threads": torch.get_num_threads(),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}}), flush=True)


def classes(n: int, size: int = 32) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from locscope.metrics.staining import cellprofiler_features
    from locscope.synth.config import PERTURBATIONS
    from locscope.training.stain_module import simulated_batch

    condition, target, labels = simulated_batch(size, n, np.random.default_rng([7, n]), PERTURBATIONS)
    painting, brightfield = cellprofiler_features(target.numpy()), cellprofiler_features(condition.numpy())
    y = labels.numpy()
    for name, features in (("cell_painting", painting), ("brightfield", brightfield),
                           ("both", np.hstack([painting, brightfield]))):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        predicted = cross_val_predict(probe, features, y, cv=5)
        matrix = confusion_matrix(y, predicted, labels=range(len(PERTURBATIONS)))
        recall = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
        print(json.dumps({"class_probe": name, "cells": n, "image_size": size, "features": features.shape[1],
                          "accuracy": round(float((predicted == y).mean()), 3),
                          "recall": {c: round(float(r), 3) for c, r in zip(PERTURBATIONS, recall)}}), flush=True)


def quality(args) -> None:
    from locscope.channels import CELL_PAINTING
    from locscope.diffusion.stain_sampler import LinearSchedule, sample_stain
    from locscope.metrics.staining import staining_metrics
    from locscope.models import hub
    from locscope.models.stain import StainClassifier, StainUNet
    from locscope.training.celldiff_module import pearson
    from locscope.training.stain_module import simulated_batch

    if not Path(args.quality).exists():  # a bundled name
        args.quality = str(hub.resolve(args.quality, families=("stain",)).directory)
    model = StainUNet.from_pretrained(args.quality)
    beside = Path(args.quality) / "classifier"  # a bundled model keeps its classifier there
    classifier_dir = args.classifier or (beside if (beside / "config.json").is_file() else None)
    classifier = StainClassifier.from_pretrained(classifier_dir) if classifier_dir else None
    cfg = model.config
    cond, target, labels = simulated_batch(cfg.image_size, args.images, np.random.default_rng([12345, 1]),
                                           cfg.classes, seed_parity=1)
    schedule = LinearSchedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    names = [cfg.classes[int(k)] for k in labels]

    def run(label: torch.Tensor, sampler: str, steps: int, scale: float = 0.0):
        gradient = None
        if scale:
            def gradient(y, g):
                return classifier.gradient(cond if classifier.config.use_condition else None, y, g, labels)
        start = time.process_time()
        out = sample_stain(lambda y, g, k: model(cond, y, g, k), tuple(target.shape), schedule, label, cfg.null_class,
                           sampler=sampler, steps=steps, classifier_gradient=gradient, classifier_scale=scale,
                           generator=torch.Generator().manual_seed(args.seed))
        return out, (time.process_time() - start) / len(label)

    null = torch.full_like(labels, cfg.null_class)
    rows = [("none", "none", null, 0.0), ("AdaGN", "none", labels, 0.0)]
    if classifier is not None:
        rows += [("AdaGN", f"CG s={s:g}", labels, s) for s in args.scales]
    steps = args.table_steps
    with torch.no_grad():
        for adagn, guidance, label, scale in ([] if args.no_table else rows):
            with torch.enable_grad() if scale else torch.no_grad():
                out, cpu = run(label, "ddim", steps, scale)
            m = staining_metrics(target.numpy(), out.images.numpy(), names, CELL_PAINTING)
            if classifier is not None:  # does the sample show its class: the classifier's log p(k | y) at gamma 0.999
                logits = classifier(cond if classifier.config.use_condition else None, out.images,
                                    torch.full((len(labels),), 0.999))
                m["classifier_log_p"] = float(logits.log_softmax(-1).gather(1, labels[:, None]).mean())
            print(json.dumps({"table2_row": {"adagn": adagn, "guidance": guidance, "sampler": f"ddim-{steps}",
                                             **{k: (round(v, 4) if isinstance(v, float) else v)
                                                for k, v in m.items() if k != "per_channel"},
                                             "per_channel_pcc": {c: round(v, 4) for c, v
                                                                 in m["per_channel"]["pcc"].items()},
                                             "cpu_s_per_image": round(cpu, 2)}}), flush=True)
        for sampler, step_list in (("ddpm", args.ddpm_steps), ("ddim", args.fast_steps),
                                   ("dpmsolver", args.fast_steps)):
            for n in step_list:
                out, cpu = run(labels, sampler, n)
                value = float(pearson(out.images.flatten(0, 1), target.flatten(0, 1)).mean())
                print(json.dumps({"speed_pcc": {"sampler": sampler, "steps": out.steps,
                                                "network_evaluations": out.network_evaluations,
                                                "pcc": round(value, 4), "cpu_s_per_image": round(cpu, 2)}}),
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, metavar="N", help="class probe on N simulator cells")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--sample-512", type=int, metavar="STEPS", help="one stain-base sample at 512 x 512")
    parser.add_argument("--guided", action="store_true", help="with --sample-512: classifier guidance (scale 1)")
    parser.add_argument("--quality", help="a stain model folder (e.g. RUN/model)")
    parser.add_argument("--classifier", help="its classifier folder")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 4.0])
    parser.add_argument("--ddpm-steps", type=int, nargs="+", default=[1000])
    parser.add_argument("--fast-steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--table-steps", type=int, default=50, help="DDIM steps of the Table-2 rows")
    parser.add_argument("--no-table", action="store_true", help="only the sampler comparison of --quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
                      "torch": torch.__version__, "threads": args.threads}), flush=True)
    if args.classes:
        classes(args.classes)
    if args.speed:
        speed()
    if args.sample_512:
        sample_512(args.sample_512, args.guided)
    if args.quality:
        quality(args)


if __name__ == "__main__":
    main()
