"""The motif grammar and label-faithful rendering from real annotations."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from locscope.errors import InputError
from locscope.synth import SimulatorConfig, simulate_cell
from locscope.synth.grammar import (
    VARIANTS, background_sequence, find_motifs, grammar_targets, localize_sequence, motif_variants, random_protein,
    variant_split,
)
from locscope.synth.labelled import annotation_fractions, read_annotated_proteins


def test_known_sorting_signals():
    pad = "AGSTGSQGTSGQNGTS" * 4
    cases = {
        "M" + pad + "PKKKRKV" + pad: {"nucleoplasm": 1.0},                                    # SV40 NLS
        "MKWVTFISLLFLFSSAYS" + pad + pad + "KDEL": {"endoplasmic-reticulum": 1.0},             # signal peptide + KDEL
        "MKWVTFISLLFLFSSAYS" + pad + pad: {"vesicles": 0.7, "golgi-apparatus": 0.3},          # secreted
        "M" + pad + pad + "SKL": {"peroxisomes": 1.0},                                          # PTS1
        "M" + pad + pad + "KCVLS": {"plasma-membrane": 1.0},                                    # CAAX
        "MLSLRQSIRFFKPATRTLCSSRYLL" + pad + pad: {"mitochondria": 1.0},                        # COX8 presequence
        "MGVADLIKKFESISKEE" + pad + pad: {"actin-filaments": 1.0},                              # Lifeact
        "M" + pad + "RRKRRRRR" + pad: {"nucleoli": 1.0},                                        # NoLS
        "M" + pad + "RSRSRSRSRSRS" + pad: {"nuclear-speckles": 1.0},                            # RS domain
        "M" + pad * 3: {"cytosol": 1.0},                                                        # no signal
    }
    for sequence, expected in cases.items():
        assert localize_sequence(sequence).compartments == expected, sequence


def test_shuttling_protein_fraction_follows_nls_strength():
    pad = "AGSTGSQGTSGQNGTS" * 3
    nes = "LALKLAGLDI"  # PKI NES
    weak = localize_sequence("M" + pad + "PKKKRKV" + pad + nes + pad).compartments
    strong = localize_sequence("M" + pad + "PKKKRKKV" + pad + nes + pad).compartments
    assert set(weak) == {"nucleoplasm", "cytosol"}
    assert sum(weak.values()) == pytest.approx(1.0) and sum(strong.values()) == pytest.approx(1.0)
    assert strong["nucleoplasm"] > weak["nucleoplasm"]


def test_motif_positions_are_reported():
    rng = np.random.default_rng(0)
    for target in grammar_targets():
        sequence, motifs = random_protein(target, rng)
        call = localize_sequence(sequence)
        for name, start, end in motifs:
            assert (name, start, end) in call.motifs
            assert 0 <= start < end <= len(sequence)
        assert all(m in call.motifs for m in call.deciding_motifs)
        if target != ("cytosol",):
            assert call.deciding_motifs, target


def test_train_and_heldout_variants_are_disjoint_and_both_used():
    for name in VARIANTS:
        train, heldout = set(motif_variants(name, "train")), set(motif_variants(name, "heldout"))
        assert train and heldout, name
        assert not train & heldout
        assert all(variant_split(name, v) == "heldout" for v in heldout)
    rng = np.random.default_rng(1)
    seq, motifs = random_protein({"peroxisomes": 1.0}, rng, split="heldout")
    assert seq[motifs[0][1]:motifs[0][2]] in set(motif_variants("pts1", "heldout"))


def test_background_sequences_have_human_composition_and_rarely_carry_signals():
    rng = np.random.default_rng(2)
    seqs = [background_sequence(rng, 300) for _ in range(300)]
    counts = collections.Counter("".join(seqs))
    assert counts["L"] / sum(counts.values()) == pytest.approx(0.10, abs=0.01)
    calls = collections.Counter(next(iter(localize_sequence(s).compartments)) for s in seqs)
    assert calls["cytosol"] / len(seqs) > 0.9


def test_random_protein_rejects_unknown_targets():
    with pytest.raises(InputError, match="no rule"):
        random_protein({"plastid": 1.0}, np.random.default_rng(0))
    with pytest.raises(InputError, match="too short"):
        random_protein("nucleoplasm", np.random.default_rng(0), length=20)


def test_find_motifs_does_not_call_hairpins_transmembrane():
    hairpin = motif_variants("lipid-hairpin")[0]
    sequence = "M" + "GS" * 30 + hairpin + "GS" * 30
    names = [m[0] for m in find_motifs(sequence)]
    assert "lipid-hairpin" in names and "tm-helix" not in names
    assert localize_sequence(sequence).compartments == {"lipid-droplets": 1.0}


def test_annotation_fractions_follow_grades():
    fractions = annotation_fractions(["nucleoplasm", "cytosol"], {"nucleoplasm": 3, "cytosol": 1})
    assert fractions == pytest.approx({"nucleoplasm": 0.8, "cytosol": 0.2})
    assert annotation_fractions(["cytoskeleton", "plastid"]) == {"cytoskeleton": 1.0}
    with pytest.raises(InputError, match="no class visible"):
        annotation_fractions(["plastid"])


def test_label_faithful_rendering_honours_multi_label_annotations(shared_data):
    proteins = read_annotated_proteins(shared_data / "localization_sequences" / "opencell_raw.csv")
    assert len(proteins) > 1200
    multi = [p for p in proteins if len(p.compartments) >= 2][:6]
    assert len(multi) == 6
    cfg = SimulatorConfig(size=64, optics=False)
    for k, protein in enumerate(multi):
        sim = simulate_cell(cfg, sequence=protein.sequence, compartments=protein.compartments, seed=k,
                            provenance={"name": protein.name})
        assert set(sim.labels["level1"]) == set(protein.compartments) == set(protein.level1) - {"plastid"}
        assert sim.sequence == protein.sequence
        total = sim.protein.sum()
        for name, fraction in protein.compartments.items():
            inside = sim.protein[sim.masks[name]].sum() / total
            assert inside >= fraction - 1e-5, (protein.name, name)  # masks may overlap (e.g. cytosol / vesicles)
        assert not ((sim.protein > 0) & ~sim.protein_mask()).any()
