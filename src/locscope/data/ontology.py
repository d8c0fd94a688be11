"""The localization ontology: HPA, OpenCell and UniProt vocabularies -> level 1 (21 classes + plastid) -> level 2 /
level 3, and level 1 -> SubCell's 31 classes.

The class lists and vocabulary maps below are the facts of seq2loc's ``hierarchical_label_set.yaml`` written as
Python data, so the package works without the data folder (``tests/data/test_ontology.py`` checks they equal the YAML).
An empty string in a vocabulary map means the source term is known and deliberately left unmapped (e.g. HPA
``Aggresome``, mitotic structures, host / parasite compartments): :func:`from_hpa` and friends return ``None`` for
it. Unknown terms raise :class:`~locscope.errors.InputError`.

Examples
--------
>>> from_hpa("Nucleoli fibrillar center")
'nucleoli-fibrillar-center'
>>> to_level2("nucleoli-fibrillar-center"), to_level3("endosomes")
('nucleoli', 'endomembrane-system')
>>> to_subcell("endoplasmic-reticulum")
'Endoplasmic reticulum'
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from locscope.errors import InputError

# ---- facts of hierarchical_label_set.yaml (seq2loc); keep equal to it

LEVEL1: tuple[str, ...] = (
    "cytoskeleton", "actin-filaments", "intermediate-filaments", "centrosome", "microtubules", "plasma-membrane",
    "cytosol", "endoplasmic-reticulum", "golgi-apparatus", "vesicles", "endosomes", "lysosomes", "peroxisomes",
    "lipid-droplets", "mitochondria", "nucleoplasm", "nuclear-bodies", "nuclear-membrane", "nuclear-speckles",
    "nucleoli", "nucleoli-fibrillar-center", "plastid",
)

LEVEL2: tuple[str, ...] = (
    "cytoskeleton", "plasma-membrane", "cytosol", "endoplasmic-reticulum", "golgi-apparatus", "vesicles",
    "mitochondria", "nucleus", "nucleoli", "plastid",
)

LEVEL3: tuple[str, ...] = (
    "cytoskeleton", "plasma-membrane", "cytosol", "endomembrane-system", "mitochondria", "nucleus", "nucleoli",
    "plastid",
)

#: The order of CELL-Diff's compartment head (the level-3 classes without plastid; ``CellDiffConfig.compartment_classes``).
CELLDIFF_COMPARTMENT_CLASSES: tuple[str, ...] = (
    "nucleus", "cytosol", "endomembrane-system", "plasma-membrane", "mitochondria", "nucleoli", "cytoskeleton",
)

#: The level-1 compartments the simulator renders (every cell has all of them), in the order models index them
#: (``CellDiffConfig.fraction_classes`` of the bundled model, the designer's condition).
SIMULATOR_COMPARTMENTS: tuple[str, ...] = (
    "nucleoplasm", "nucleoli", "nucleoli-fibrillar-center", "nuclear-speckles", "nuclear-bodies", "nuclear-membrane",
    "cytosol", "endoplasmic-reticulum", "golgi-apparatus", "vesicles", "endosomes", "lysosomes", "peroxisomes",
    "lipid-droplets", "mitochondria", "plasma-membrane", "actin-filaments", "microtubules", "intermediate-filaments",
    "centrosome", "cytoskeleton",
)

LEVEL1_TO_LEVEL2: dict[str, str] = {
    "cytoskeleton": "cytoskeleton", "actin-filaments": "cytoskeleton", "plasma-membrane": "plasma-membrane",
    "centrosome": "cytoskeleton", "cytosol": "cytosol", "endoplasmic-reticulum": "endoplasmic-reticulum",
    "endosomes": "vesicles", "golgi-apparatus": "golgi-apparatus", "intermediate-filaments": "cytoskeleton",
    "lipid-droplets": "vesicles", "lysosomes": "vesicles", "microtubules": "cytoskeleton",
    "mitochondria": "mitochondria", "nuclear-bodies": "nucleus", "nuclear-membrane": "nucleus",
    "nuclear-speckles": "nucleus", "nucleoli": "nucleoli", "nucleoli-fibrillar-center": "nucleoli",
    "nucleoplasm": "nucleus", "peroxisomes": "vesicles", "vesicles": "vesicles", "plastid": "plastid",
}

# every level-2 class lies in one level-3 class, so level 1 -> level 3 is level 1 -> level 2 -> level 3
LEVEL2_TO_LEVEL3: dict[str, str] = {
    "cytoskeleton": "cytoskeleton", "plasma-membrane": "plasma-membrane", "cytosol": "cytosol",
    "endoplasmic-reticulum": "endomembrane-system", "golgi-apparatus": "endomembrane-system",
    "vesicles": "endomembrane-system", "mitochondria": "mitochondria", "nucleus": "nucleus", "nucleoli": "nucleoli",
    "plastid": "plastid",
}

LEVEL1_TO_LEVEL3: dict[str, str] = {level1: LEVEL2_TO_LEVEL3[level2] for level1, level2 in LEVEL1_TO_LEVEL2.items()}

HPA_TO_LEVEL1: dict[str, str] = {
    "Actin filaments": "actin-filaments", "Aggresome": "", "Cell Junctions": "plasma-membrane",
    "Centriolar satellite": "centrosome", "Centrosome": "centrosome", "Cleavage furrow": "",
    "Cytokinetic bridge": "", "Cytoplasmic bodies": "cytosol", "Cytosol": "cytosol",
    "Endoplasmic reticulum": "endoplasmic-reticulum", "Endosomes": "endosomes",
    "Focal adhesion sites": "actin-filaments", "Golgi apparatus": "golgi-apparatus",
    "Intermediate filaments": "intermediate-filaments", "Kinetochore": "", "Lipid droplets": "lipid-droplets",
    "Lysosomes": "lysosomes", "Micronucleus": "nuclear-bodies", "Microtubule ends": "microtubules",
    "Microtubules": "microtubules", "Midbody": "", "Midbody ring": "", "Mitochondria": "mitochondria",
    "Mitotic chromosome": "", "Mitotic spindle": "", "Nuclear bodies": "nuclear-bodies",
    "Nuclear membrane": "nuclear-membrane", "Nuclear speckles": "nuclear-speckles", "Nucleoli": "nucleoli",
    "Nucleoli fibrillar center": "nucleoli-fibrillar-center", "Nucleoli rim": "nucleoli",
    "Nucleoplasm": "nucleoplasm", "Peroxisomes": "peroxisomes", "Plasma membrane": "plasma-membrane",
    "Rods & Rings": "", "Vesicles": "vesicles",
}

OPENCELL_TO_LEVEL1: dict[str, str] = {
    "big_aggregates": "vesicles", "cell_contact": "plasma-membrane", "centrosome": "centrosome",
    "chromatin": "nucleoplasm", "cytoplasmic": "cytosol", "cytoskeleton": "cytoskeleton",
    "er": "endoplasmic-reticulum", "focal_adhesions": "plasma-membrane", "golgi": "golgi-apparatus",
    "membrane": "plasma-membrane", "mitochondria": "mitochondria", "nuclear_membrane": "nuclear-membrane",
    "nuclear_punctae": "nuclear-bodies", "nucleolus_fc_dfc": "nucleoli-fibrillar-center",
    "nucleolus_gc": "nucleoli", "nucleoplasm": "nucleoplasm", "vesicles": "vesicles",
}

UNIPROT_TO_LEVEL1: dict[str, str] = {
    "A band": "actin-filaments", "Acidocalcisome membrane": "", "Apical cell membrane": "plasma-membrane",
    "Apicolateral cell membrane": "plasma-membrane", "Ascus epiplasm": "cytosol", "Autolysosome": "lysosomes",
    "Autolysosome membrane": "lysosomes", "Barrier septum": "plasma-membrane",
    "Basal cell membrane": "plasma-membrane", "Basolateral cell membrane": "plasma-membrane", "Bud": "",
    "Bud membrane": "plasma-membrane", "Bud neck": "", "Bud tip": "", "COPI-coated vesicle": "vesicles",
    "COPI-coated vesicle membrane": "vesicles", "COPII-coated vesicle": "vesicles",
    "COPII-coated vesicle membrane": "vesicles", "Cajal body": "nuclear-bodies", "Cell junction": "plasma-membrane",
    "Cell membrane": "plasma-membrane", "Cell projection": "", "Cell septum": "", "Cell surface": "plasma-membrane",
    "Cell tip": "", "Chromosome": "nucleoplasm", "Cleavage furrow": "plasma-membrane", "Contractile vacuole": "",
    "Contractile vacuole membrane": "", "Cornified envelope": "plasma-membrane", "Cortical granule": "vesicles",
    "Cytolytic granule": "lysosomes", "Cytolytic granule membrane": "lysosomes", "Cytoplasm": "cytosol",
    "Cytoplasmic granule": "vesicles", "Cytoplasmic granule lumen": "vesicles",
    "Cytoplasmic granule membrane": "vesicles", "Cytoplasmic ribonucleoprotein granule": "vesicles",
    "Cytoplasmic vesicle": "vesicles", "Cytoplasmic vesicle lumen": "", "Cytoplasmic vesicle membrane": "vesicles",
    "Dynein axonemal particle": "", "Early endosome": "endosomes", "Early endosome membrane": "endosomes",
    "Endomembrane system": "", "Endoplasmic reticulum": "endoplasmic-reticulum",
    "Endoplasmic reticulum lumen": "endoplasmic-reticulum",
    "Endoplasmic reticulum membrane": "endoplasmic-reticulum",
    "Endoplasmic reticulum-Golgi intermediate compartment": "",
    "Endoplasmic reticulum-Golgi intermediate compartment lumen": "",
    "Endoplasmic reticulum-Golgi intermediate compartment membrane": "", "Endosome": "endosomes",
    "Endosome lumen": "endosomes", "Endosome membrane": "endosomes", "Extracellular vesicle": "",
    "Extracellular vesicle membrane": "", "Flagellar pocket": "", "Forespore membrane": "", "Glycosome": "",
    "Glyoxysome": "peroxisomes", "Glyoxysome membrane": "peroxisomes", "Golgi apparatus": "golgi-apparatus",
    "Golgi apparatus lumen": "golgi-apparatus", "Golgi apparatus membrane": "golgi-apparatus",
    "Golgi outpost": "golgi-apparatus", "Golgi stack": "golgi-apparatus", "Golgi stack membrane": "golgi-apparatus",
    "H zone": "", "Host": "", "Host Golgi apparatus": "", "Host cell": "", "Host cell membrane": "",
    "Host cell surface": "", "Host chloroplast envelope": "", "Host cytoplasm": "",
    "Host cytosolic vesicle membrane": "", "Host cytoplasmic vesicle membrane": "", "Host early endosome": "",
    "Host endomembrane system": "", "Host endoplasmic reticulum": "", "Host endoplasmic reticulum membrane": "",
    "Host endosome": "", "Host extracellular space": "", "Host membrane": "", "Host mitochondrion": "",
    "Host mitochondrion membrane": "", "Host nucleus": "", "Host periplasm": "", "Host peroxisome": "",
    "Hydrogenosome": "", "Hydrogenosome lumen": "", "I band": "actin-filaments", "Inflammasome": "",
    "Inner membrane complex": "", "Late endosome": "endosomes", "Late endosome lumen": "endosomes",
    "Late endosome membrane": "endosomes", "Lateral cell membrane": "plasma-membrane",
    "Lipid droplet": "lipid-droplets", "Lysosome": "lysosomes", "Lysosome lumen": "lysosomes",
    "Lysosome membrane": "lysosomes", "Lytic vacuole": "", "M line": "cytoskeleton", "Melanosome": "",
    "Melanosome membrane": "", "Membrane": "plasma-membrane", "Membrane raft": "", "Microsome": "",
    "Microsome membrane": "", "Midbody": "", "Midbody ring": "", "Mitochondrion": "mitochondria",
    "Mitochondrion envelope": "mitochondria", "Mitochondrion inner membrane": "mitochondria",
    "Mitochondrion intermembrane space": "mitochondria", "Mitochondrion matrix": "mitochondria",
    "Mitochondrion membrane": "mitochondria", "Mitochondrion outer membrane": "mitochondria", "Mitosome": "",
    "Mitosome matrix": "", "Mitosome membrane": "", "Myelin membrane": "plasma-membrane", "Nematocyst": "",
    "Nucleus": "nucleoplasm", "Nucleus envelope": "nuclear-membrane", "Nucleus inner membrane": "nuclear-membrane",
    "Nucleus intermembrane space": "nuclear-membrane", "Nucleus lamina": "nucleoplasm",
    "Nucleus matrix": "nucleoplasm", "Nucleus membrane": "nuclear-membrane",
    "Nucleus outer membrane": "nuclear-membrane", "Nucleus speckle": "nuclear-speckles", "P-body": "cytosol",
    "PML body": "nuclear-bodies", "Parasitophorous vacuole": "", "Parasitophorous vacuole lumen": "",
    "Parasitophorous vacuole membrane": "", "Perikaryon": "cytosol", "Periplasm": "", "Peroxisome": "peroxisomes",
    "Peroxisome matrix": "peroxisomes", "Peroxisome membrane": "peroxisomes", "Photoreceptor inner segment": "",
    "Photoreceptor inner segment membrane": "", "Photoreceptor outer segment membrane": "", "Plastid": "plastid",
    "Plastid inner membrane": "plastid", "Plastid membrane": "plastid", "Plastid stroma": "plastid",
    "Postsynapse": "", "Postsynaptic cell membrane": "plasma-membrane", "Postsynaptic density": "",
    "Postsynaptic density membrane": "plasma-membrane", "Postsynaptic recycling endosome membrane": "endosomes",
    "Preautophagosomal structure": "", "Preautophagosomal structure membrane": "", "Presynapse": "",
    "Presynaptic active zone": "", "Presynaptic cell membrane": "plasma-membrane",
    "Presynaptic endosome": "endosomes", "Prevacuolar compartment": "", "Prevacuolar compartment membrane": "",
    "Prospore membrane": "", "Protein storage vacuole": "", "Protein storage vacuole membrane": "",
    "Recycling endosome": "endosomes", "Recycling endosome lumen": "endosomes",
    "Recycling endosome membrane": "endosomes", "Rough endoplasmic reticulum": "endoplasmic-reticulum",
    "Rough endoplasmic reticulum lumen": "endoplasmic-reticulum",
    "Rough endoplasmic reticulum membrane": "endoplasmic-reticulum",
    "Sarcoplasmic reticulum": "endoplasmic-reticulum", "Sarcoplasmic reticulum lumen": "endoplasmic-reticulum",
    "Sarcoplasmic reticulum membrane": "endoplasmic-reticulum", "Secreted": "",
    "Smooth endoplasmic reticulum membrane": "endoplasmic-reticulum", "Spore": "", "Spore coat": "",
    "Spore core": "", "Spore membrane": "", "Spore polar tube": "", "Spore wall": "", "Stress granule": "cytosol",
    "Symbiosome": "vesicles", "Symplast": "plasma-membrane", "Synapse": "",
    "Synaptic cell membrane": "plasma-membrane", "Synaptic cleft": "", "T-tubule": "", "Target cell": "",
    "Target cell membrane": "", "Tegument": "", "Tegument membrane": "", "Thylakoid": "plastid",
    "U-body": "nuclear-bodies", "Vacuole": "", "Vacuole lumen": "", "Vacuole membrane": "", "Vesicle": "vesicles",
    "Virion": "", "Z line": "", "Zona pellucida": "", "Zymogen granule": "", "Zymogen granule lumen": "",
    "Zymogen granule membrane": "", "acrosome": "", "acrosome inner membrane": "", "acrosome lumen": "",
    "acrosome membrane": "", "acrosome outer membrane": "", "actin patch": "actin-filaments",
    "adherens junction": "", "aleurone grain": "", "aleurone grain membrane": "", "amyloplast": "plastid",
    "amyloplast membrane": "plastid", "apicoplast": "plastid", "apoplast": "", "autophagosome": "lysosomes",
    "autophagosome lumen": "lysosomes", "autophagosome membrane": "lysosomes", "axon": "", "basement membrane": "",
    "bleb": "", "calyx": "", "caveola": "plasma-membrane", "cell cortex": "actin-filaments", "cell wall": "",
    "centriolar satellite": "centrosome", "centriole": "centrosome", "centromere": "nucleoplasm",
    "centrosome": "centrosome", "chloroplast": "plastid", "chloroplast envelope": "plastid",
    "chloroplast inner membrane": "plastid", "chloroplast intermembrane space": "plastid",
    "chloroplast membrane": "plastid", "chloroplast nucleoid": "plastid", "chloroplast outer membrane": "plastid",
    "chloroplast stroma": "plastid", "chloroplast thylakoid": "plastid", "chloroplast thylakoid lumen": "plastid",
    "chloroplast thylakoid membrane": "plastid", "chromaffin granule": "", "chromaffin granule lumen": "",
    "chromaffin granule membrane": "", "chromoplast": "plastid", "chromoplast membrane": "plastid",
    "chromoplast stroma": "plastid", "cilium": "", "cilium axoneme": "", "cilium basal body": "",
    "cilium membrane": "", "cis-Golgi network": "golgi-apparatus", "cis-Golgi network membrane": "golgi-apparatus",
    "clathrin-coated pit": "plasma-membrane", "clathrin-coated vesicle": "vesicles",
    "clathrin-coated vesicle membrane": "vesicles", "coated pit": "plasma-membrane", "cytoskeleton": "cytoskeleton",
    "cytosol": "cytosol", "dendrite": "", "dendritic spine": "", "dendritic spine membrane": "",
    "desmosome": "plasma-membrane", "etioplast": "plastid", "etioplast membrane": "plastid",
    "extracellular exosome": "", "extracellular matrix": "", "extracellular space": "", "filopodium": "",
    "filopodium membrane": "plasma-membrane", "filopodium tip": "actin-filaments", "flagellum": "",
    "flagellum axoneme": "", "flagellum basal body": "", "flagellum membrane": "",
    "focal adhesion": "actin-filaments", "gap junction": "", "gem": "", "growth cone": "actin-filaments",
    "growth cone membrane": "plasma-membrane", "hemidesmosome": "plasma-membrane", "host cytoskeleton": "",
    "host cytosol": "", "host nucleolus": "", "host nucleoplasm": "", "interphotoreceptor matrix": "",
    "invadopodium": "", "invadopodium membrane": "", "kinetochore": "", "kinetoplast": "mitochondria",
    "kinocilium": "", "lamellipodium": "actin-filaments", "lamellipodium membrane": "plasma-membrane",
    "microneme": "", "microneme lumen": "", "microneme membrane": "",
    "microtubule organizing center": "microtubules", "microvillus": "actin-filaments",
    "microvillus membrane": "actin-filaments", "mitochondrion nucleoid": "mitochondria",
    "multivesicular body": "endosomes", "multivesicular body lumen": "endosomes",
    "multivesicular body membrane": "endosomes", "myofibril": "", "neuron projection": "",
    "neuronal dense core vesicle": "vesicles", "neuronal dense core vesicle membrane": "vesicles",
    "nuclear body": "nuclear-bodies", "nuclear pore complex": "nuclear-membrane", "nucleolus": "nucleoli",
    "nucleolus fibrillar center": "nucleoli-fibrillar-center", "nucleoplasm": "nucleoplasm",
    "paranodal septate junction": "", "perinuclear region": "cytosol", "perinuclear theca": "", "perispore": "",
    "phagocytic cup": "", "phagosome": "vesicles", "phagosome lumen": "vesicles", "phagosome membrane": "vesicles",
    "photoreceptor outer segment": "", "phragmoplast": "cytosol", "plasmodesma": "", "plastoglobule": "",
    "podosome": "actin-filaments", "podosome membrane": "plasma-membrane", "pollen coat": "",
    "primary cell wall": "", "pseudopodium": "", "pseudopodium membrane": "", "pseudopodium tip": "",
    "rhabdomere": "", "rhabdomere membrane": "", "rhoptry": "", "rhoptry lumen": "", "rhoptry membrane": "",
    "ruffle": "actin-filaments", "ruffle membrane": "plasma-membrane", "sarcolemma": "",
    "sarcomere": "actin-filaments", "sarcoplasm": "cytosol", "secretory vesicle": "vesicles",
    "secretory vesicle lumen": "vesicles", "secretory vesicle membrane": "vesicles", "septate junction": "",
    "spindle": "microtubules", "spindle pole": "microtubules", "spindle pole body": "microtubules",
    "stereocilium": "actin-filaments", "stereocilium membrane": "actin-filaments",
    "stress fiber": "actin-filaments", "synaptic vesicle": "vesicles", "synaptic vesicle membrane": "vesicles",
    "synaptosome": "vesicles", "target cell cytoplasm": "", "telomere": "nucleoplasm", "tight junction": "",
    "trans-Golgi network": "golgi-apparatus", "trans-Golgi network membrane": "golgi-apparatus", "uropodium": "",
}

# SubCell's 31 output classes, in the published classifier's order.
SUBCELL_CLASSES: tuple[str, ...] = (
    "Actin filaments", "Aggresome", "Cell Junctions", "Centriolar satellite", "Centrosome", "Cytokinetic bridge",
    "Cytoplasmic bodies", "Cytosol", "Endoplasmic reticulum", "Endosomes", "Focal adhesion sites", "Golgi apparatus",
    "Intermediate filaments", "Lipid droplets", "Lysosomes", "Microtubules", "Midbody", "Mitochondria",
    "Mitotic chromosome", "Mitotic spindle", "Nuclear bodies", "Nuclear membrane", "Nuclear speckles", "Nucleoli",
    "Nucleoli fibrillar center", "Nucleoli rim", "Nucleoplasm", "Peroxisomes", "Plasma membrane", "Vesicles",
    "Negative",
)

# level 1 -> the SubCell (HPA) class it corresponds to. Where several HPA classes map to one level-1 class
# (Centrosome / Centriolar satellite -> centrosome) the eponymous one is chosen. Two level-1 classes have no HPA
# class: OpenCell's generic "cytoskeleton" (mostly actin-binding proteins in OpenCell: ACTB, ACTN1, CALD1, ...)
# -> "Actin filaments", and "plastid" (no plastids in human cells) -> "Negative".
SUBCELL_FROM_LEVEL1: dict[str, str] = {
    "cytoskeleton": "Actin filaments", "actin-filaments": "Actin filaments",
    "intermediate-filaments": "Intermediate filaments", "centrosome": "Centrosome", "microtubules": "Microtubules",
    "plasma-membrane": "Plasma membrane", "cytosol": "Cytosol", "endoplasmic-reticulum": "Endoplasmic reticulum",
    "golgi-apparatus": "Golgi apparatus", "vesicles": "Vesicles", "endosomes": "Endosomes", "lysosomes": "Lysosomes",
    "peroxisomes": "Peroxisomes", "lipid-droplets": "Lipid droplets", "mitochondria": "Mitochondria",
    "nucleoplasm": "Nucleoplasm", "nuclear-bodies": "Nuclear bodies", "nuclear-membrane": "Nuclear membrane",
    "nuclear-speckles": "Nuclear speckles", "nucleoli": "Nucleoli", "nucleoli-fibrillar-center": "Nucleoli fibrillar center",
    "plastid": "Negative",
}


def _check_level1(level1: str) -> str:
    if level1 not in LEVEL1_TO_LEVEL2:
        raise InputError(f"level-1 class {level1!r} not recognised; accepted: {', '.join(LEVEL1)}")
    return level1


def to_level2(level1: str) -> str:
    """Level-2 class (9 + plastid) of a level-1 class, e.g. ``"nuclear-speckles"`` -> ``"nucleus"``."""
    return LEVEL1_TO_LEVEL2[_check_level1(level1)]


def to_level3(level1: str) -> str:
    """Level-3 class (7 + plastid) of a level-1 class, e.g. ``"golgi-apparatus"`` -> ``"endomembrane-system"``."""
    return LEVEL1_TO_LEVEL3[_check_level1(level1)]


def level_membership(level1_classes: Sequence[str], classes: Sequence[str], level: int = 3) -> np.ndarray:
    """``(len(level1_classes), len(classes))`` float32 0/1: which of ``classes`` (level 2 or 3) each level-1 class
    belongs to (a row of zeros when its class is not among ``classes``). ``shares @ level_membership(...)`` sums
    level-1 shares into the coarser classes.

    Examples
    --------
    >>> level_membership(["nucleoplasm", "nucleoli", "golgi-apparatus"], ["nucleus", "endomembrane-system"]).tolist()
    [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    """
    if level not in (2, 3):
        raise ValueError(f"level={level}: accepted values are 2, 3")
    coarser = to_level3 if level == 3 else to_level2
    return np.array([[coarser(name) == c for c in classes] for name in level1_classes], np.float32).reshape(
        len(level1_classes), len(classes))


def to_subcell(level1: str) -> str:
    """SubCell class name (one of :data:`SUBCELL_CLASSES`) for a level-1 class."""
    return SUBCELL_FROM_LEVEL1[_check_level1(level1)]


def subcell_index(level1: str) -> int:
    """Index into SubCell's 31 outputs of a level-1 class."""
    return SUBCELL_CLASSES.index(to_subcell(level1))


def _lookup(vocabulary: dict[str, str], lowered: dict[str, str], term: str, source: str) -> str | None:
    key = term.strip()
    if key in vocabulary:
        value = vocabulary[key]
    elif key.lower() in lowered:
        value = lowered[key.lower()]
    else:
        raise InputError(f"{source} term {term!r} not in the ontology ({len(vocabulary)} known terms)")
    return value or None


def _lowered(vocabulary: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in vocabulary.items()}


_HPA_LOWER, _OPENCELL_LOWER, _UNIPROT_LOWER = map(_lowered, (HPA_TO_LEVEL1, OPENCELL_TO_LEVEL1, UNIPROT_TO_LEVEL1))


def from_hpa(term: str) -> str | None:
    """Level-1 class of an HPA location (``"Nucleoli rim"`` -> ``"nucleoli"``); ``None`` if deliberately unmapped."""
    return _lookup(HPA_TO_LEVEL1, _HPA_LOWER, term, "HPA")


def from_opencell(term: str) -> str | None:
    """Level-1 class of an OpenCell annotation (``"nucleolus_gc"`` -> ``"nucleoli"``)."""
    return _lookup(OPENCELL_TO_LEVEL1, _OPENCELL_LOWER, term, "OpenCell")


def from_uniprot(term: str) -> str | None:
    """Level-1 class of a UniProt subcellular-location term (``"Golgi stack"`` -> ``"golgi-apparatus"``)."""
    return _lookup(UNIPROT_TO_LEVEL1, _UNIPROT_LOWER, term, "UniProt")


# DeepLoc 1.0's ten classes (as written in its FASTA headers) -> level 1. Not part of the seq2loc YAML: each is the
# UniProt term of the same name mapped through UNIPROT_TO_LEVEL1 (Lysosome/Vacuole -> "Lysosome"); "Extracellular"
# (secreted) has no intracellular class.
DEEPLOC_TO_LEVEL1: dict[str, str] = {
    "Nucleus": "nucleoplasm", "Cytoplasm": "cytosol", "Extracellular": "", "Mitochondrion": "mitochondria",
    "Cell.membrane": "plasma-membrane", "Endoplasmic.reticulum": "endoplasmic-reticulum", "Plastid": "plastid",
    "Golgi.apparatus": "golgi-apparatus", "Lysosome/Vacuole": "lysosomes", "Peroxisome": "peroxisomes",
}
_DEEPLOC_LOWER = _lowered(DEEPLOC_TO_LEVEL1)


def from_deeploc(term: str) -> str | None:
    """Level-1 class of a DeepLoc 1.0 class (``"Cell.membrane"`` -> ``"plasma-membrane"``; ``"Extracellular"`` -> None)."""
    return _lookup(DEEPLOC_TO_LEVEL1, _DEEPLOC_LOWER, term, "DeepLoc")


# Membrane topology and orientation words UniProt appends to locations; they say nothing about the compartment.
_UNIPROT_TOPOLOGY = re.compile(
    r"^(single-pass|multi-pass|peripheral|lipid-anchor|gpi-anchor|cytoplasmic side|extracellular side|lumenal side|"
    r"matrix side|intermembrane side|nucleoplasmic side|note=)",
    re.IGNORECASE,
)


def parse_uniprot_location(text: str) -> list[str]:
    """Level-1 classes of a UniProt "Subcellular location [CC]" text.

    Evidence tags (``{ECO:...}``), the ``SUBCELLULAR LOCATION:`` prefix, isoform prefixes, notes and membrane
    topology words are removed; entries are split on ``.`` and ``;``. UniProt writes locations from general to
    specific (``Cytoplasm, cytoskeleton, microtubule organizing center``): the most specific part the ontology
    knows wins. Unknown entries raise :class:`~locscope.errors.InputError`.

    Examples
    --------
    >>> parse_uniprot_location("SUBCELLULAR LOCATION: Nucleus, nucleolus {ECO:0000269}. Cytoplasm, cytosol.")
    ['nucleoli', 'cytosol']
    >>> parse_uniprot_location("Mitochondrion inner membrane; Multi-pass membrane protein.")
    ['mitochondria']
    """
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"SUBCELLULAR LOCATION:\s*", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\[[^\]]*\]:\s*", "", text)  # "[Isoform 2]: Nucleus."
    text = text.split("Note=")[0]
    out: list[str] = []
    for entry in re.split(r"[.;]", text):
        entry = entry.strip()
        if not entry or _UNIPROT_TOPOLOGY.match(entry):
            continue
        parts = [p.strip() for p in entry.split(",") if p.strip()]
        # candidates from most to least specific: "microtubule organizing center", "Cytoplasm, cytoskeleton, ...",
        # "cytoskeleton", ..., "Cytoplasm"
        candidates = [parts[i] for i in reversed(range(1, len(parts)))] + [entry] + parts[:1]
        found = next((c for c in candidates if c.lower() in _UNIPROT_LOWER), None)
        if found is None:
            raise InputError(f"UniProt location {entry!r} not in the ontology")
        level1 = _UNIPROT_LOWER[found.lower()]
        if level1 and level1 not in out:
            out.append(level1)
    return out


