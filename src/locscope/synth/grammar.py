"""The motif grammar: where a protein goes, decided from its sequence alone by rules modelled on real sorting signals.

Every rule is a short motif with a detector (a regular expression or a window count), a position constraint and a set
of concrete variant strings. :func:`localize_sequence` reads a sequence and returns the compartments (with fractions)
and the motif positions that decided them; :func:`random_protein` writes a sequence for a target localization with
motif strings drawn from the variant sets, on a background with human amino-acid frequencies that carries no motif.

Motifs (positions are 0-based, ``end`` exclusive; ``N`` = near the N-terminus, ``C`` = at the C-terminus):

================  ======  =======================================================  =====================================
motif             where   detector                                                 modelled on
================  ======  =======================================================  =====================================
signal-peptide    N       K/R at 1-7 (no D/E before), then 15 residues with >= 9   Sec signal peptides (n + h region)
                          of LIVFMAWC and no D/E/K/R/P in the first 10
kdel              C       ``[KHR]DEL$``                                            ER lumen retrieval (KDEL/HDEL)
kkxx              C       ``K.?K..$``                                              di-lysine ER retrieval (KKXX)
tm-helix          any     ``[LIVFMAWC]{18,30}``                                    transmembrane helices
lysosomal-yxxo    C       ``GY..[LIVFM]$``                                         LAMP1 tyrosine motif (GYQTI)
dileucine         C       ``[DE]...L[LI]`` in the last 15 residues                 acidic di-leucine sorting signals
mito-presequence  N       residues 1-25: no D/E, >= 4 R/K, >= 8 of LAIVF           amphipathic matrix presequences
pts1              C       ``[SAC][KRH][LM]$``                                      peroxisomal PTS1 (SKL)
caax              C       ``C[AILVMFST]{2}[A-Z]$``                                 CAAX prenylation (Ras)
myristoyl         N       ``^MG[^DEFRKHPYW]{3}[ST]``                               N-myristoylation (Src)
nls               any     ``[KR]{5,6}`` (not a NoLS)                               SV40-type monopartite NLS
nls-bipartite     any     ``[KR]{2}.{10,12}[KR]{4}``                               nucleoplasmin bipartite NLS
nes               any     ``L[^P]{3}[LIVFM][^P]{2}L[^P][LI]``                      PKI-type leucine-rich NES
nols              any     ``[KR]{7,}`` with >= 5 R                                 R-rich nucleolar signals
gar               any     ``(RGG.{0,2}){4,}``                                      fibrillarin GAR domain
rs-domain         any     ``(RS|SR){5,}``                                          SR-protein RS domains (speckles)
sim               any     ``[VI][DEIV][VI][VI][DES]{3}``                           SUMO-interacting motifs (PML bodies)
lipid-hairpin     any     hydrophobic ``P....SP...P`` hydrophobic                   oleosin proline-knot hairpin
lifeact           N       ``G[VI][AS][DE]L[IVL][KR][KR]F[ED][ST][IVL]S[KR]EE``       Lifeact (Abp140 1-17)
sxip              any     ``[KR][^DE]{0,2}S[^DE]IP[^DE]{0,2}[KR]``                 EB1-binding SxIP (+TIPs)
tau-repeat        any     ``VQI[IV][NY]K``                                         tau microtubule-binding repeats
if-motif          any     ``TYR[KR][LI]LEGE``                                      IF rod helix-termination motif
pact              any     ``E[LIM][RK]R[LIM]EE[LIM]``                              PACT-like centrosome targeting
================  ======  =======================================================  =====================================

Decision (first matching rule wins; see :func:`localize_sequence`):

1. mito-presequence (without a signal peptide) -> mitochondria.
2. signal-peptide: + kdel -> endoplasmic-reticulum; + a TM helix -> as a membrane protein (rule 3);
   alone (secreted) -> vesicles 0.7 + golgi-apparatus 0.3.
3. TM helices: + nls -> nuclear-membrane; kkxx -> endoplasmic-reticulum; lysosomal-yxxo -> lysosomes;
   dileucine -> endosomes; a single TM starting before residue 40 without a signal peptide (signal anchor, type II)
   -> golgi-apparatus; a single TM ending in the last 30 residues (tail anchor) -> endoplasmic-reticulum;
   otherwise -> plasma-membrane.
4. lipid-hairpin -> lipid-droplets.  5. pts1 -> peroxisomes.  6. caax or myristoyl -> plasma-membrane.
7. gar -> nucleoli-fibrillar-center; nols -> nucleoli; rs-domain -> nuclear-speckles; sim + nls -> nuclear-bodies;
   nls (either kind) -> nucleoplasm, or with a nes -> nucleoplasm ``s/(s+2)`` + cytosol ``2/(s+2)``, where the NLS
   strength ``s`` is its number of K/R minus 2 (a stronger NLS keeps more of the protein in the nucleus).
8. lifeact -> actin-filaments; sxip or tau-repeat -> microtubules; if-motif -> intermediate-filaments;
   pact -> centrosome.
9. nothing (or a nes alone) -> cytosol.

Train / held-out variants: every motif's variant strings are split by a stable hash (``crc32("name:variant") % 4 == 0``
-> ``"heldout"``, about a quarter), so a model trained on ``split="train"`` proteins can be tested on motif strings it
never saw (``split="heldout"``). :func:`variant_split` tells which side a string is on.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping

import numpy as np

from locscope.errors import InputError

#: Human proteome amino-acid frequencies (UniProt human reference proteome, %).
HUMAN_AA_FREQ: dict[str, float] = {
    "A": 7.0, "R": 5.6, "N": 3.6, "D": 4.7, "C": 2.3, "Q": 4.7, "E": 7.1, "G": 6.6, "H": 2.6, "I": 4.3,
    "L": 10.0, "K": 5.7, "M": 2.1, "F": 3.7, "P": 6.3, "S": 8.3, "T": 5.4, "W": 1.2, "Y": 2.7, "V": 6.0,
}
AMINO_ACIDS = "".join(HUMAN_AA_FREQ)
_HYD = "LIVFMAWC"
Split = Literal["train", "heldout", "any"]


@dataclass(frozen=True)
class Motif:
    """A sorting signal: where it sits, its detector and its concrete variant strings."""

    name: str
    where: Literal["N", "C", "internal", "anchor"]
    pattern: str
    variants: tuple[str, ...] = field(default=(), repr=False)


@dataclass
class LocalizationCall:
    """Output of :func:`localize_sequence`.

    Attributes
    ----------
    compartments : dict of str to float
        Level-1 compartment -> fraction of the protein (fractions sum to 1).
    motifs : list of tuple (str, int, int)
        ``(motif name, start, end)`` of every detected motif (0-based, end exclusive).
    rule : str
        The grammar rule that decided the localization, e.g. ``"signal-peptide+kdel"``.
    """

    compartments: dict[str, float]
    motifs: list[tuple[str, int, int]]
    rule: str

    @property
    def deciding_motifs(self) -> list[tuple[str, int, int]]:
        """The detected motifs named in :attr:`rule` (the residues that decided the localization)."""
        names = set(self.rule.split("+"))
        return [m for m in self.motifs if m[0] in names]


def variant_split(motif: str, variant: str) -> Literal["train", "heldout"]:
    """``'heldout'`` for about a quarter of each motif's variant strings (stable hash), else ``'train'``."""
    return "heldout" if zlib.crc32(f"{motif}:{variant}".encode()) % 4 == 0 else "train"


