"""CELL-Diff training: the CLI run, exact resume after a SIGKILL, the loss pieces and 2-process DDP on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from locscope.cli import main
from locscope.training.celldiff_data import EpochSampler, class_balance_weights
from locscope.training.celldiff_module import CellDiffTrainConfig, derangement, learning_rate_at, step_generator
from locscope.training.common import read_train_config

from support import check_resume_after_kill

ROOT = Path(__file__).resolve().parents[2]
TINY = {"image_size": 16, "channels": [8, 8, 16, 16], "transformer_width": 32, "transformer_layers": 1,
        "sequence_dim": 16, "sequence_layers": 1, "attention_grid": 2}


def make_store(path: Path, n: int = 24) -> Path:
    from locscope.data.store import write_store

    rng = np.random.default_rng(0)
    classes, items = ["nucleus", "cytosol", "mitochondria"], []
    for i in range(n):
        c = i % 3
        protein = rng.random((16, 16)).astype(np.float32) * 0.2
        protein[4:12, 4:12] += 0.8 * (c == 0)
        protein[:, :4] += 0.8 * (c == 1)
        protein[::4, ::4] += 0.8 * (c == 2)
        sequence = ("MPKKKRKV", "MAAAGSGS", "MLSRAVRR")[c] + "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 20))
        items.append({"id": f"c{i}", "protein_id": f"p{i // 2}", "sequence": sequence,
                      "provenance": {"compartments": {("nucleoplasm", "cytosol", "mitochondria")[c]: 1.0}},
                      "labels": {"level3": [classes[c]]},
                      "images": {"protein": np.clip(protein, 0, 1), **{ch: rng.random((16, 16)).astype(np.float32)
                                                                      for ch in ("nucleus", "er", "microtubules")}}})
    write_store(path, items, channels=("protein", "nucleus", "er", "microtubules"), image_shape=(16, 16),
                image_dtype="float32", progress=False)
    return path


def write_config(path: Path, **extra) -> Path:
    config = {"model": "celldiff-tiny", "model_overrides": TINY, "batch_size": 4, "max_steps": 4,
              "steps_per_epoch": 2, "warmup_steps": 2, "val_items": 4, "val_steps": 2, "log_every_steps": 1,
              "torch_threads": 1, **extra}
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "cells")


def test_cli_training_writes_a_loadable_model(store, tmp_path):
    from locscope.models.celldiff import CellDiff

    config = write_config(tmp_path / "train.json")
    main_args = ["train", "celldiff", "--data", str(store), "--config", str(config), "--out", str(tmp_path / "run")]
    try:
        main(main_args)
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    run = tmp_path / "run"
    model = CellDiff.from_pretrained(run / "model")
    assert model.config.image_size == 16
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [line for line in lines if "loss" in line]
    assert [line["step"] for line in losses] == [1, 2, 3, 4]
    assert all(np.isfinite(line["loss"]) and line["loss"] > 0 for line in losses)
    assert all(line["cpu_s_per_item"] > 0 for line in losses)
    gates = [line for line in lines if "val_pcc_true" in line]
    assert len(gates) == 2 and all(-1 <= g["val_pcc_true"] <= 1 for g in gates)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 4 and state["epoch"] == 2
    # a second run into the same directory without --resume is refused
    with pytest.raises(SystemExit) as exit_:
        main(main_args)
    assert exit_.value.code == 2


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    from locscope.training.celldiff_module import CellDiffTrainConfig, train_celldiff
    from locscope.training.common import read_train_config

    class Kill(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            if module.step == int(sys.argv[4]):
                os.kill(os.getpid(), signal.SIGKILL)

    resume = sys.argv[3] == "1"
    settings = None if resume else read_train_config(sys.argv[5], CellDiffTrainConfig)
    train_celldiff(sys.argv[1], sys.argv[2], settings, resume=resume, progress=False, callbacks=[Kill()])
""")


def test_killed_training_resumes_exactly(store, tmp_path):
    config = write_config(tmp_path / "train.json", val_every_epochs=100)
    check_resume_after_kill(KILL_SCRIPT, tmp_path, lambda run, resume, kill_at: [
        str(store), str(run), "1" if resume else "0", str(kill_at), str(config)], timeout=300)
    def losses(run: str) -> list[float]:
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert losses("straight") == losses("killed")


