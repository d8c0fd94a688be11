"""The model hub: bundled names -> family -> loader; a directory's config.json says its family."""

import json

import pytest
import torch

from locscope.errors import InputError
from locscope.models import hub
from locscope.models.celldiff import CellDiff, celldiff_tiny_config


def test_bundled_names_resolve_to_their_families():
    assert hub.bundled_names() == ["celldiff-64", "celldiff-tiny", "designer-tiny", "subcell-tiny", "localizer-small",
                                   "compartment-readout", "stain-tiny", "celle2-tiny", "latent-tiny"]
    for name, family in [("celldiff-64", "celldiff"), ("celldiff-tiny", "celldiff"), ("designer-tiny", "designer"),
                         ("subcell-tiny", "subcell"), ("localizer-small", "localizer"),
                         ("compartment-readout", "readout"), ("stain-tiny", "stain"), ("celle2-tiny", "celle2"),
                         ("latent-tiny", "latent")]:
        ref = hub.resolve(name)
        assert ref.family == family and ref.bundled and (ref.directory / "config.json").is_file()
    assert hub.resolve(None, default="designer-tiny").name == "designer-tiny"
    assert type(hub.load("designer-tiny")).__name__ == "SequenceDesigner"


def test_directory_family_from_config_class_or_family_field(tmp_path):
    model = CellDiff(celldiff_tiny_config(image_size=16, channels=(8, 8, 8, 8), transformer_width=16,
                                          transformer_layers=1, sequence_dim=16, sequence_layers=1))
    model.save_pretrained(tmp_path / "m")
    ref = hub.resolve(tmp_path / "m", families=("celldiff",))
    assert ref.family == "celldiff" and not ref.bundled
    loaded = ref.load("cpu")
    assert not loaded.training and all(torch.equal(a, b) for a, b in
                                       zip(model.state_dict().values(), loaded.state_dict().values()))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["family"] = "celldiff"          # an explicit family field is read by the hub and ignored by the config
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert hub.family_of(tmp_path / "m") == "celldiff" and hub.resolve(tmp_path / "m").load().config == model.config


def test_errors_name_the_argument_the_expected_family_and_bundled_names(tmp_path):
    with pytest.raises(InputError, match=r"^model /.*none: no CELL-Diff model at .*bundled names: celldiff-64, celldiff-tiny\)$"):
        hub.resolve(tmp_path / "none", families=("celldiff",))
    with pytest.raises(InputError, match=r"^--model subcell-tiny: a SubCell model \(subcell\); expected celldiff$"):
        hub.resolve("subcell-tiny", families=("celldiff",), argument="--model")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text('{"class": "SomethingElse"}')
    with pytest.raises(InputError, match="x: no model at"):
        hub.resolve(tmp_path / "x")
    (tmp_path / "x" / "config.json").write_text("{")
    with pytest.raises(InputError, match=r"config.json: invalid JSON at line 1"):
        hub.resolve(tmp_path / "x")


def test_registering_a_new_family(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "FAMILIES", dict(hub.FAMILIES))
    hub.register_family("toy", "torch.nn:Identity", config_classes=("ToyConfig",), title="toy model")
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "config.json").write_text('{"class": "ToyConfig"}')
    ref = hub.resolve(str(tmp_path / "toy"), families=("toy", "celldiff"))
    assert ref.family == "toy" and ref.title == "toy model"
    assert isinstance(ref.load("cpu"), torch.nn.Identity)   # Identity(path, device) accepts and ignores arguments
    with pytest.raises(ValueError, match="unknown family"):
        hub.register_bundled("toy-tiny", "nope")


def test_published_subcell_yaml_is_claimed_by_the_subcell_family(tmp_path):
    (tmp_path / "model_config.yaml").write_text("model_config: {}\n")
    assert hub.family_of(tmp_path / "model_config.yaml") == "subcell"
    assert hub.asset_path("examples/proteins.fasta").is_file()


def test_family_of_model_reads_names_and_directories_without_loading(tmp_path):
    from locscope.models import hub

    assert hub.family_of_model(None, default="celldiff-tiny") == "celldiff"
    assert hub.family_of_model("subcell-tiny", default="celldiff-tiny") == "subcell"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"family": "celle2"}')
    assert hub.family_of_model(tmp_path / "m", default="celldiff-tiny") == "celle2"
    assert hub.family_of_model(tmp_path / "missing", default="celldiff-tiny") is None