# ---------------------------------------------------------------------------------------------- variant generation
def _enumerate(template: list[tuple[str, ...]], rng: np.random.Generator, n: int) -> list[str]:
    """Up to ``n`` distinct strings choosing one alternative per template position (seeded sampling)."""
    out: set[str] = set()
    for _ in range(n * 20):
        out.add("".join(str(alts[int(rng.integers(len(alts)))]) for alts in template))
        if len(out) >= n:
            break
    return sorted(out)


def _hydrophobic(rng: np.random.Generator, n: int) -> str:
    pool = "LLLLIIIVVVFFAAAMWC"
    return "".join(pool[i] for i in rng.integers(len(pool), size=n))


def _build_variants() -> dict[str, tuple[str, ...]]:
    rng = np.random.default_rng(20240607)  # fixed: the variant sets are part of the documented grammar
    t = lambda *alts: tuple(alts)  # noqa: E731  (one template position)
    v: dict[str, list[str]] = {}
    v["nls"] = _enumerate([t(*"PAGS"), t(*"KR"), t("K"), t(*"KR"), t(*"KR"), t("K"), t(*"VIETDN")], rng, 120)
    v["nls-bipartite"] = _enumerate([t("K"), t(*"RK")] + [t(*"AGSTPQNL")] * 10 + [t("K"), t(*"KR"), t(*"KR"), t("K"),
                                                                                  t(*"LENS")], rng, 150)
    v["nes"] = _enumerate([t("L"), t(*"AQSE"), t(*"LAE"), t(*"KQRE"), t(*"LIVFM"), t(*"ASE"), t(*"GEN"), t("L"),
                           t(*"DTNS"), t(*"IL")], rng, 150)
    v["nols"] = _enumerate([t("R"), t(*"RK"), t("R"), t(*"KR"), t("R"), t(*"RK"), t("R"), t("", "R", "K", "RR")], rng, 60)
    v["gar"] = _enumerate([t("RGG"), t(*"FYGA"), t("RGG"), t("RGG", "RGGF"), t(*"FYS"), t("RGG"), t("RGG", "RGGY")],
                          rng, 80)
    v["rs-domain"] = _enumerate([t("", "S", "D", "K"), t("RSRS"), t("RSRSRS"), t("", "RS", "RSRS"), t("", "P", "G")],
                                rng, 50)
    v["sim"] = _enumerate([t(*"VI"), t(*"DEIV"), t(*"VI"), t(*"VI"), t(*"DES"), t(*"DE"), t(*"DES"), t("", "E", "D")],
                          rng, 120)
    v["kdel"] = _enumerate([t(*"SAETNG"), t(*"KHR"), t("DEL")], rng, 18)
    v["kkxx"] = _enumerate([t(*"EST"), t("K", "KA", "KS"), t("K"), t(*"ATSQEN"), t(*"ATSQEN")], rng, 80)
    v["lysosomal-yxxo"] = _enumerate([t(*"SAT"), t("G"), t("Y"), t(*"QNEATS"), t(*"TRQA"), t(*"ILVFM")], rng, 120)
    v["dileucine"] = _enumerate([t(*"DE"), t(*"RKQSTA"), t(*"RKQSTA"), t(*"QSTAE"), t("L"), t(*"LI"),
                                 t("", "S", "SE", "TQ")], rng, 150)
    v["pts1"] = _enumerate([t(*"SAC"), t(*"KRH"), t(*"LM")], rng, 18)
    v["caax"] = _enumerate([t(*"KRG"), t("C"), t(*"VIAL"), t(*"LIVAM"), t(*"SMQALF")], rng, 150)
    v["myristoyl"] = _enumerate([t("G"), t(*"ASQNCL"), t(*"QALST"), t(*"LSAQVC"), t(*"ST"), t(*"KRA")], rng, 150)
    v["lifeact"] = _enumerate([t("G"), t(*"VI"), t(*"AS"), t(*"DE"), t("L"), t(*"IVL"), t(*"KR"), t(*"KR"), t("F"),
                               t(*"ED"), t(*"ST"), t(*"IVL"), t("S"), t(*"KR"), t("EE")], rng, 150)
    v["sxip"] = _enumerate([t(*"KR"), t(*"PASTN"), t("S"), t(*"KRATN"), t("IP"), t(*"RK"), t(*"PSTG")], rng, 150)
    v["tau-repeat"] = _enumerate([t(*"PGSK"), t("VQI"), t(*"IV"), t(*"NY"), t("K"), t(*"KPSV")], rng, 64)
    v["if-motif"] = _enumerate([t("TYR"), t(*"KR"), t(*"LI"), t("LEGE"), t(*"EDNQS")], rng, 20)
    v["pact"] = _enumerate([t(*"QASK"), t("E"), t(*"LIM"), t(*"RK"), t("R"), t(*"LIM"), t("EE"), t(*"LIM")], rng, 150)
    v["signal-peptide"] = sorted({  # after the initiator M: n-region, h-region (8-12), cleavage region
        "".join([rng.choice(list("ASPGT")), rng.choice(list("KR")), _hydrophobic(rng, int(rng.integers(8, 13))),
                 rng.choice(list("SGTQN")), rng.choice(list("AGS")), rng.choice(list("QHEN")), rng.choice(list("AGS"))])
        for _ in range(150)})
    v["tm-helix"] = sorted({rng.choice(list("KR")) + _hydrophobic(rng, int(rng.integers(19, 24))) + rng.choice(["RK", "KR", "RR"])
                            for _ in range(150)})
    v["lipid-hairpin"] = sorted({"R" + _hydrophobic(rng, int(rng.integers(11, 15))) + "P" + _hydrophobic(rng, 5) + "SP"
                                 + _hydrophobic(rng, 3) + "P" + _hydrophobic(rng, int(rng.integers(11, 15))) + "K"
                                 for _ in range(150)})
    v["mito-presequence"] = sorted({_presequence(rng) for _ in range(300)})
    return {name: tuple(vs) for name, vs in v.items()}


