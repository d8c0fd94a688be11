"""The virtual-cell simulator: rendering, masks, protein placement, determinism, the store writer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from locscope.errors import InputError
from locscope.synth import (
    COMPARTMENTS, SimulatorConfig, place_protein, protein_components, render_cell, simulate_cell, simulate_store,
)
from locscope.synth.grammar import grammar_targets, localize_sequence, random_protein

CLEAN = dict(optics=False)


@pytest.mark.parametrize("size,mode", [(32, "crop"), (64, "crop"), (96, "field")])
def test_render_cell_has_every_compartment(size, mode):
    cell = render_cell(SimulatorConfig(size=size, mode=mode), seed=5)
    assert set(cell.masks) == set(COMPARTMENTS)
    for name, mask in cell.masks.items():
        assert mask.shape == (size, size) and mask.dtype == bool
        assert mask.any(), f"{name} is empty at {size} px"
    for channel in ("nucleus", "er", "microtubules"):
        img = cell.images[channel]
        assert img.dtype == np.float32 and img.shape == (size, size)
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.01
    if mode == "field":
        assert cell.n_cells >= 3


def test_masks_are_consistent_with_the_cell_anatomy():
    cell = render_cell(SimulatorConfig(size=128), seed=1)
    m = cell.masks
    nucleus = cell.nuclei > 0
    for inner in ("nucleoplasm", "nucleoli", "nucleoli-fibrillar-center", "nuclear-speckles", "nuclear-bodies",
                  "nuclear-membrane"):
        assert not (m[inner] & ~nucleus).any(), inner
    for outer in ("cytosol", "endoplasmic-reticulum", "golgi-apparatus", "vesicles", "endosomes", "lysosomes",
                  "peroxisomes", "lipid-droplets", "mitochondria", "intermediate-filaments"):
        assert not (m[outer] & nucleus).any(), outer
    assert not (m["nucleoli-fibrillar-center"] & ~m["nucleoli"]).any()
    assert not (m["nucleoplasm"] & m["nucleoli"]).any()
    assert (m["nucleoplasm"] | m["nucleoli"]).sum() == nucleus.sum()
    # the ER network is denser near the nucleus than at the periphery
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~nucleus)
    cyto = m["cytosol"]
    near = cyto & (dist < np.percentile(dist[cyto], 33))
    far = cyto & (dist > np.percentile(dist[cyto], 67))
    assert m["endoplasmic-reticulum"][near].mean() > 1.5 * m["endoplasmic-reticulum"][far].mean()
    # microtubules radiate from the centrosome: MT pixels cluster around it more than the cytoplasm does
    centre = np.argwhere(m["centrosome"]).mean(axis=0)
    rows, cols = np.nonzero(m["microtubules"])
    d_mt = np.hypot(rows - centre[0], cols - centre[1])
    assert np.median(d_mt) < np.median(np.hypot(*(np.argwhere(cyto) - centre).T))


def test_same_seed_is_bitwise_identical_and_other_seeds_differ():
    cfg = SimulatorConfig(size=48, mode="field", brightfield=True, cell_painting=True, perturbation="random")
    a, b, c = (simulate_cell(cfg, seed=s) for s in (7, 7, 8))
    assert a.sequence == b.sequence and a.compartments == b.compartments
    for name in a.images:
        assert np.array_equal(a.images[name], b.images[name]), name
    for name in a.masks:
        assert np.array_equal(a.masks[name], b.masks[name]), name
    assert not np.array_equal(a.images["nucleus"], c.images["nucleus"])
    assert set(a.images) == {"protein", "nucleus", "er", "microtubules", "brightfield", "dna", "rna", "agp", "mito"}


def test_fractions_add_up():
    cell = render_cell(SimulatorConfig(size=64, **CLEAN), seed=2)
    fractions = {"nucleoplasm": 0.5, "cytosol": 0.3, "nucleoli": 0.2}
    parts = protein_components(cell, fractions)
    expression = cell.expression[0]
    for name, f in fractions.items():
        assert parts[name].sum() == pytest.approx(f * expression, rel=1e-5)
    protein = place_protein(cell, fractions, seed=0)
    total = protein.sum()
    # nucleoplasm, cytosol and nucleoli are disjoint: the share of signal inside each mask is its fraction
    for name, f in fractions.items():
        assert protein[cell.masks[name]].sum() / total == pytest.approx(f, abs=1e-5)
    # unnormalised fractions are rescaled to sum to 1
    again = place_protein(cell, {"nucleoplasm": 5, "cytosol": 3, "nucleoli": 2}, seed=0)
    assert np.allclose(again, protein)


def test_place_protein_rejects_bad_input():
    cell = render_cell(SimulatorConfig(size=32), seed=0)
    with pytest.raises(InputError, match="unknown compartment"):
        place_protein(cell, {"nucleus-of-nowhere": 1.0})
    with pytest.raises(InputError, match="sum to 0"):
        place_protein(cell, {"cytosol": 0.0})
    with pytest.raises(InputError, match="size"):
        SimulatorConfig(size=4)
    with pytest.raises(InputError, match="mode"):
        SimulatorConfig(mode="tissue")  # type: ignore[arg-type]


@pytest.mark.parametrize("target", grammar_targets(), ids=lambda t: "+".join(t))
def test_each_grammar_rule_places_its_protein_in_its_masks(target):
    rng = np.random.default_rng(11)
    sequence, motifs = random_protein(target, rng, length=220)
    sim = simulate_cell(SimulatorConfig(size=64, **CLEAN), sequence=sequence, seed=4)
    assert tuple(sorted(sim.compartments)) == target
    assert sum(sim.compartments.values()) == pytest.approx(1.0)
    assert sim.labels["level1"] and set(sim.labels["level1"]) == set(target)
    signal = sim.protein > 0
    assert signal.any()
    assert not (signal & ~sim.protein_mask()).any(), "protein outside its compartments"
    for name in target:  # every compartment of the call receives protein
        assert sim.protein[sim.masks[name]].sum() > 0, name


def test_grammar_protein_with_optics_is_brighter_inside_its_compartment():
    rng = np.random.default_rng(3)
    for target in (("mitochondria",), ("nucleoplasm",), ("plasma-membrane",)):
        sequence, _ = random_protein(target, rng)
        sim = simulate_cell(SimulatorConfig(size=64), sequence=sequence, seed=9)
        inside = sim.protein[sim.protein_mask()].mean()
        outside = sim.protein[(sim.cell.instances > 0) & ~sim.protein_mask()].mean()
        assert inside > 2 * outside, target


def test_simulate_cell_with_compartments_and_random_protein():
    sim = simulate_cell(SimulatorConfig(size=32), compartments={"golgi-apparatus": 1, "cytosol": 1}, seed=1)
    assert sim.compartments == {"golgi-apparatus": 0.5, "cytosol": 0.5}
    assert sim.provenance["source"] == "compartments" and sim.sequence is None
    sim = simulate_cell(SimulatorConfig(size=32), seed=12)
    assert sim.sequence and localize_sequence(sim.sequence).compartments == sim.compartments
    assert sim.provenance["source"] == "grammar"


def test_config_round_trip():
    cfg = SimulatorConfig(size=40, mode="field", cells_per_field=(2, 3), perturbation="enlarged-cells")
    assert SimulatorConfig.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg, size=80).resolved_pixel_size_nm == pytest.approx(cfg.resolved_pixel_size_nm / 2)


def test_perturbations_change_the_phenotype():
    base = SimulatorConfig(size=96)
    control = [render_cell(base, seed=s) for s in range(4)]
    enlarged = [render_cell(dataclasses.replace(base, perturbation="enlarged-cells"), seed=s) for s in range(4)]
    condensed = [render_cell(dataclasses.replace(base, perturbation="condensed-nuclei"), seed=s) for s in range(4)]
    area = lambda cells, key: np.mean([(getattr(c, key) > 0).sum() for c in cells])  # noqa: E731
    assert area(enlarged, "instances") > 1.3 * area(control, "instances")
    assert area(condensed, "nuclei") < 0.75 * area(control, "nuclei")


def test_simulate_store_writes_a_readable_store(tmp_path):
    from locscope.data.store import Store

    cfg = SimulatorConfig(size=32)
    store = simulate_store(tmp_path / "sim", 12, cfg, seed=3, progress=False)
    again = Store.open(tmp_path / "sim")
    assert len(again) == 12 and set(again.mask_names) == set(COMPARTMENTS)
    assert again.channels[0] == "protein" and again.attrs["pixel_size_nm"] == pytest.approx(cfg.resolved_pixel_size_nm)
    item = again[0]
    assert item["images"]["protein"].dtype == np.uint16
    call = localize_sequence(item["sequence"])
    assert set(item["labels"]["level1"]) == set(call.compartments)
    assert item["provenance"]["rule"] == call.rule
    # validation / test proteins carry held-out motif variants
    for i in range(len(again)):
        it = again[i]
        assert it["provenance"]["motif_split"] == ("train" if it["split"] == "train" else "heldout")
    # bitwise reproducible
    other = simulate_store(tmp_path / "sim2", 12, cfg, seed=3, progress=False)
    assert np.array_equal(store.image_array("protein")[:], other.image_array("protein")[:])


def test_fields_have_touching_and_border_cut_cells():
    touching = border_cut = 0
    for seed in range(4):
        cell = render_cell(SimulatorConfig(size=128, mode="field", cells_per_field=(4, 6)), seed=seed)
        inst = cell.instances
        # two different cells side by side (no background between them)
        horizontal = (inst[:, 1:] > 0) & (inst[:, :-1] > 0) & (inst[:, 1:] != inst[:, :-1])
        vertical = (inst[1:, :] > 0) & (inst[:-1, :] > 0) & (inst[1:, :] != inst[:-1, :])
        touching += int(horizontal.any() or vertical.any())
        edge = np.concatenate([inst[0], inst[-1], inst[:, 0], inst[:, -1]])
        border_cut += int((edge > 0).any())
        # plasma membrane outlines each cell, also along a shared border
        if horizontal.any():
            assert cell.masks["plasma-membrane"][:, 1:][horizontal].mean() > 0.9
    assert touching >= 3 and border_cut >= 3


def test_cell_painting_perturbations_change_their_structures():
    from scipy import ndimage

    def stats(perturbation):
        cfg = SimulatorConfig(size=128, cell_painting=True, perturbation=perturbation, optics=False)
        mito_len, mt_near, golgi_far, er_far = [], [], [], []
        for seed in range(3):
            cell = render_cell(cfg, seed=seed)
            from_nucleus = ndimage.distance_transform_edt(cell.nuclei == 0)
            golgi_far.append(from_nucleus[cell.masks["golgi-apparatus"]].mean())
            er_far.append(from_nucleus[cell.masks["endoplasmic-reticulum"]].mean())
            labels, n = ndimage.label(cell.masks["mitochondria"])
            mito_len.append(cell.masks["mitochondria"].sum() / max(n, 1))
            # an aster is one connected network; fragments are many separate pieces
            mt_labels, _ = ndimage.label(cell.masks["microtubules"], structure=np.ones((3, 3)))
            sizes = np.bincount(mt_labels.ravel())[1:]
            mt_near.append(sizes.max() / sizes.sum())
            assert cell.perturbation == perturbation
            assert set(cell.images) >= {"dna", "rna", "er", "agp", "mito"}
        return np.mean(mito_len), np.mean(mt_near), np.mean(golgi_far), np.mean(er_far)

    control, fragmented, disrupted = stats("control"), stats("fragmented-mitochondria"), stats("disrupted-microtubules")
    assert fragmented[0] < 0.6 * control[0]     # shorter mitochondrial pieces
    assert control[1] > 0.9 and disrupted[1] < 0.5 * control[1]     # no aster around the centrosome
    # without microtubules the Golgi scatters (agp channel) and the ER retracts to the nucleus (er channel)
    assert disrupted[2] > 2 * control[2] and disrupted[3] < 0.75 * control[3]
    assert fragmented[2:] == control[2:]     # other classes leave both alone


def test_crop_neighbours_surround_the_centred_cell():
    cell = render_cell(SimulatorConfig(size=96, neighbours=True), seed=2)
    assert cell.n_cells >= 3
    assert cell.instances[48, 48] == 1  # the centred cell
    edge = np.concatenate([cell.instances[0], cell.instances[-1], cell.instances[:, 0], cell.instances[:, -1]])
    assert set(np.unique(edge)) - {0, 1}  # neighbours are cut by the border
    for k in np.unique(cell.instances)[1:]:  # every visible cell has microtubules, even with its centrosome outside
        assert (cell.masks["microtubules"] & (cell.instances == k)).sum() > 5