@pytest.mark.slow
def test_compiled_training_resumes_exactly_and_matches_eager(store, tmp_path):
    from locscope.training.celldiff_module import train_celldiff

    config = write_config(tmp_path / "train.json", val_every_epochs=100, compile=True, bf16=True)
    check_resume_after_kill(KILL_SCRIPT, tmp_path, lambda run, resume, kill_at: [
        str(store), str(run), "1" if resume else "0", str(kill_at), str(config)], timeout=1800)
    eager = read_train_config(write_config(tmp_path / "eager.json", val_every_epochs=100, bf16=True),
                              CellDiffTrainConfig)
    train_celldiff(store, tmp_path / "eager", eager, progress=False)

    def losses(run: str) -> list[float]:
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert losses("straight") == losses("killed")
    assert np.allclose(losses("straight"), losses("eager"), rtol=1e-3)


def free_port() -> int:
    """A TCP port free on this machine now (the OS picks it), so parallel runs do not collide on a fixed one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes(store, tmp_path):
    config = write_config(tmp_path / "train.json", accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true",
                          val_every_epochs=100)
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        from locscope.training.celldiff_module import CellDiffTrainConfig, train_celldiff
        from locscope.training.common import read_train_config
        if __name__ == "__main__":
            settings = read_train_config({str(config)!r}, CellDiffTrainConfig)
            train_celldiff({str(store)!r}, {str(tmp_path / 'run')!r}, settings, progress=False)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MASTER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=400, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"distributed_backend=gloo" in result.stderr or b"gloo" in result.stderr + result.stdout
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 4
    rates = [json.loads(line)["examples_per_s"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "examples_per_s" in line]
    assert len(rates) == 4  # only rank 0 logs


@pytest.mark.slow
def test_fsdp_two_cpu_processes_trains_and_resumes(store, tmp_path):
    config = write_config(tmp_path / "train.json", accelerator="cpu", devices=2, strategy="fsdp", val_every_epochs=1,
                          max_steps=4)
    script = tmp_path / "fsdp.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from locscope.training.celldiff_module import CellDiffTrainConfig, train_celldiff
        from locscope.training.common import read_train_config
        if __name__ == "__main__":
            resume = sys.argv[1] == "1"
            settings = None if resume else read_train_config({str(config)!r}, CellDiffTrainConfig)
            train_celldiff({str(store)!r}, {str(tmp_path / 'run')!r}, settings, resume=resume, progress=False)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MASTER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, str(script), "0"], env=env, capture_output=True, timeout=400, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    run = tmp_path / "run"
    from locscope.models.celldiff import CellDiff

    model = CellDiff.from_pretrained(run / "model")  # full (gathered) EMA weights, strict load
    online = load_file(str(run / "checkpoints" / "last" / "online.safetensors"))
    assert set(online) == set(model.state_dict())
    assert all(online[k].shape == v.shape for k, v in model.state_dict().items())
    # resume to 6 steps under FSDP: the saved full optimizer state is re-sharded
    saved = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**saved, "max_steps": 6}))
    result = subprocess.run([sys.executable, str(script), "1"], env=env, capture_output=True, timeout=400, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"] == 6


def test_schedule_sampler_and_generators():
    config = CellDiffTrainConfig(learning_rate=1.0, warmup_steps=10, max_steps=110, final_lr_fraction=0.0)
    assert learning_rate_at(0, config) == pytest.approx(0.1)
    assert learning_rate_at(9, config) == pytest.approx(1.0)
    assert learning_rate_at(60, config) == pytest.approx(0.5)
    assert learning_rate_at(110, config) == pytest.approx(0.0)
    a = torch.randn(3, generator=step_generator(0, 5, 0))
    assert torch.equal(a, torch.randn(3, generator=step_generator(0, 5, 0)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(0, 5, 1)))
    shuffled = derangement(10, 0)
    assert sorted(shuffled.tolist()) == list(range(10)) and not (shuffled == np.arange(10)).any()
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    sampler = EpochSampler(labels, batch_size=2, steps_per_epoch=3, seed=0, repair_probability=1.0)
    pairs = list(sampler)
    assert len(pairs) == 6 and all((labels[i] == labels[j]).all() for i, j in pairs)  # re-paired within a class
    sampler.set_epoch(1)
    assert list(sampler) != pairs and list(EpochSampler(labels, 2, 3, 0, 1.0)) == pairs
    # class balance: 90 items of class 0, 10 of class 1 -> drawn about equally often at strength 1
    skewed = np.eye(2, dtype=np.float32)[[0] * 90 + [1] * 10]
    assert class_balance_weights(skewed, 0.0) is None
    weights = class_balance_weights(skewed, 1.0)
    assert weights[:90].sum() == pytest.approx(0.5) and weights[90:].sum() == pytest.approx(0.5)
    assert class_balance_weights(skewed, 0.5)[90:].sum() == pytest.approx(10 * 10 ** -0.5 / (90 * 90 ** -0.5 + 10 * 10 ** -0.5))
    drawn = [i for i, _ in EpochSampler(skewed, 50, 20, seed=0, repair_probability=0.0, weights=weights)]
    assert 0.45 < np.mean(np.array(drawn) >= 90) < 0.55  # 1,000 seeded draws (uniform: 0.10)
    with pytest.raises(ValueError, match="class_balance"):
        CellDiffTrainConfig(class_balance=2.0)


def test_train_config_errors(tmp_path):
    from locscope.errors import InputError

    (tmp_path / "bad.yaml").write_text("batch_size: 4\nlearning_rat: 0.1\n")
    with pytest.raises(InputError, match="unknown training options: learning_rat"):
        read_train_config(tmp_path / "bad.yaml", CellDiffTrainConfig)
    (tmp_path / "bad2.yaml").write_text("image_loss: l1\n")
    with pytest.raises(InputError, match="image_loss='l1'"):
        read_train_config(tmp_path / "bad2.yaml", CellDiffTrainConfig)
    (tmp_path / "bad3.yaml").write_text("compile: fast\n")
    with pytest.raises(InputError, match="compile='fast': accepted values are true, false"):
        read_train_config(tmp_path / "bad3.yaml", CellDiffTrainConfig)


def test_split_reads_true_fractions_and_the_loss_trains_the_fraction_head(store):
    from locscope.data.store import Store
    from locscope.training.celldiff_data import load_split
    from locscope.training.celldiff_data import PairedDataset, collate
    from locscope.training.celldiff_module import CellDiffModule

    classes = ("nucleoplasm", "cytosol", "mitochondria")
    config = CellDiffTrainConfig(model_overrides={**TINY, "fraction_classes": classes}, batch_size=4)
    split = load_split(Store.open(store), "train", ("nucleus", "er", "microtubules"),
                       config.model_config().compartment_classes, 16, 64, fraction_classes=classes)
    assert split.fractions.shape == (len(split), 3)
    assert np.allclose(split.fractions.sum(1), 1.0)
    for row, item_id in enumerate(split.ids):
        assert split.fractions[row, int(item_id[1:]) % 3] == 1.0
    module = CellDiffModule(config.model_config(), config, "unused")
    batch = collate([PairedDataset(split)[(i, i)] for i in range(4)])
    losses = module.compute_losses(batch, step_generator(0, 0, 0))
    assert set(losses) == {"loss", "image_loss", "sequence_loss", "compartment_loss", "fraction_loss"}
    assert abs(float(losses["fraction_loss"]) - np.log(3)) < 0.5  # untrained head: near uniform over 3 classes
    losses["loss"].backward()
    assert module.model.fraction_head[-1].weight.grad.abs().sum() > 0
    assert module.model.fractions_to_time[0].weight.grad.abs().sum() > 0

    # the layout prior adds its regression of the clean image, which trains the layout maps
    config = CellDiffTrainConfig(model_overrides={**TINY, "fraction_classes": classes, "layout_prior": True,
                                                  "layout_width": 4}, batch_size=4)
    module = CellDiffModule(config.model_config(), config, "unused")
    losses = module.compute_losses(batch, step_generator(0, 0, 0))
    assert "layout_loss" in losses and float(losses["layout_loss"]) > 0
    losses["loss"].backward()
    assert module.model.layout.head.weight.grad.abs().sum() > 0


def test_validation_subset_spreads_over_the_split(store):
    from locscope.data.store import Store
    from locscope.training.celldiff_data import load_split

    opened = Store.open(store)
    args = (("nucleus", "er", "microtubules"), ("nucleus", "cytosol", "mitochondria"), 16, 64)
    everything = load_split(opened, "train", *args)
    first = load_split(opened, "train", *args, limit=3)
    spread = load_split(opened, "train", *args, limit=3, spread=True)
    assert first.ids == everything.ids[:3]
    expected = np.linspace(0, len(everything) - 1, 3).round().astype(int)
    assert spread.ids == [everything.ids[i] for i in expected] and spread.ids[-1] == everything.ids[-1]
    assert np.array_equal(spread.images, everything.images[expected])


def test_layout_prior_learns_compartment_masks_rendered_from_the_store_seeds(tmp_path):
    from locscope.data.ontology import SIMULATOR_COMPARTMENTS
    from locscope.data.store import Store
    from locscope.synth import SimulatorConfig, render_cell
    from locscope.training.celldiff_data import PairedDataset, build_training_store, collate, load_split, split_masks
    from locscope.errors import InputError
    from locscope.training.celldiff_module import CellDiffModule, initialise_from

    build_training_store(tmp_path / "sim", None, image_size=16, n_synthetic=12, seed=3, progress=False)
    store = Store.open(tmp_path / "sim")
    overrides = {**TINY, "fraction_classes": SIMULATOR_COMPARTMENTS, "layout_prior": True, "layout_width": 4}
    config = CellDiffTrainConfig(model_overrides=overrides, batch_size=4)
    split = load_split(store, "train", ("nucleus", "er", "microtubules"), config.model_config().compartment_classes,
                       16, 64, fraction_classes=SIMULATOR_COMPARTMENTS)
    split.masks = split_masks(store, split, SIMULATOR_COMPARTMENTS, 16, progress=False)
    item = store[int(split.store_indices[0])]
    cell = render_cell(SimulatorConfig.from_dict(store.attrs["simulator"]), seed=item["provenance"]["seed"])
    assert np.allclose(cell.images["nucleus"], item["images"]["nucleus"] / 65535, atol=1e-4)  # the same cell
    assert np.array_equal(split.masks[0], np.stack([cell.masks[n] for n in SIMULATOR_COMPARTMENTS]).astype(np.uint8))
    # a cache folder keeps the rendered masks for a resumed run: the second call reads them, not the simulator
    cached = split_masks(store, split, SIMULATOR_COMPARTMENTS, 16, progress=False, cache=tmp_path / "cache")
    assert np.array_equal(cached, split.masks) and len(list((tmp_path / "cache").glob("masks_*.npy"))) == 1
    with mock.patch("locscope.synth.render_cell", side_effect=AssertionError("rendered again")):
        again = split_masks(store, split, SIMULATOR_COMPARTMENTS, 16, progress=False, cache=tmp_path / "cache")
    assert np.array_equal(again, split.masks)
    module = CellDiffModule(config.model_config(), config, "unused")
    batch = collate([PairedDataset(split)[(i, i)] for i in range(4)])
    losses = module.compute_losses(batch, step_generator(0, 0, 0))
    assert 0.3 < float(losses["layout_mask_loss"]) < 1.5  # binary cross-entropy of an untrained head
    losses["loss"].backward()
    assert module.model.layout.membership.weight.grad.abs().sum() > 0

    # init_from: matching tensors are copied, a new head keeps its initialisation, another architecture is refused
    from safetensors.torch import load_file, save_file

    module.model.save_pretrained(tmp_path / "old")
    weights = load_file(tmp_path / "old" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("layout.membership")},
              str(tmp_path / "old" / "model.safetensors"))
    fresh = CellDiffModule(config.model_config(), config, "unused").model
    copied, kept = initialise_from(fresh, tmp_path / "old")
    assert kept == ["layout.membership.bias", "layout.membership.weight"] and "stem.weight" in copied
    assert torch.equal(fresh.stem.weight, module.model.stem.weight)
    plain = CellDiffModule(CellDiffTrainConfig(model_overrides=TINY).model_config(), config, "unused").model
    with pytest.raises(InputError, match="does not fit"):
        initialise_from(plain, tmp_path / "old")


def test_bf16_auto_follows_the_device(monkeypatch):
    from locscope.errors import InputError
    from locscope.training import common

    cpu = torch.device("cpu")
    assert common.use_bf16(True, cpu) and not common.use_bf16(False, cpu)
    for native in (True, False):
        monkeypatch.setattr(common, "_cpu_native_bf16", lambda native=native: native)
        assert common.use_bf16("auto", cpu) is native
    with pytest.raises(InputError, match="accepted values are true, false, auto"):
        common.use_bf16("fast", cpu)


def test_ema_update_is_one_lerp_of_float_tensors_and_copies_the_rest():
    from locscope.training.common import update_ema

    model = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
    model.num_batches_tracked.fill_(7)
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    update_ema(ema, model, max_decay=0.999, step=0)  # decay min(0.999, 1/10) = 0.1
    assert torch.allclose(ema["weight"], torch.full((3,), 1.8))
    assert torch.allclose(ema["running_var"], torch.full((3,), 0.9)) and int(ema["num_batches_tracked"]) == 7
    update_ema(ema, model, max_decay=0.5, step=100)  # decay 0.5
    assert torch.allclose(ema["weight"], torch.full((3,), 1.9))


def test_a_step_with_non_finite_gradients_stops_the_run_before_it_writes_them(store, tmp_path, cli):
    """A NaN loss at step 3 (injected) stops `locscope train celldiff` in one line before the optimizer step: no
    model folder, and checkpoints/last keeps step 2's finite weights, from which the run resumes."""
    from conftest import error_line
    from locscope.training.celldiff_module import CellDiffModule

    compute = CellDiffModule.compute_losses

    def poisoned(self, batch, generator):
        losses = compute(self, batch, generator)
        if self.step == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    config = write_config(tmp_path / "train.json", val_every_epochs=100)
    run = tmp_path / "run"
    with mock.patch.object(CellDiffModule, "compute_losses", poisoned):
        code, _, err = cli(["train", "celldiff", "--data", store, "--config", config, "--out", run])
    assert code == 2
    line = error_line(err)
    assert line.startswith("error: step 3: the gradients of ") and "not finite" in line
    assert line.endswith("; checkpoints/last keeps the last saved state: try a lower learning_rate, then --resume")
    assert not (run / "model").exists()
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"] == 2
    weights = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    code, _, err = cli(["train", "celldiff", "--data", store, "--out", run, "--resume"])
    assert code == 0, err
    assert json.loads((run / "model" / "config.json").read_text())["_meta"]["step"] == 4


def test_check_finite_gradients_names_the_step_the_loss_and_the_parameter():
    from locscope.errors import TrainingError
    from locscope.training.common import check_finite_gradients, finite_hint

    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(1, 3)).sum().backward()
    check_finite_gradients(layer.named_parameters(), 7)  # finite: nothing happens
    layer.bias.grad[0] = float("inf")
    with pytest.raises(TrainingError, match=r"^step 7: the gradients of 1 of 2 parameter tensors are not finite "
                                            r"\(first: bias\); the run stopped before updating the weights$"):
        check_finite_gradients(layer.named_parameters(), 7)
    with pytest.raises(TrainingError, match=r"^step 8: the training loss is nan; .*checkpoint/ keeps"):
        check_finite_gradients(layer.named_parameters(), 8, torch.tensor(float("nan")),
                               finite_hint(CellDiffTrainConfig(), "checkpoint/"))
    hint = finite_hint(CellDiffTrainConfig(compile=True, bf16="auto"))
    assert "try compile: false (" in hint and " or bf16: false or a lower learning_rate, then --resume" in hint