def _presequence(rng: np.random.Generator) -> str:
    """A 24-residue amphipathic helix after the initiator M: hydrophobic face every 3.6 residues, R/K/S elsewhere."""
    out = []
    for i in range(24):
        face = (i * 100) % 360 < 140
        pool = "LLLAAIFV" if face else "RRRSKGTAQS"
        out.append(pool[int(rng.integers(len(pool)))])
    return "".join(out)


# ---------------------------------------------------------------------------------------------------- detectors
_RE = {
    "kdel": re.compile(r"[KHR]DEL$"),
    "kkxx": re.compile(r"K.?K..$"),
    "tm-helix": re.compile(r"[LIVFMAWC]{18,30}"),
    "lysosomal-yxxo": re.compile(r"GY..[LIVFM]$"),
    "dileucine": re.compile(r"[DE]...L[LI]"),
    "pts1": re.compile(r"[SAC][KRH][LM]$"),
    "caax": re.compile(r"C[AILVMFST]{2}[A-Z]$"),
    "myristoyl": re.compile(r"^MG[^DEFRKHPYW]{3}[ST]"),
    "nls": re.compile(r"[KR]{5,}"),
    "nls-bipartite": re.compile(r"(?=([KR]{2}[^KR].{9,11}[KR]{4}))"),
    "nes": re.compile(r"L[^P]{3}[LIVFM][^P]{2}L[^P][LI]"),
    "gar": re.compile(r"(?:RGG.{0,2}){4,}"),
    "rs-domain": re.compile(r"(?:RS|SR){5,}"),
    "sim": re.compile(r"[VI][DEIV][VI][VI][DES]{3}"),
    "lipid-hairpin": re.compile(r"[LIVFMAWC]{10,16}P[LIVFMAWC]{4,6}SP[LIVFMAWC]{2,4}P[LIVFMAWC]{8,16}"),
    "lifeact": re.compile(r"G[VI][AS][DE]L[IVL][KR][KR]F[ED][ST][IVL]S[KR]EE"),
    "sxip": re.compile(r"[KR][^DE]{0,2}S[^DE]IP[^DE]{0,2}[KR]"),
    "tau-repeat": re.compile(r"VQI[IV][NY]K"),
    "if-motif": re.compile(r"TYR[KR][LI]LEGE"),
    "pact": re.compile(r"E[LIM][RK]R[LIM]EE[LIM]"),
}

