import dataclasses

import pytest
import torch

from locscope.errors import CheckpointError, InputError
from locscope.utils.checkpoint import load_weights_into, read_config, read_torch_weights, save_pretrained


@dataclasses.dataclass
class TinyConfig:
    width: int = 3
    sizes: tuple = (1, 2)


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    save_pretrained(model, TinyConfig(), tmp_path)
    config = read_config(tmp_path, TinyConfig)
    assert config == TinyConfig()
    other = torch.nn.Linear(config.width, 2)
    load_weights_into(other, tmp_path)
    assert torch.equal(other.weight, model.weight)


def test_strict_errors_list_keys(tmp_path):
    save_pretrained(torch.nn.Linear(3, 2), TinyConfig(), tmp_path)
    with pytest.raises(CheckpointError, match=r"misshaped keys: weight \(2, 3\) vs model \(2, 4\)"):
        load_weights_into(torch.nn.Linear(4, 2), tmp_path)
    with pytest.raises(CheckpointError, match=r"missing keys: 0.bias, 0.weight; unexpected keys: bias, weight"):
        load_weights_into(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp_path)


def test_rejects_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": TinyConfig()}, path)
    with pytest.raises(InputError, match="evil.pth"):
        read_torch_weights(path)
