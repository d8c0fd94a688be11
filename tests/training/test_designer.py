"""The sequence designer: model, persistence, decoding, training with exact resume, and the bundled designer-tiny."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locscope.encoders.protein import MASK_ID, RESIDUE_IDS, UNKNOWN_ID, VOCAB, tokenize
from locscope.models.designer import DesignerConfig, SequenceDesigner, designer_logits_fn

TINY = dict(width=16, layers=1, heads=2, terminus_buckets=4)


def tiny_designer(seed: int = 0) -> SequenceDesigner:
    torch.manual_seed(seed)
    return SequenceDesigner(DesignerConfig(**TINY)).eval()


def test_forward_is_conditioned_and_only_predicts_residues():
    model = tiny_designer()
    tokens, _ = tokenize(["MKV<mask:5>LLE", "MA<mask:3>"])
    classes = len(model.config.fraction_classes)
    nucleus, mito = torch.eye(classes)[:1].repeat(2, 1), torch.eye(classes)[[14]].repeat(2, 1)
    logits = model(tokens, nucleus)
    assert logits.shape == (2, tokens.shape[1], len(VOCAB))
    allowed = torch.zeros(len(VOCAB), dtype=torch.bool)
    allowed[list(RESIDUE_IDS)] = True
    allowed[UNKNOWN_ID] = False
    assert (logits[..., ~allowed] <= -1e4).all() and (logits[..., allowed] > -1e3).all()
    assert not torch.allclose(logits, model(tokens, mito))  # the condition reaches every position
    dropped = model(tokens, nucleus, torch.tensor([True, True]))
    assert torch.allclose(dropped, model(tokens, None))  # a dropped condition is the unconditional model
    # padding never changes a sequence's logits
    alone = model(tokens[1:, :5], nucleus[:1])
    assert torch.allclose(alone, logits[1:, :5], atol=1e-5)


def test_guided_logits_extrapolate_from_the_unconditional_model():
    model = tiny_designer()
    tokens, _ = tokenize(["MK<mask:4>"])
    fractions = torch.eye(len(model.config.fraction_classes))[:1]
    plain = designer_logits_fn(model, fractions)(tokens)
    guided = designer_logits_fn(model, fractions, guidance=2.0)(tokens)
    unconditional = model(tokens, None)
    assert torch.allclose(guided, unconditional + 2.0 * (plain - unconditional), atol=1e-4)


def test_round_trip_and_strict_loading(tmp_path):
    from safetensors.torch import load_file, save_file

    from locscope.errors import CheckpointError

    model = tiny_designer()
    model.save_pretrained(tmp_path / "m")
    loaded = SequenceDesigner.from_pretrained(tmp_path / "m")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    weights.pop("head.bias")
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys: head\.bias.*unexpected keys: extra\.weight"):
        SequenceDesigner.from_pretrained(tmp_path / "m")


def test_config_validation():
    with pytest.raises(ValueError, match="local_kernel"):
        DesignerConfig(local_kernel=4)
    with pytest.raises(ValueError, match="divisible"):
        DesignerConfig(width=30, heads=4)


def test_simulated_batches_are_a_function_of_the_step():
    from locscope.synth.grammar import localize_sequence
    from locscope.training.designer_module import DesignerTrainConfig, StepBatches

    config = DesignerTrainConfig(batch_size=6, min_length=80, max_length=120)
    classes = DesignerConfig().fraction_classes
    first, again = StepBatches(config, classes, 10, 5)[2], StepBatches(config, classes, 12, 5)[0]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    tokens, lengths, fractions, motifs, infill = first
    assert not infill.any()  # no template-infill rows unless asked for
    assert torch.allclose(fractions.sum(1), torch.ones(6))
    assert motifs.any(1).sum() >= 4 and not (motifs & (tokens == 0)).any()  # most proteins carry a motif
    sequence = "".join(VOCAB[t] for t in tokens[0, : lengths[0]].tolist())
    call = localize_sequence(sequence).compartments
    assert {classes[i] for i in torch.nonzero(fractions[0]).flatten().tolist()} == set(call)


def test_terminal_infill_moves_the_signal_to_a_terminus_and_masks_its_window():
    from locscope.synth.grammar import localize_sequence
    from locscope.training.designer_module import DesignerTrainConfig, StepBatches, terminal_infill

    rng = np.random.default_rng(0)
    background = "A" * 40
    nls = background + "PKKKRKV" + background  # an NLS in the middle -> moved to the C-terminus
    moved, start, end = terminal_infill(nls, [("nls", 40, 47)], rng, extra=0)
    assert moved == background * 2 + "PKKKRKV" and (start, end) == (80, 87)
    pts1 = background + "SKL"  # already C-terminal: kept, window over it plus up to 3 residues before
    same, start, end = terminal_infill(pts1, [("pts1", 40, 43)], np.random.default_rng(1), extra=3)
    assert same == pts1 and end == 43 and 37 <= start <= 40
    presequence = "MLSRAVRRLSRF" + background  # N-terminal: the window starts after the initiator methionine
    same, start, end = terminal_infill(presequence, [("mito-presequence", 0, 12)], rng, extra=0)
    assert same == presequence and (start, end) == (1, 12)
    assert localize_sequence(moved).compartments == localize_sequence(nls).compartments
    tm = background + "L" * 20 + background  # a membrane helix stays where it is: no infill row
    assert terminal_infill(tm, [("tm-helix", 40, 60)], rng, extra=2) is None

    config = DesignerTrainConfig(batch_size=8, min_length=80, max_length=120, terminal_infill_probability=1.0)
    tokens, lengths, fractions, motifs, infill = StepBatches(config, DesignerConfig().fraction_classes, 0, 1)[0]
    rows = infill.any(1)
    assert rows.sum() >= 3  # proteins with a terminal or soluble motif practise infill (4 of these 8)
    for row in torch.nonzero(rows).flatten().tolist():
        window = torch.nonzero(infill[row]).flatten()
        assert window.max() - window.min() + 1 == len(window)  # one run
        assert window.min() <= 1 or window.max() == lengths[row] - 1  # at a terminus


def test_infill_rows_mask_their_window_alone():
    from locscope.training.designer_module import DesignerModule

    module = DesignerModule(DesignerConfig(**TINY), _config(), "/tmp/unused")
    tokens = torch.randint(2, 22, (2, 30))
    lengths = torch.tensor([30, 30])
    infill = torch.zeros(2, 30, dtype=torch.bool)
    infill[0, 20:30] = True
    seen = []
    forward = module.model.forward

    def spy(masked_tokens, *args, **kwargs):
        seen.append(masked_tokens == MASK_ID)
        return forward(masked_tokens, *args, **kwargs)

    module.model.forward = spy
    fractions = torch.full((2, len(module.model_config.fraction_classes)), 1 / len(module.model_config.fraction_classes))
    module.loss(tokens, lengths, fractions, torch.zeros(2, 30, dtype=torch.bool), infill, torch.Generator().manual_seed(0),
                0.0, 0.0)
    assert torch.equal(seen[0][0], infill[0]) and seen[0][1].any()  # row 0: the window; row 1: random residues


def test_init_from_starts_a_run_from_a_model(tmp_path):
    from locscope.training.designer_module import train_designer

    first = train_designer(tmp_path / "first", _config(max_steps=3), progress=False)
    second = train_designer(tmp_path / "second", _config(max_steps=3, init_from=str(first), learning_rate=1e-12,
                                                         terminal_infill_probability=0.5), progress=False)
    fresh = train_designer(tmp_path / "fresh", _config(max_steps=3, learning_rate=1e-12), progress=False)
    a, b, c = (SequenceDesigner.from_pretrained(p).state_dict() for p in (first, second, fresh))
    assert all(torch.allclose(a[k], b[k], atol=1e-8) for k in a)  # started from the first run's weights
    assert not all(torch.allclose(a[k], c[k], atol=1e-8) for k in a)
    record = json.loads((tmp_path / "second" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["init_from"] == str(first) and record["initialised_tensors"] == []


def _config(**overrides):
    from locscope.training.designer_module import DesignerTrainConfig

    return DesignerTrainConfig(**{**dict(model_overrides=TINY, batch_size=4, min_length=80, max_length=96,
                                         max_steps=6, steps_per_epoch=3, log_every_steps=3, val_proteins=4,
                                         val_designs_per_target=1, val_length=80, warmup_steps=2), **overrides})


def test_training_resumes_exactly(tmp_path):
    from locscope.errors import InputError
    from locscope.training.designer_module import train_designer

    straight = train_designer(tmp_path / "straight", _config(), progress=False)
    train_designer(tmp_path / "resumed", _config(max_steps=3), progress=False)
    # a killed run: the saved config asks for 6 steps, the checkpoint holds step 3
    saved = json.loads((tmp_path / "resumed" / "train_config.json").read_text())
    (tmp_path / "resumed" / "train_config.json").write_text(json.dumps({**saved, "max_steps": 6}))
    resumed = train_designer(tmp_path / "resumed", resume=True, progress=False)
    a, b = SequenceDesigner.from_pretrained(straight), SequenceDesigner.from_pretrained(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    metrics = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "val_design_right" in m] == [3, 6]
    with pytest.raises(InputError, match="already holds a run"):
        train_designer(tmp_path / "straight", _config(), progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train_designer(tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(InputError, match="multiple of steps_per_epoch"):
        train_designer(tmp_path / "bad", _config(max_steps=5), progress=False)


def test_train_designer_cli(tmp_path):
    from test_design_support import cli_run

    config = tmp_path / "designer.yaml"
    config.write_text("max_steps: 2\nsteps_per_epoch: 2\nbatch_size: 2\nmin_length: 80\nmax_length: 90\n"
                      "val_proteins: 2\nval_designs_per_target: 1\nval_length: 80\nwarmup_steps: 1\n"
                      "model_overrides: {width: 16, layers: 1, heads: 2}\n")
    assert cli_run(["train", "designer", "--out", str(tmp_path / "run"), "--config", str(config)]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    config.write_text("max_step: 2\n")
    assert cli_run(["train", "designer", "--out", str(tmp_path / "run2"), "--config", str(config)]) == 2


def test_bundled_designer_writes_the_target_motifs():
    """designer-tiny, parallel decoder, 16 passes: whole 100-residue designs read back by the motif grammar."""
    from locscope.diffusion.masked_decoding import decode_parallel
    from locscope.encoders.protein import decode_tokens
    from locscope.pipelines.design import load_designer, target_fractions
    from locscope.synth.grammar import localize_sequence

    model = load_designer()
    targets = ["nucleoplasm", "mitochondria", "endoplasmic-reticulum", "plasma-membrane"]
    fractions = torch.from_numpy(np.stack([target_fractions(t, model.config.fraction_classes)
                                           for t in targets for _ in range(8)])).float()
    tokens = torch.full((len(fractions), 100), MASK_ID)
    designed = decode_parallel(designer_logits_fn(model, fractions), tokens, MASK_ID,
                               generator=torch.Generator().manual_seed(0))
    calls = [localize_sequence(decode_tokens(row)).compartments for row in designed.tokens]
    right = [max(call, key=call.get) == target for call, target in zip(calls, [t for t in targets for _ in range(8)])]
    assert designed.passes == 16 and np.mean(right) >= BUNDLED_DESIGN_RIGHT, (np.mean(right), calls)


def test_bundled_designer_writes_a_signal_into_a_masked_terminus_of_egfp():
    """design's template infill: EGFP + <mask:10>, conditioned on the nucleoplasm and the nucleoli, read back by the
    motif grammar (the weights before the infill stage wrote neither signal: 0 of 48 each, docs/benchmarks.md)."""
    from locscope.diffusion.masked_decoding import decode_parallel
    from locscope.encoders.protein import decode_tokens, encode_sequence
    from locscope.pipelines.design import load_designer, target_fractions
    from locscope.data.signals import EGFP as egfp
    from locscope.synth.grammar import localize_sequence

    model = load_designer()
    template = torch.tensor(encode_sequence(egfp) + [MASK_ID] * 10)
    right = {}
    for target in ("nucleoplasm", "nucleoli"):
        fractions = torch.from_numpy(target_fractions(target, model.config.fraction_classes)).float()
        designed = decode_parallel(designer_logits_fn(model, fractions[None].repeat(16, 1)), template[None].repeat(16, 1),
                                   MASK_ID, passes=10, generator=torch.Generator().manual_seed(0))
        calls = [localize_sequence(decode_tokens(row)).compartments for row in designed.tokens]
        right[target] = np.mean([max(call, key=call.get) == target for call in calls])
        assert all(decode_tokens(row).startswith(egfp) for row in designed.tokens)
    assert right["nucleoplasm"] + right["nucleoli"] >= BUNDLED_INFILL_RIGHT, right


#: Share of right designs required of designer-tiny above (measured value in docs/models/designer-tiny.md).
BUNDLED_DESIGN_RIGHT = 0.45  # chance: ~0.05 over the grammar's 21 targets
#: Summed share of right EGFP infills required above (measured: see the test's failure message / the model card).
BUNDLED_INFILL_RIGHT = 0.75