_WHERE = {"signal-peptide": "N", "mito-presequence": "N", "myristoyl": "N", "lifeact": "N", "kdel": "C", "kkxx": "C",
          "lysosomal-yxxo": "C", "dileucine": "C", "pts1": "C", "caax": "C"}


def _find(name: str, seq: str) -> list[tuple[str, int, int]]:
    if name == "nls-bipartite":
        return [(name, m.start(1), m.end(1)) for m in _RE[name].finditer(seq)]
    if name == "dileucine":
        start = max(0, len(seq) - 15)
        return [(name, start + m.start(), start + m.end()) for m in _RE[name].finditer(seq[start:])]
    if name == "signal-peptide":
        for p in range(1, min(8, len(seq))):
            if seq[p] in "DE":
                break
            h = seq[p + 1:p + 16]
            if seq[p] in "KR" and len(h) == 15 and sum(c in _HYD for c in h) >= 9 \
                    and not any(c in "DEKRP" for c in h[:10]):
                return [(name, 0, p + 16)]
        return []
    if name == "mito-presequence":
        window = seq[1:26]
        ok = (len(window) >= 20 and not any(c in "DE" for c in window) and sum(c in "RK" for c in window) >= 4
              and sum(c in "LAIVF" for c in window) >= 8)
        return [(name, 1, 1 + len(window))] if ok else []
    return [(name, m.start(), m.end()) for m in _RE[name].finditer(seq)]


