"""Masked-residue decoders: the one-per-pass reference and the parallel MaskGIT-style decoder."""

from __future__ import annotations

import pytest
import torch

from locscope.diffusion.masked_decoding import (
    cell_diff_logits_fn, cosine_schedule, decode_one_per_pass, decode_parallel, sampling_probabilities,
)
from locscope.encoders.protein import AMINO_ACIDS, MASK_ID, PAD_ID, VOCAB, encode_sequence
from test_design_support import tiny_celldiff  # noqa: F401  (fixture)

V = len(VOCAB)
A, K = VOCAB.index("A"), VOCAB.index("K")


def toy_logits(tokens: torch.Tensor) -> torch.Tensor:
    """Prefers K after a revealed K and A otherwise; pad/mask/X suppressed."""
    logits = torch.zeros(*tokens.shape, V)
    logits[..., [PAD_ID, MASK_ID, VOCAB.index("X")]] = -1e4
    prev_is_k = torch.zeros(tokens.shape, dtype=torch.bool)
    prev_is_k[:, 1:] = tokens[:, :-1] == K
    logits[..., A] += 3.0
    logits[..., K] += torch.where(prev_is_k, 6.0, 0.0)
    return logits


def template(text: str, rows: int = 3) -> torch.Tensor:
    return torch.tensor([encode_sequence(text)] * rows)


@pytest.mark.parametrize("decoder", [decode_one_per_pass, decode_parallel])
def test_decoders_fill_every_mask_and_keep_the_template(decoder):
    tokens = template("MK<mask:9>W<mask:30>DEL")
    out = decoder(toy_logits, tokens, MASK_ID, generator=torch.Generator().manual_seed(0))
    assert not (out.tokens == MASK_ID).any()
    fixed = tokens != MASK_ID
    assert torch.equal(out.tokens[fixed], tokens[fixed])
    filled = out.tokens[~fixed]
    assert set(filled.unique().tolist()) <= {VOCAB.index(a) for a in AMINO_ACIDS}


def test_pass_counts():
    tokens = template("<mask:200>", rows=2)
    reference = decode_one_per_pass(toy_logits, tokens, MASK_ID, generator=torch.Generator().manual_seed(0))
    parallel = decode_parallel(toy_logits, tokens, MASK_ID, generator=torch.Generator().manual_seed(0))
    assert reference.passes == 200
    assert parallel.passes == 16
    assert decode_parallel(toy_logits, template("MA<mask:5>"), MASK_ID, passes=16).passes == 5
    assert decode_parallel(toy_logits, template("<mask:2000>", rows=1), MASK_ID, passes=8).passes == 8


def test_seeded_decoding_is_deterministic_and_seed_dependent():
    tokens = template("<mask:40>", rows=4)
    runs = [decode_parallel(toy_logits, tokens, MASK_ID, temperature=2.0, generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert not torch.equal(runs[0].tokens, runs[2].tokens)


def test_top_k_one_is_greedy_and_confidence_order_matters():
    # greedy: every masked residue becomes A (the toy's favourite) except right after a revealed K
    out = decode_parallel(toy_logits, template("MK<mask:6>"), MASK_ID, top_k=1, choice_temperature=0.0)
    text = "".join(VOCAB[t] for t in out.tokens[0].tolist())
    assert text.startswith("MKK")  # position 2 follows a K: K scores 6 > A's 3
    ref = decode_one_per_pass(toy_logits, template("<mask:12>"), MASK_ID, top_k=1)
    assert set("".join(VOCAB[t] for t in ref.tokens[0].tolist())) == {"A"}


def test_sampling_probabilities_and_schedule():
    probs = sampling_probabilities(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), temperature=0.5, top_k=2)
    assert probs[0, :2].sum() == 0 and torch.isclose(probs.sum(), torch.tensor(1.0))
    assert torch.isclose(probs[0, 3] / probs[0, 2], torch.exp(torch.tensor(2.0)))
    for n, passes in [(0, 16), (5, 16), (100, 16), (2048, 16), (37, 1)]:
        schedule = cosine_schedule(n, passes)
        assert schedule[-1] == 0 and len(schedule) == passes
        assert all(a >= b for a, b in zip([n] + schedule, schedule))
    assert cosine_schedule(10, 4) == [9, 7, 3, 0]
    with pytest.raises(ValueError, match="temperature"):
        decode_parallel(toy_logits, template("<mask:3>"), MASK_ID, temperature=0.0)


def test_cell_diff_logits_fn_writes_amino_acids_only(tiny_celldiff):
    model = tiny_celldiff
    size = model.config.image_size
    fn = cell_diff_logits_fn(model, torch.zeros(2, 1, size, size), torch.zeros(2, 3, size, size))
    tokens = template("M<mask:12>KDEL", rows=2)
    logits = fn(tokens)
    assert logits.shape == (2, tokens.shape[1], V)
    out = decode_parallel(fn, tokens, MASK_ID, passes=4, generator=torch.Generator().manual_seed(0))
    assert out.passes == 4
    assert set(out.tokens.unique().tolist()) <= {VOCAB.index(a) for a in AMINO_ACIDS}