def map_terms(terms: Iterable[str], source: str) -> list[str]:
    """Level-1 classes of several terms of one vocabulary, unmapped ones dropped, duplicates removed, order kept.

    Parameters
    ----------
    terms : iterable of str
        Source terms, e.g. ``["Nucleoplasm", "Cytosol"]``.
    source : {'hpa', 'opencell', 'uniprot', 'deeploc', 'level1'}
        Vocabulary of the terms.
    """
    if source == "hpa":
        convert = from_hpa
    elif source == "opencell":
        convert = from_opencell
    elif source == "uniprot":
        convert = from_uniprot
    elif source == "deeploc":
        convert = from_deeploc
    elif source == "level1":
        convert = _check_level1
    else:
        raise InputError(f"vocabulary {source!r} not recognised; accepted: hpa, opencell, uniprot, deeploc, level1")
    out: list[str] = []
    for term in terms:
        level1 = convert(term)
        if level1 and level1 not in out:
            out.append(level1)
    return out


def hierarchy_labels(level1_classes: Iterable[str]) -> dict[str, list[str]]:
    """The ``labels`` dict of the store contract for a list of level-1 classes.

    Returns
    -------
    dict
        ``{"level1": [...], "level2": [...], "level3": [...], "subcell": [...]}``, each de-duplicated in order.
    """
    level1 = [_check_level1(c) for c in dict.fromkeys(level1_classes)]
    return {
        "level1": level1,
        "level2": list(dict.fromkeys(to_level2(c) for c in level1)),
        "level3": list(dict.fromkeys(to_level3(c) for c in level1)),
        "subcell": list(dict.fromkeys(to_subcell(c) for c in level1)),
    }