def find_motifs(sequence: str) -> list[tuple[str, int, int]]:
    """Every motif of the grammar found in ``sequence`` as ``(name, start, end)``, sorted by position.

    NoLS are R-rich K/R runs of 7 or more (reported as ``nols``, not ``nls``); TM helices inside a lipid hairpin or a
    signal peptide's h-region are not reported as ``tm-helix``.
    """
    seq = sequence.upper()
    hits: list[tuple[str, int, int]] = []
    for name in list(_RE) + ["signal-peptide", "mito-presequence"]:
        for hit in _find(name, seq):
            if name == "nls":
                run = seq[hit[1]:hit[2]]
                if len(run) >= 7 and run.count("R") >= 5:
                    hit = ("nols", hit[1], hit[2])
                elif len(run) > 6:
                    continue  # long K-rich runs: neither a classical NLS nor an R-rich NoLS
            hits.append(hit)
    hairpins = [(s, e) for n, s, e in hits if n == "lipid-hairpin"]
    hits = [h for h in hits if not (h[0] == "tm-helix" and any(s <= h[1] < e for s, e in hairpins))]
    # a long hydrophobic helix starting inside the signal-peptide window is an uncleaved signal anchor, not a peptide
    anchors = [h for h in hits if h[0] == "tm-helix"]
    hits = [h for h in hits if not (h[0] == "signal-peptide" and any(a[1] < h[2] for a in anchors))]
    return sorted(hits, key=lambda h: (h[1], h[0]))


