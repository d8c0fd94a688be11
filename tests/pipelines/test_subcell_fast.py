"""Fast SubCell inference: ``precision="int8"`` (dynamic int8 ViT Linear layers) and ``backend="openvino"`` (skipped
without openvino + nncf) against the fp32 outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from locscope.cli import main
from locscope.errors import InputError
from locscope.models.subcell import SubCellConfig, SubCellModel, quantize_encoder_int8
from locscope.pipelines.embed import CellInput, embed_cells
from locscope.utils.checkpoint import save_pretrained
from locscope.utils.cpu import CpuCapability

AVX2_CPU = CpuCapability("test AVX2 CPU", "AVX2", native_bf16=False, vnni=False)
VNNI_CPU = CpuCapability("test AVX512-VNNI CPU", "AVX512", native_bf16=False, vnni=True, flags=("avx512_vnni",))
BF16_CPU = CpuCapability("test AVX512-BF16 CPU", "AVX512", native_bf16=True, vnni=True,
                         flags=("avx512_bf16", "avx512_vnni"))

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
            patch_size=8, pool_inner_dim=32, classifier_hidden=(32,), num_classifiers=2)


@pytest.fixture(scope="module")
def tiny_model() -> SubCellModel:
    torch.manual_seed(0)
    return SubCellModel(SubCellConfig(**TINY)).eval()


def random_cells(n: int, seed: int = 0) -> list[CellInput]:
    """n cells of 4 x 32 x 32 raw intensities: a bright blob on noise, at random places."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:32, :32]
    cells = []
    for i in range(n):
        center = rng.uniform(8, 24, size=(4, 2))
        blobs = np.exp(-((rows - center[:, :1, None]) ** 2 + (cols - center[:, 1:, None]) ** 2) / 30.0)
        cells.append(CellInput(f"cell{i}", (1000 * blobs + rng.uniform(0, 200, (4, 32, 32))).astype(np.float32)))
    return cells


def test_int8_close_to_fp32(tiny_model):
    cells = random_cells(40)
    fp32 = embed_cells(tiny_model, cells, batch_size=16, precision="fp32", progress=False)
    int8 = embed_cells(tiny_model, cells, batch_size=16, precision="int8", progress=False)
    assert int8.ids == fp32.ids
    cosine = (int8.embeddings * fp32.embeddings).sum(1) / (
        np.linalg.norm(int8.embeddings, axis=1) * np.linalg.norm(fp32.embeddings, axis=1))
    # int8 weights (per output channel) and activations (per batch): embeddings stay within cosine 0.995 of fp32 and
    # probabilities within 0.03; the outputs are not bit-equal (the quantized path really ran).
    assert cosine.min() > 0.995
    assert np.abs(int8.probabilities - fp32.probabilities).max() < 0.03
    assert not np.array_equal(int8.embeddings, fp32.embeddings)
    assert int8.embeddings.dtype == np.float32 and int8.probabilities.dtype == np.float32


