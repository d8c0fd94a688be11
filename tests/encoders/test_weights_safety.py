"""Checkpoints: non-finite weights refused at load time; pickles that hold more than tensors refused in one line that
says which formats are accepted (never PyTorch's advice to load with weights_only=False)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from locscope.errors import CheckpointError, InputError
from locscope.utils.checkpoint import read_torch_weights

from conftest import error_line
from support import tiny_esm2_config


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_nan_weights_are_refused_at_load(tmp_path, cli):
    from locscope.models.celldiff import CellDiff, celldiff_tiny_config

    torch.manual_seed(0)
    CellDiff(celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32, transformer_layers=1,
                                  sequence_dim=16, sequence_layers=1)).save_pretrained(tmp_path / "model")
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))
    key = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 3)
    weights[key] = weights[key].clone()
    weights[key].view(-1)[:3] = torch.tensor([float("nan"), float("inf"), 1.0])
    save_file(weights, str(tmp_path / "model" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"tensor '{key}' holds 2 NaN / Inf value\(s\)"):
        read_torch_weights(tmp_path / "model" / "model.safetensors")
    code, _, err = cli(["generate", "--sequence", "MPKKKRKV", "--model", tmp_path / "model", "--landmarks",
                     tmp_path / "none.png", "--out", tmp_path / "out"])
    assert code == 2 and "refusing non-finite weights" in error_line(err)
    torch.save({"w": torch.tensor([1.0, float("-inf")])}, tmp_path / "inf.pth")
    with pytest.raises(CheckpointError, match="inf.pth: tensor 'w' holds 1 NaN / Inf"):
        read_torch_weights(tmp_path / "inf.pth")


def test_unsafe_pickle_refusal_names_accepted_formats(tmp_path):
    torch.save({"w": torch.zeros(1), "payload": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(InputError) as info:
        read_torch_weights(tmp_path / "evil.pth")
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" not in message and "likely succeed" not in message
    assert message.startswith(f"{tmp_path / 'evil.pth'}: refusing to unpickle it")
    assert "system" in message and "safetensors" in message


def test_unsafe_esm_pickle_is_one_line(tmp_path):
    from locscope.encoders.protein import Esm2ProteinEncoder

    tiny_esm2_config().save_pretrained(tmp_path / "esm")
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(33, 16), "payload": Exploit()},
               tmp_path / "esm" / "pytorch_model.bin")
    with pytest.raises(InputError) as info:
        Esm2ProteinEncoder(tmp_path / "esm")
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert "refusing to unpickle it" in message and "safetensors" in message