# ------------------------------------------------------------------------------------------------------ decision
def localize_sequence(sequence: str) -> LocalizationCall:
    """Decide a protein's compartments from its sequence with the motif grammar (see the module docstring).

    Parameters
    ----------
    sequence : str
        Amino acids (one-letter codes, case-insensitive).

    Returns
    -------
    LocalizationCall
        ``compartments`` (level-1 name -> fraction, summing to 1), ``motifs`` found, the deciding ``rule``.

    Examples
    --------
    >>> localize_sequence("M" + "A" * 30 + "PKKKRKV" + "A" * 30).compartments
    {'nucleoplasm': 1.0}
    """
    seq = sequence.upper()
    motifs = find_motifs(seq)
    found: dict[str, list[tuple[str, int, int]]] = {}
    for m in motifs:
        found.setdefault(m[0], []).append(m)
    has = found.__contains__

    def call(compartments: dict[str, float], rule: str) -> LocalizationCall:
        return LocalizationCall(compartments, motifs, rule)

    if has("mito-presequence") and not has("signal-peptide"):
        return call({"mitochondria": 1.0}, "mito-presequence")
    tms = found.get("tm-helix", [])
    if has("signal-peptide"):
        if has("kdel"):
            return call({"endoplasmic-reticulum": 1.0}, "signal-peptide+kdel")
        if not tms:
            return call({"vesicles": 0.7, "golgi-apparatus": 0.3}, "signal-peptide")
    if tms:
        prefix = "signal-peptide+tm-helix" if has("signal-peptide") else "tm-helix"
        if has("nls") or has("nls-bipartite"):
            return call({"nuclear-membrane": 1.0}, prefix + ("+nls" if has("nls") else "+nls-bipartite"))
        for tail, compartment in (("kkxx", "endoplasmic-reticulum"), ("lysosomal-yxxo", "lysosomes"),
                                  ("dileucine", "endosomes")):
            if has(tail):
                return call({compartment: 1.0}, f"{prefix}+{tail}")
        if len(tms) == 1 and not has("signal-peptide") and tms[0][1] < 40:
            return call({"golgi-apparatus": 1.0}, "tm-helix")  # type II signal anchor
        if len(tms) == 1 and not has("signal-peptide") and tms[0][2] > len(seq) - 30:
            return call({"endoplasmic-reticulum": 1.0}, "tm-helix")  # tail anchor
        return call({"plasma-membrane": 1.0}, prefix)
    if has("lipid-hairpin"):
        return call({"lipid-droplets": 1.0}, "lipid-hairpin")
    if has("pts1"):
        return call({"peroxisomes": 1.0}, "pts1")
    if has("caax"):
        return call({"plasma-membrane": 1.0}, "caax")
    if has("myristoyl"):
        return call({"plasma-membrane": 1.0}, "myristoyl")
    if has("gar"):
        return call({"nucleoli-fibrillar-center": 1.0}, "gar")
    if has("nols"):
        return call({"nucleoli": 1.0}, "nols")
    if has("rs-domain"):
        return call({"nuclear-speckles": 1.0}, "rs-domain")
    nls_name = "nls" if has("nls") else "nls-bipartite" if has("nls-bipartite") else None
    if nls_name is not None:
        if has("sim"):
            return call({"nuclear-bodies": 1.0}, f"{nls_name}+sim")
        if has("nes"):
            strength = max(sum(c in "KR" for c in seq[s:e]) for _, s, e in found[nls_name]) - 2
            nuclear = round(strength / (strength + 2.0), 4)
            return call({"nucleoplasm": nuclear, "cytosol": round(1.0 - nuclear, 4)}, f"{nls_name}+nes")
        return call({"nucleoplasm": 1.0}, nls_name)
    for name, compartment in (("lifeact", "actin-filaments"), ("sxip", "microtubules"), ("tau-repeat", "microtubules"),
                              ("if-motif", "intermediate-filaments"), ("pact", "centrosome")):
        if has(name):
            return call({compartment: 1.0}, name)
    return call({"cytosol": 1.0}, "nes" if has("nes") else "default")