def test_quantize_leaves_model_unchanged(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    quantized = quantize_encoder_int8(tiny_model)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    n_linear = sum(type(m) is nn.Linear for m in tiny_model.encoder.modules())
    assert n_linear == 6 * TINY["num_hidden_layers"]  # q, k, v, o, fc1, fc2 per layer
    assert sum(type(m) is DynamicQuantizedLinear for m in quantized.encoder.modules()) == n_linear
    assert not any(type(m) is nn.Linear for m in quantized.encoder.modules())
    assert sum(type(m) is nn.Linear for m in quantized.classifiers.modules()) == 2 * TINY["num_classifiers"]
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_precision_one_line(tiny_model):
    with pytest.raises(InputError, match=r"^precision 'fp16': accepted values are auto, fp32, bf16, int8$"):
        embed_cells(tiny_model, random_cells(1), precision="fp16", progress=False)


def test_classify_cli_int8(tmp_path, tiny_model, capsys):
    import tifffile

    model_dir = save_pretrained(tiny_model, tiny_model.config, tmp_path / "model")
    paths = []
    for cell in random_cells(2, seed=1):
        paths.append(tmp_path / f"{cell.id}.tif")
        tifffile.imwrite(paths[-1], cell.images)
    order = "microtubules,er,nucleus,protein"
    args = ["classify", *map(str, paths), "--model", str(model_dir), "--channel-order", order, "--top", "2"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--precision", "int8"])
    assert info.value.code in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["cell0", "cell1"]

    with pytest.raises(SystemExit) as info:
        main([*args, "--precision", "int4"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "accepted values are auto, fp32, bf16, int8" in err


# ------------------------------------------------------------------------------------------ OpenVINO backend (optional)
def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_openvino_int8_close_to_fp32(tiny_model):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    cells = random_cells(40)
    fp32 = embed_cells(tiny_model, cells, batch_size=16, precision="fp32", progress=False)
    ov_fp32 = embed_cells(tiny_model, cells, batch_size=16, precision="fp32", backend="openvino", progress=False)
    ov_int8 = embed_cells(tiny_model, cells, batch_size=16, precision="int8", backend="openvino", progress=False,
                          calibration_cells=24)
    assert ov_int8.ids == ov_fp32.ids == fp32.ids
    # OpenVINO fp32 reproduces PyTorch; its static int8 (weights per channel, activations calibrated on the first 24
    # cells) stays within cosine 0.995 and probabilities within 0.03 of fp32, and is not bit-equal (it really ran).
    np.testing.assert_allclose(ov_fp32.embeddings, fp32.embeddings, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ov_fp32.probabilities, fp32.probabilities, atol=1e-4)
    for a, b in zip(ov_fp32.attention, fp32.attention):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert _cosine(ov_int8.embeddings, fp32.embeddings).min() > 0.995
    assert np.abs(ov_int8.probabilities - fp32.probabilities).max() < 0.03
    assert np.abs(ov_int8.embeddings - ov_fp32.embeddings).max() > 1e-3
    assert ov_int8.embeddings.dtype == np.float32


def test_openvino_compiled_size_and_mixed_sizes(tiny_model):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from locscope.models.subcell import compile_openvino, min_max_normalize

    images = min_max_normalize(torch.from_numpy(np.stack([c.images for c in random_cells(4)])))
    compiled = compile_openvino(tiny_model, images, precision="fp32", num_threads=1)
    with torch.inference_mode():
        expected = tiny_model(images[:3])
    out = compiled(images[:3])  # any batch size
    torch.testing.assert_close(out.embedding, expected.embedding, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"images must be 32x32 \(the compiled size\); got \(48, 48\)"):
        compiled(torch.zeros(1, 4, 48, 48))
    with pytest.raises(ValueError, match="precision='int4': accepted values are int8, fp32, bf16"):
        compile_openvino(tiny_model, images, precision="int4")
    # cells of two sizes (sizes kept): one compiled model per size, outputs in input order
    cells = random_cells(3)
    big = CellInput("big", np.pad(cells[1].images, ((0, 0), (8, 8), (8, 8))))
    mixed = [cells[0], big, cells[2]]
    ov = embed_cells(tiny_model, mixed, batch_size=4, precision="int8", backend="openvino", progress=False)
    ref = embed_cells(tiny_model, mixed, batch_size=4, precision="fp32", progress=False)
    assert ov.ids == ["cell0", "big", "cell2"] and ov.attention[1].shape == (2, 6, 6)
    assert _cosine(ov.embeddings, ref.embeddings).min() > 0.99
    # resized to one size (image_size): calibration cells of several raw sizes
    ov = embed_cells(tiny_model, mixed, batch_size=1, precision="int8", backend="openvino", image_size=32,
                     progress=False)
    ref = embed_cells(tiny_model, mixed, batch_size=1, precision="fp32", image_size=32, progress=False)
    assert ov.ids == ["cell0", "big", "cell2"] and ov.attention[1].shape == (2, 4, 4)
    assert _cosine(ov.embeddings, ref.embeddings).min() > 0.99


def test_openvino_missing_is_one_line_error(tiny_model, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError, installed or not
    with pytest.raises(InputError, match=r"^backend openvino needs openvino \(pip install openvino nncf\)$"):
        embed_cells(tiny_model, random_cells(1), precision="int8", backend="openvino", progress=False)
    with pytest.raises(InputError, match=r"^backend 'onnx': accepted values are auto, torch, openvino$"):
        embed_cells(tiny_model, random_cells(1), backend="onnx", progress=False)
    # the default falls back to the CPU's fastest exact precision and says why
    from locscope.pipelines import embed_runtime

    for cpu, expected in ((AVX2_CPU, "fp32"), (BF16_CPU, "bf16")):
        monkeypatch.setattr(embed_runtime, "cpu_capability", lambda cpu=cpu: cpu)
        result = embed_cells(tiny_model, random_cells(80), progress=False)
        how = "native" if cpu.native_bf16 else "emulated"
        assert [(m.backend, m.precision, m.reason, m.cpu) for m in result.modes] == [
            ("torch", expected, f"auto: openvino / nncf not installed; bf16 {how} on this CPU", cpu.to_dict())]


def test_classify_cli_openvino_int8(tmp_path, tiny_model, capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import tifffile

    model_dir = save_pretrained(tiny_model, tiny_model.config, tmp_path / "model")
    paths = []
    for cell in random_cells(2, seed=1):
        paths.append(tmp_path / f"{cell.id}.tif")
        tifffile.imwrite(paths[-1], cell.images)
    args = ["classify", *map(str, paths), "--model", str(model_dir), "--channel-order",
            "microtubules,er,nucleus,protein", "--top", "2", "--precision", "int8", "--backend", "openvino"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()  # nothing but the cells (no quantizer progress output)
    assert [line.split("\t")[0] for line in lines] == ["cell0", "cell1"]


# ------------------------------------------------------------------------- the default: verified OpenVINO int8 (auto)
def _cache_entries() -> list:
    from locscope.pipelines.embed_runtime import cache_root

    folder = cache_root() / "openvino"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_auto_runs_verified_int8_then_reads_the_cache(tiny_model, tmp_path, monkeypatch, int8_check_passes):
    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    cells = random_cells(80)
    fp32 = embed_cells(tiny_model, cells, batch_size=16, precision="fp32", progress=False)
    first = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    (mode,) = first.modes
    assert (mode.backend, mode.precision, mode.calibration, mode.verified_cells, mode.cells) == (
        "openvino", "int8", "this run (64 cells)", 8, 80)
    assert mode.verified_min_cosine >= 0.99 and mode.cpu == VNNI_CPU.to_dict()
    assert _cosine(first.embeddings, fp32.embeddings).min() > 0.99
    assert np.abs(first.embeddings - fp32.embeddings).max() > 1e-4  # int8 really ran
    assert len(_cache_entries()) == 1
    second = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    assert second.modes[0].calibration == "cache"
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    # another model (other weights) gets its own calibration
    torch.manual_seed(1)
    other = SubCellModel(SubCellConfig(**TINY)).eval()
    assert embed_cells(other, cells, progress=False).modes[0].calibration == "this run (64 cells)"
    assert len(_cache_entries()) == 2


def compile_in_fp32(monkeypatch) -> list:
    """OpenVINO models compile with f32 for their non-quantized ops whatever the injected CPU says (the machine running
    the test may have no bf16); returns the list of ``(precision, int8_float)`` the runtime asked for."""
    from locscope.models.subcell import OpenVINOSubCell

    asked = []
    real = OpenVINOSubCell.from_openvino_model

    def compile_(model, ov_model, size, precision="int8", num_threads=None, int8_float="bf16"):
        asked.append((precision, int8_float))
        return real(model, ov_model, size, precision, num_threads, "fp32")

    monkeypatch.setattr(OpenVINOSubCell, "from_openvino_model", staticmethod(compile_))
    return asked


@pytest.mark.parametrize("cpu", [VNNI_CPU, BF16_CPU], ids=["avx512-vnni", "avx512-bf16"])
def test_auto_falls_back_to_the_cpus_precision(tiny_model, tmp_path, monkeypatch, cpu):
    """Too few cells, or a failed int8 check (cosine injected): PyTorch in bf16 only where bf16 is native, else fp32;
    the outputs are exactly those of that precision asked explicitly."""
    from locscope.pipelines import embed_runtime

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(embed_runtime, "cpu_capability", lambda: cpu)
    compile_in_fp32(monkeypatch)
    expected, why = ("bf16", "bf16 native on this CPU") if cpu.native_bf16 else ("fp32", "bf16 emulated on this CPU")
    cells = random_cells(80)
    explicit = embed_cells(tiny_model, cells, batch_size=16, precision=expected, progress=False)
    few = embed_cells(tiny_model, cells[:71], batch_size=16, progress=False)
    assert [(m.backend, m.precision, m.reason) for m in few.modes] == [
        ("torch", expected, f"auto: 71 cells of this size at the head, int8 needs 64 + 8; {why}")]
    np.testing.assert_array_equal(few.embeddings, explicit.embeddings[:71])
    monkeypatch.setattr(embed_runtime, "_min_cosine", lambda a, b: 0.9985)  # the check fails
    failed = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    (mode,) = failed.modes
    assert (mode.backend, mode.precision, mode.reason, mode.verified_min_cosine, mode.cpu) == (
        "torch", expected, f"auto: int8 failed verification (min cosine 0.99850 < 0.999); {why}", 0.9985,
        cpu.to_dict())
    np.testing.assert_array_equal(failed.embeddings, explicit.embeddings)
    assert _cache_entries() == []  # nothing unverified is cached


def test_auto_skips_int8_without_vnni(tiny_model, tmp_path, monkeypatch):
    """Without int8 dot-product instructions the default does not try int8 (no faster than fp32 there): PyTorch fp32
    where bf16 is emulated, exactly the explicit fp32 outputs; asked for explicitly, OpenVINO int8 gets 7-bit
    weights and fp32 for its other ops."""
    from locscope.pipelines import embed_runtime

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(embed_runtime, "cpu_capability", lambda: AVX2_CPU)
    made = []
    real_convert = embed_runtime.convert_openvino
    monkeypatch.setattr(embed_runtime, "convert_openvino", lambda *a, **k: made.append(k) or real_convert(*a, **k))
    cells = random_cells(80)
    result = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    assert [(m.backend, m.precision, m.reason, m.cpu) for m in result.modes] == [
        ("torch", "fp32", "auto: no VNNI on this CPU (int8 is not faster than fp32 there); bf16 emulated on this CPU",
         AVX2_CPU.to_dict())]
    assert made == [] and _cache_entries() == []
    np.testing.assert_array_equal(result.embeddings, embed_cells(tiny_model, cells, batch_size=16, precision="fp32",
                                                                 progress=False).embeddings)
    import locscope.pipelines.embed as embed_module

    asked = []
    real_compile = embed_module.compile_openvino
    monkeypatch.setattr(embed_module, "compile_openvino", lambda *a, **k: asked.append(k) or real_compile(*a, **k))
    explicit = embed_cells(tiny_model, cells[:4], precision="int8", backend="openvino", progress=False)
    assert asked == [{"seven_bit_weights": True, "int8_float": "fp32"}]
    assert explicit.modes[0].calibration == "first cells (4)"


@pytest.mark.parametrize("cpu", [VNNI_CPU, BF16_CPU], ids=["avx512-vnni", "avx512-bf16"])
def test_auto_int8_is_made_for_the_cpu(tiny_model, tmp_path, monkeypatch, cpu):
    """A passing check (cosine injected): int8 is used, with 8-bit weights (VNNI) and its other ops in bf16 only
    where bf16 is native; the capability is recorded with the mode."""
    from locscope.pipelines import embed_runtime

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(embed_runtime, "cpu_capability", lambda: cpu)
    monkeypatch.setattr(embed_runtime, "_min_cosine", lambda a, b: 0.9995)
    made = []
    real_convert = embed_runtime.convert_openvino

    def convert(model, images, precision, seven_bit_weights=False):
        made.append((precision, seven_bit_weights))
        return real_convert(model, images, precision, seven_bit_weights=seven_bit_weights)

    monkeypatch.setattr(embed_runtime, "convert_openvino", convert)
    compiled = compile_in_fp32(monkeypatch)
    result = embed_cells(tiny_model, random_cells(80), batch_size=16, progress=False)
    (mode,) = result.modes
    assert (mode.backend, mode.precision, mode.reason, mode.verified_min_cosine) == (
        "openvino", "int8", "auto: int8 verified", 0.9995)
    assert mode.cpu == cpu.to_dict()
    assert made == [("int8", not cpu.vnni)]
    assert compiled == [("int8", "bf16" if cpu.native_bf16 else "fp32")]
    # the weight bits are part of the cache key: a CPU with the other bit width does not reuse this model
    key = embed_runtime.int8_cache_key(tiny_model, (32, 32), 64, seven_bit_weights=not cpu.vnni)
    assert _cache_entries() == [key]
    assert embed_runtime.int8_cache_key(tiny_model, (32, 32), 64, seven_bit_weights=cpu.vnni) != key


def test_runtime_choice_per_capability():
    from locscope.pipelines.embed_runtime import RuntimeChoice, runtime_choice

    assert runtime_choice("cpu", AVX2_CPU) == RuntimeChoice("fp32", "bf16 emulated on this CPU", True, "fp32", False)
    assert runtime_choice("cpu", VNNI_CPU) == RuntimeChoice("fp32", "bf16 emulated on this CPU", False, "fp32", True)
    assert runtime_choice("cpu", BF16_CPU) == RuntimeChoice("bf16", "bf16 native on this CPU", False, "bf16", True)
    assert runtime_choice("cuda", None).fallback == "bf16"


def test_cpu_capability_detection(monkeypatch):
    """Flags from /proc/cpuinfo (injected), capped by torch's kernel level and by ONEDNN_MAX_CPU_ISA."""
    from locscope.utils import cpu as cpu_module

    zen4 = {"fpu", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    monkeypatch.setattr(cpu_module, "_cpuinfo", lambda: ("AMD EPYC 9R14", zen4))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    for isa, bf16, vnni in (("AVX512", True, True), ("AVX2", False, False), ("DEFAULT", False, False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda isa=isa: isa)
        found = cpu_module.detect_cpu_capability()
        assert (found.model, found.isa, found.native_bf16, found.vnni) == ("AMD EPYC 9R14", isa, bf16, vnni)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for limit, bf16, vnni in (("avx512_core_vnni", False, True), ("AVX2", False, False), ("ALL", True, True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        found = cpu_module.detect_cpu_capability()
        assert (found.native_bf16, found.vnni) == (bf16, vnni), limit
    # an AMX CPU (Sapphire Rapids): native bf16 and VNNI through AMX alone, and still without AMX under a oneDNN cap
    monkeypatch.setattr(cpu_module, "_cpuinfo", lambda: ("Intel Xeon Platinum 8488C", {"avx2", "avx512f", "amx_bf16",
                                                                                        "amx_int8", "amx_tile"}))
    found = cpu_module.detect_cpu_capability()
    assert (found.native_bf16, found.vnni, found.flags) == (True, True, ("amx_bf16", "amx_int8"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert not cpu_module.detect_cpu_capability().native_bf16
    # an AVX2 CPU with AVX-VNNI (Alder Lake): VNNI at AVX2 level, no native bf16
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(cpu_module, "_cpuinfo", lambda: ("Intel Core i7-12700", {"avx2", "avx_vnni"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    found = cpu_module.detect_cpu_capability()
    assert (found.native_bf16, found.vnni, found.flags) == (False, True, ("avx_vnni",))
    assert found.describe().startswith("Intel Core i7-12700, torch AVX2 kernels, bf16 emulated, VNNI, ")
    # no /proc/cpuinfo (macOS, Windows): torch's own checks
    monkeypatch.setattr(cpu_module, "_cpuinfo", lambda: None)
    monkeypatch.setattr(cpu_module, "_torch_flags", lambda: {"avx512_vnni"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    found = cpu_module.detect_cpu_capability()
    assert (found.native_bf16, found.vnni) == (False, True) and found.model


def test_auto_recalibrates_a_cached_model_that_fails(tiny_model, tmp_path, monkeypatch, int8_check_passes):
    from locscope.models.subcell import convert_openvino, min_max_normalize
    from locscope.pipelines import embed_runtime

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    cells = random_cells(80)
    key = embed_runtime.int8_cache_key(tiny_model, (32, 32), 64)
    # a cached model calibrated on cells unlike these (dim, flat): its ranges clip this run's activations
    dim = min_max_normalize(torch.from_numpy(np.stack([c.images for c in random_cells(16, seed=5)]))) * 0.05
    embed_runtime.write_cached_int8(key, convert_openvino(tiny_model, dim, "int8"))
    calls = []
    real_min_cosine = embed_runtime._min_cosine

    def first_fails(a, b):  # whatever the stale model scores, count it as a failure
        calls.append(real_min_cosine(a, b))
        return 0.5 if len(calls) == 1 else calls[-1]

    monkeypatch.setattr(embed_runtime, "_min_cosine", first_fails)
    result = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    assert len(calls) == 2 and result.modes[0].calibration == "this run (64 cells)"
    assert result.modes[0].verified_min_cosine >= 0.99
    # the recalibrated model replaced the stale one in the cache
    monkeypatch.setattr(embed_runtime, "_min_cosine", real_min_cosine)
    again = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    assert again.modes[0].calibration == "cache"
    np.testing.assert_array_equal(again.embeddings, result.embeddings)


def test_auto_ignores_an_unreadable_cache(tiny_model, tmp_path, monkeypatch, int8_check_passes):
    from locscope.pipelines import embed_runtime

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    key = embed_runtime.int8_cache_key(tiny_model, (32, 32), 64)
    folder = tmp_path / "cache" / "openvino" / key
    cells = random_cells(80)
    first = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    assert first.modes[0].calibration == "this run (64 cells)" and (folder / "manifest.json").exists()
    bin_size = (folder / "vit.bin").stat().st_size
    with open(folder / "vit.bin", "r+b") as handle:  # a damaged weights file: caught by the digest, recalibrated
        handle.truncate(bin_size // 2)
    again = embed_cells(tiny_model, cells, batch_size=16, progress=False)
    assert again.modes[0].calibration == "this run (64 cells)"
    assert (folder / "vit.bin").stat().st_size == bin_size  # rewritten
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    (folder / "manifest.json").unlink()  # no manifest: not trusted either
    assert embed_runtime.read_cached_int8(key) is None


def test_embed_cli_reports_the_mode(tmp_path, tiny_model, monkeypatch, int8_check_passes):
    import json

    import anndata
    import tifffile

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = save_pretrained(tiny_model, tiny_model.config, tmp_path / "model")
    rows = ["r_image,y_image,b_image,g_image,output_prefix"]
    for cell in random_cells(80):
        paths = []
        for channel, plane in zip("rybg", cell.images):
            paths.append(tmp_path / f"{cell.id}_{channel}.tif")
            tifffile.imwrite(paths[-1], plane)
        rows.append(",".join([*map(str, paths), cell.id]))
    (tmp_path / "cells.csv").write_text("\n".join(rows) + "\n")
    from typer.testing import CliRunner

    from locscope.cli import app

    out = CliRunner().invoke(app, ["embed", "--csv", str(tmp_path / "cells.csv"), "-o", str(tmp_path / "out"),
                                   "--model", str(model_dir), "--image-size", "0"])
    assert out.exit_code == 0, out.output
    # a CSV run calibrates on cells spread over the whole list, not on its first 72
    assert ("inference: 32x32 cells: openvino int8, int8 calibration: this run (64 cells spread over the input), "
            "verified on 8 cells") in out.output
    modes = json.loads(anndata.read_h5ad(tmp_path / "out" / "embeddings.h5ad").uns["inference"])
    assert [(m["backend"], m["precision"], m["cells"]) for m in modes] == [("openvino", "int8", 80)]
    assert modes[0]["cpu"] == VNNI_CPU.to_dict()  # the capability the mode was chosen for
    assert "inference CPU: test AVX512-VNNI CPU, torch AVX512 kernels, bf16 emulated, VNNI, 1 thread" in out.output
    assert CpuCapability.from_dict(modes[0]["cpu"]) == VNNI_CPU


def real_cells(shared_data, channels: str) -> list[CellInput]:
    """16 real crops (CELL-Diff HPA + OpenCell samples, PROTICELLI landmark stacks, the RELA cell), each in its 8
    rotations / flips: 128 cells, channels absent from a file passed as zeros."""
    from locscope.io.images import read_celldiff_sample, read_image
    from locscope.pipelines.embed import stack_cell

    samples = shared_data / "celldiff_samples"
    landmarks = shared_data / "proticelli_landmarks"
    records = [read_celldiff_sample(folder) for kind in ("hpa", "opencell")
               for folder in sorted((samples / kind).iterdir())]
    records += [read_image(landmarks / "example_cell_reference_input" / f"cell_{i}.tiff") for i in (0, 1)]
    records += [read_image(landmarks / "RELA_A-431" / "cell_9.tiff",
                           channel_order=["microtubules", "protein", "nucleus", "er"])]
    crops = []
    for record in records:
        planes = {name: np.asarray(plane, dtype=np.float32) for name, plane in record.channels.items()}
        side = min(plane.shape[0] for plane in planes.values()), min(plane.shape[1] for plane in planes.values())
        planes = {name: plane[:min(side), :min(side)] for name, plane in planes.items()}  # square: rotations keep size
        crops.append(stack_cell(planes, channels, str(record.path)))
    cells = []
    for k in range(8):
        for i, crop in enumerate(crops):
            turned = np.rot90(crop, k % 4, axes=(1, 2))
            cells.append(CellInput(f"crop{i}_t{k}", np.ascontiguousarray(turned[:, ::-1] if k >= 4 else turned)))
    return cells


def test_default_on_real_cells_stays_close_to_fp32(shared_data, tmp_path, monkeypatch):
    """The bundled subcell-tiny on 128 real cells, on the real kernels of the machine the test runs on: the default
    (verified int8, or this CPU's fallback precision if the check fails) keeps every embedding within cosine 0.998 of
    fp32 and the top class of >= 95% of the cells."""
    from locscope.pipelines.embed import load_model
    from locscope.pipelines.embed_runtime import cpu_capability, runtime_choice

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    model = load_model(None, device="cpu")
    cells = real_cells(shared_data, model.config.channels)
    assert len(cells) == 128
    fp32 = embed_cells(model, cells, batch_size=16, precision="fp32", image_size=64, progress=False)
    default = embed_cells(model, cells, batch_size=16, image_size=64, progress=False)
    (mode,) = default.modes
    assert (mode.backend, mode.precision) in {("openvino", "int8"),
                                              ("torch", runtime_choice("cpu", cpu_capability()).fallback)}
    if mode.precision == "int8":
        assert mode.verified_min_cosine >= 0.999
    cosine = _cosine(default.embeddings, fp32.embeddings)
    top_same = (default.probabilities.argmax(1) == fp32.probabilities.argmax(1)).mean()
    print(f"{mode.describe()}; all 128 cells: min cosine {cosine.min():.5f}, mean {cosine.mean():.5f}, "
          f"top-1 agreement {top_same:.3f}, max |dp| {np.abs(default.probabilities - fp32.probabilities).max():.4f}")
    assert cosine.min() >= 0.998
    assert top_same >= 0.95


def test_cache_command_and_flags(tmp_path, tiny_model, monkeypatch, int8_check_passes):
    import tifffile
    from typer.testing import CliRunner

    from locscope.cli import app

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = save_pretrained(tiny_model, tiny_model.config, tmp_path / "model")
    paths = []
    for cell in random_cells(40):
        paths.append(tmp_path / f"{cell.id}.tif")
        tifffile.imwrite(paths[-1], cell.images)
    args = ["classify", *map(str, paths), "--model", str(model_dir), "--channel-order",
            "microtubules,er,nucleus,protein", "--image-size", "0"]
    runner = CliRunner()
    # 40 cells: 32 calibrate + 8 check; --no-cache writes nothing
    out = runner.invoke(app, [*args, "--calibration-cells", "32", "--no-cache"])
    assert out.exit_code == 0, out.output
    assert len(out.stdout.strip().splitlines()) == 40
    assert runner.invoke(app, ["cache"]).stdout.startswith("0 cached int8 model(s)")
    assert runner.invoke(app, [*args, "--calibration-cells", "32"]).exit_code == 0
    listing = runner.invoke(app, ["cache"]).stdout.strip().splitlines()
    assert listing[0].startswith("1 cached int8 model(s)")
    assert "\t32x32 rybg\tViT 2 x 64\tcalibrated on 32 cells, checked at cosine 0.99" in listing[1]
    cleared = runner.invoke(app, ["cache", "--clear"])
    assert cleared.exit_code == 0 and cleared.stdout.startswith("removed ")
    assert runner.invoke(app, ["cache"]).stdout.startswith("0 cached int8 model(s)")



def test_calibration_cells_must_be_positive(tmp_path, tiny_model, capsys):
    import tifffile

    model_dir = save_pretrained(tiny_model, tiny_model.config, tmp_path / "model")
    tifffile.imwrite(tmp_path / "cell.tif", random_cells(1)[0].images)
    with pytest.raises(SystemExit) as info:
        main(["classify", str(tmp_path / "cell.tif"), "--model", str(model_dir), "--calibration-cells", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --calibration-cells must be at least 1; got 0"


def test_openvino_runs_write_no_telemetry_files(tmp_path):
    """OpenVINO's converter and NNCF write a client id under ~/intel and report usage unless declined; locscope
    declines (a fresh process, HOME pointed at an empty folder, not in CI)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_subcell_fast import TINY, random_cells\n"
        "from locscope.models.subcell import SubCellConfig, SubCellModel\n"
        "from locscope.pipelines.embed import embed_cells\n"
        "torch.manual_seed(0)\n"
        "result = embed_cells(SubCellModel(SubCellConfig(**TINY)).eval(), random_cells(80), progress=False)\n"
        "print(result.modes[0].backend, result.modes[0].precision)\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), LOCSCOPE_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() in (["openvino", "int8"], ["torch", "fp32"], ["torch", "bf16"])  # any CPU's choice
    assert sorted(p.name for p in home.iterdir()) == []


def test_cache_root_resolution(monkeypatch, tmp_path):
    from pathlib import Path

    from locscope.pipelines.embed_runtime import cache_root

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("LOCSCOPE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "locscope"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "locscope"

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert cache_root().name == "locscope-cache"


def test_calibration_sample_spread_over_the_input(tiny_model, tmp_path, monkeypatch, int8_check_passes):
    from locscope.models.subcell import min_max_normalize
    from locscope.pipelines import embed_runtime
    from locscope.pipelines.embed import spread_indices

    assert spread_indices(200, 72)[:3] == [0, 3, 6] and spread_indices(200, 72)[-1] == 199
    assert len(spread_indices(200, 72)) == 72 and spread_indices(5, 72) == [0, 1, 2, 3, 4] and spread_indices(0, 3) == []
    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    cells = random_cells(200)
    calibrated = []
    real_convert = embed_runtime.convert_openvino

    def spy(model, images, precision, **options):
        calibrated.append(images.clone())
        return real_convert(model, images, precision, **options)

    monkeypatch.setattr(embed_runtime, "convert_openvino", spy)
    asked = []

    def sample(n):
        asked.append(n)
        return [cells[i] for i in spread_indices(len(cells), n)]

    result = embed_cells(tiny_model, cells, batch_size=16, progress=False, calibration_sample=sample)
    assert asked == [72] and result.ids == [c.id for c in cells]
    assert result.modes[0].calibration == "this run (64 cells spread over the input)"
    chosen = [cells[i] for i in spread_indices(200, 72)]
    expected = min_max_normalize(torch.from_numpy(np.stack([c.images for c in chosen])))
    keep = torch.ones(72, dtype=torch.bool)
    keep[8::9] = False  # the 8 check cells
    torch.testing.assert_close(calibrated[0], expected[keep])
    # explicit modes never ask for the sample; a short sample falls back to the first cells
    embed_cells(tiny_model, cells[:20], precision="bf16", progress=False, calibration_sample=sample)
    assert asked == [72]
    short = embed_cells(tiny_model, cells, progress=False, use_cache=False, calibration_sample=lambda n: cells[:10])
    assert short.modes[0].calibration == "this run (64 cells)"
