"""Protein tokenizer, biology-informed features, the built-in encoder and the ESM2 path (tiny random config)."""

from __future__ import annotations

import pytest
import torch

from locscope.encoders.protein import (
    MASK_ID, NUM_SEQUENCE_FEATURES, PAD_ID, BuiltinProteinEncoder, Esm2ProteinEncoder, build_protein_encoder,
    crop_termini, decode_tokens, encode_sequence, sequence_features, tokenize,
)
from locscope.errors import InputError
from support import save_tiny_esm2


def test_tokenize_roundtrip_masks_and_errors():
    assert decode_tokens(encode_sequence("mkv<mask:3>AX<mask>B")) == "MKV<mask><mask><mask>AX<mask>X"
    assert encode_sequence("M<mask:2>")[1:] == [MASK_ID, MASK_ID]
    tokens, lengths = tokenize(["MKV", "MA"])
    assert tokens.tolist()[1][-1] == PAD_ID and lengths.tolist() == [3, 2]
    with pytest.raises(InputError, match="position 3: invalid residue '1'"):
        encode_sequence("MK1V")
    assert crop_termini(list(range(10)), 4) == [0, 1, 8, 9]


def test_sequence_features_read_biology():
    signal = "M" + "LLLLVVALLLAAILLG" + "S" * 40 + "KDEL"  # hydrophobic N-terminus, acidic C-terminus
    nls = "M" + "S" * 40 + "PKKKRKV" + "S" * 20 + "RRKKR"
    feats = sequence_features(tokenize([signal, nls])[0])
    assert feats.shape == (2, NUM_SEQUENCE_FEATURES)
    n_hydropathy, c_charge = 21, 21 + 5 + 1
    assert feats[0, n_hydropathy] > 0.2 > 0.0 > feats[1, n_hydropathy]  # N-terminal mean hydropathy / 4.5
    assert feats[1, c_charge] > 0 > feats[0, c_charge]  # C-terminal net charge
    assert feats[0, :20].sum().item() == pytest.approx(1.0, abs=1e-6)  # composition sums to 1


def test_builtin_encoder_shapes_padding_and_termini():
    torch.manual_seed(0)
    encoder = BuiltinProteinEncoder(dim=16, num_layers=2).eval()
    tokens, _ = tokenize(["MKKRKVLS", "MLS"])
    out = encoder(tokens)
    assert out.residues.shape == (2, 8, 16) and out.mask.tolist()[1] == [True] * 3 + [False] * 5
    assert out.residues[1, 3:].abs().max().item() == 0.0  # padding stays zero
    alone = encoder(tokenize(["MLS"])[0]).residues
    assert torch.allclose(alone[0], out.residues[1, :3], atol=1e-5)  # padding does not leak into residues
    # the same residue at the same N-distance but another C-distance is embedded differently
    a, b = encoder(tokenize(["MKV"])[0]).residues, encoder(tokenize(["MKVAAAA"])[0]).residues
    assert not torch.allclose(a[0, 0], b[0, 0])


def test_esm2_path_with_a_tiny_random_checkpoint(tmp_path):
    save_tiny_esm2(tmp_path / "esm")
    encoder = build_protein_encoder("esm2", esm_path=str(tmp_path / "esm"), cache_dir=str(tmp_path / "cache"))
    assert isinstance(encoder, Esm2ProteinEncoder) and encoder.dim == 16
    tokens, _ = tokenize(["MKKRKV", "MLS"])
    out = encoder(tokens)
    assert out.residues.shape == (2, 6, 16)
    assert out.residues[1, 3:].abs().max().item() == 0.0
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # per-residue cache on disk
    again = Esm2ProteinEncoder(tmp_path / "esm", cache_dir=tmp_path / "cache")(tokens)
    assert torch.allclose(again.residues, out.residues)
    assert not any(p.requires_grad for p in encoder.esm.parameters())  # frozen by default
    tuned = Esm2ProteinEncoder(tmp_path / "esm", finetune=True)
    tuned(tokens).residues.sum().backward()
    assert tuned.esm.embeddings.word_embeddings.weight.grad is not None
    with pytest.raises(InputError, match="not an ESM2 model directory"):
        Esm2ProteinEncoder(tmp_path / "nowhere")