# ------------------------------------------------------------------------------------------------ generation
#: Target localization (sorted compartment names) -> the motif combinations that produce it.
RECIPES: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {
    ("nucleoplasm",): (("nls",), ("nls-bipartite",)),
    ("cytosol", "nucleoplasm"): (("nls", "nes"),),
    ("nucleoli",): (("nols",),),
    ("nucleoli-fibrillar-center",): (("gar",),),
    ("nuclear-speckles",): (("rs-domain",),),
    ("nuclear-bodies",): (("nls", "sim"),),
    ("nuclear-membrane",): (("nls", "tm-helix"),),
    ("cytosol",): ((), ("nes",)),
    ("endoplasmic-reticulum",): (("signal-peptide", "kdel"), ("tm-helix", "kkxx"), ("tail-anchor",)),
    ("golgi-apparatus",): (("signal-anchor",),),
    ("golgi-apparatus", "vesicles"): (("signal-peptide",),),
    ("endosomes",): (("tm-helix", "dileucine"),),
    ("lysosomes",): (("tm-helix", "lysosomal-yxxo"), ("signal-peptide", "tm-helix", "lysosomal-yxxo")),
    ("peroxisomes",): (("pts1",),),
    ("lipid-droplets",): (("lipid-hairpin",),),
    ("mitochondria",): (("mito-presequence",),),
    ("plasma-membrane",): (("caax",), ("myristoyl",), ("signal-peptide", "tm-helix"), ("tm-helix", "tm-helix")),
    ("actin-filaments",): (("lifeact",),),
    ("microtubules",): (("sxip",), ("tau-repeat",)),
    ("intermediate-filaments",): (("if-motif",),),
    ("centrosome",): (("pact",),),
}
# signal anchors and tail anchors are TM helices placed near a terminus
_ALIASES = {"signal-anchor": "tm-helix", "tail-anchor": "tm-helix"}

VARIANTS: dict[str, tuple[str, ...]] = _build_variants()


def _detected_alone(name: str, variant: str) -> bool:
    """Whether the detector finds ``variant`` in a neutral poly-G context at its motif's position."""
    where = _WHERE.get(name, "internal")
    context = ("M" + variant + "G" * 60) if where == "N" else ("G" * 60 + variant) if where == "C" \
        else ("M" + "G" * 50 + variant + "G" * 50)
    return any(hit[0] == name for hit in find_motifs(context))


VARIANTS = {name: tuple(v for v in vs if _detected_alone(name, v)) for name, vs in VARIANTS.items()}
MOTIFS: dict[str, Motif] = {
    name: Motif(name, _WHERE.get(name, "internal"), _RE[name].pattern if name in _RE else "window rule", VARIANTS[name])
    for name in VARIANTS
}


def grammar_targets() -> list[tuple[str, ...]]:
    """The target localizations :func:`random_protein` can write (sorted compartment-name tuples)."""
    return list(RECIPES)


@functools.lru_cache(maxsize=None)
def motif_variants(name: str, split: Split = "any") -> tuple[str, ...]:
    """The variant strings of motif ``name`` on the given side of the train / held-out split."""
    if name not in VARIANTS:
        raise InputError(f"unknown motif {name!r}; known motifs: {', '.join(VARIANTS)}")
    if split == "any":
        return VARIANTS[name]
    if split not in ("train", "heldout"):
        raise InputError(f"split={split!r}: accepted values are 'train', 'heldout', 'any'")
    return tuple(v for v in VARIANTS[name] if variant_split(name, v) == split)


def background_sequence(rng: np.random.Generator, length: int) -> str:
    """``length`` residues drawn with human amino-acid frequencies (may contain motifs by chance)."""
    p = np.array(list(HUMAN_AA_FREQ.values()))
    idx = rng.choice(len(AMINO_ACIDS), size=length, p=p / p.sum())
    return "".join(AMINO_ACIDS[i] for i in idx)


def _target_key(compartments: Mapping[str, float] | Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(compartments, str):
        names = [compartments]
    elif isinstance(compartments, Mapping):
        names = [k for k, v in compartments.items() if v > 0]
    else:
        names = list(compartments)
    return tuple(sorted(names))


def random_protein(compartments: Mapping[str, float] | Iterable[str] | str, rng: np.random.Generator,
                   length: int = 200, split: Split = "train", max_tries: int = 200) -> tuple[str, list[tuple[str, int, int]]]:
    """Write a protein sequence that the grammar sends to ``compartments``.

    Parameters
    ----------
    compartments : dict, iterable of str or str
        The target localization; its set of names must be one of :func:`grammar_targets` (fractions are decided by
        the grammar, e.g. a shuttling NLS + NES protein).
    rng : numpy.random.Generator
    length : int
        Sequence length (>= 80).
    split : {'train', 'heldout', 'any'}
        Which motif variant strings to draw from (see :func:`variant_split`).
    max_tries : int
        Backgrounds are redrawn until no chance motif changes the call.

    Returns
    -------
    sequence : str
    motifs : list of tuple (str, int, int)
        The inserted motifs ``(name, start, end)``; ``localize_sequence(sequence)`` reports them too.

    Raises
    ------
    InputError
        For a target the grammar cannot produce, a too short ``length`` or an unknown ``split``.

    Examples
    --------
    >>> seq, motifs = random_protein({"mitochondria": 1.0}, np.random.default_rng(0))
    >>> localize_sequence(seq).compartments
    {'mitochondria': 1.0}
    """
    key = _target_key(compartments)
    if key not in RECIPES:
        raise InputError(f"random_protein: the grammar has no rule for {list(key)}; "
                         f"targets: {', '.join('+'.join(k) for k in RECIPES)}")
    if length < 80:
        raise InputError(f"random_protein: length={length} is too short (>= 80 residues)")
    recipes = RECIPES[key]
    for _ in range(max_tries):
        recipe = recipes[int(rng.integers(len(recipes)))]
        seq, inserted = _assemble(recipe, rng, length, split)
        result = localize_sequence(seq)
        if tuple(sorted(result.compartments)) == key and all(m in result.motifs for m in inserted):
            return seq, inserted
    raise InputError(f"random_protein: could not write a sequence for {list(key)} in {max_tries} tries "
                     f"(length={length}); try a longer length")


def _assemble(recipe: tuple[str, ...], rng: np.random.Generator, length: int,
              split: Split) -> tuple[str, list[tuple[str, int, int]]]:
    """Place the recipe's motifs on a fresh background: N-terminal ones after the initiator M, C-terminal ones at the
    end, anchors near their terminus, the rest at random non-overlapping internal positions."""
    seq = list("M" + background_sequence(rng, length - 1))
    placed: list[tuple[str, int, int]] = []
    taken = np.zeros(length, dtype=bool)

    def put(name: str, start: int, text: str) -> None:
        seq[start:start + len(text)] = list(text)
        taken[max(start - 3, 0):start + len(text) + 3] = True
        placed.append((name, start, start + len(text)))

    def pick(name: str) -> str:
        options = motif_variants(_ALIASES.get(name, name), split)
        return options[int(rng.integers(len(options)))]

    for name in recipe:
        text = pick(name)
        motif = _ALIASES.get(name, name)
        where = _WHERE.get(name, "internal")
        if name == "signal-anchor":
            put(motif, int(rng.integers(8, 16)), text)
        elif name == "tail-anchor":
            put(motif, length - len(text) - int(rng.integers(3, 10)), text)
        elif where == "N":
            put(motif, 1, text)
        elif where == "C":
            put(motif, length - len(text), text)
        else:
            lo, hi = 45, length - len(text) - 35
            free = [s for s in range(lo, max(hi, lo + 1)) if not taken[s:s + len(text)].any()]
            if not free:
                raise InputError(f"random_protein: length={length} leaves no room for motif {name!r}")
            put(motif, int(free[int(rng.integers(len(free)))]), text)
    sequence = "".join(seq)
    # report the detector's span of each inserted motif (the detector may cover flanks differently)
    found = find_motifs(sequence)
    reported = []
    for name, s, e in placed:
        overlapping = [m for m in found if m[0] == name and m[1] < e and s < m[2]]
        reported.append(overlapping[0] if overlapping else (name, s, e))
    return sequence, reported
