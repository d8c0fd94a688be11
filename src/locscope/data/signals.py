"""Well-known targeting signals fused to a reporter: a literature panel for checking sequence -> localization models.

Each entry puts one signal on EGFP (which on its own is cytosolic and nuclear, diffusing through pores) at the
terminus where it works, and names the class it should raise (the level in the ontology and the class). A model moves
the reporter "the right way" when the fusion's probability of that class exceeds the reporter's own.
"""

from __future__ import annotations

from dataclasses import dataclass

# EGFP (GenBank AAB02572), 239 residues.
EGFP = ("MVSKGEELFTGVVPILVELDGDVNGHKFSVSGEGEGDATYGKLTLKFICTTGKLPVPWPTLVTTLTYGVQCFSRYPDHMKQHDFFKSAMPEGYVQERTIFFKDDG"
        "NYKTRAEVKFEGDTLVNRIELKGIDFKEDGNILGHKLEYNYNSHNVYIMADKQKNGIKVNFKIRHNIEDGSVQLADHYQQNTPIGDGPVLLPDNHYLSTQSALSK"
        "DPNEKRDHMVLLEFVTAAGITLGMDELYK")


@dataclass(frozen=True)
class TargetingSignal:
    """One signal: ``n_terminal`` replaces the reporter's start methionine, ``c_terminal`` is appended."""

    name: str
    level: str
    target: str
    n_terminal: str = ""
    c_terminal: str = ""
    source: str = ""

    def fuse(self, reporter: str = EGFP) -> str:
        """The fusion protein: ``n_terminal + reporter[1:] + c_terminal`` (or the reporter's own M when no N part)."""
        body = reporter[1:] if self.n_terminal else reporter
        return self.n_terminal + body + self.c_terminal


PANEL: tuple[TargetingSignal, ...] = (
    TargetingSignal("SV40 large-T NLS", "level3", "nucleus", n_terminal="MPKKKRKV", source="Kalderon 1984"),
    TargetingSignal("c-Myc NLS", "level3", "nucleus", n_terminal="MPAAKRVKLD", source="Dang & Lee 1988"),
    TargetingSignal("nucleoplasmin bipartite NLS", "level3", "nucleus", c_terminal="KRPAATKKAGQAKKKK",
                    source="Robbins 1991"),
    TargetingSignal("HIV-1 Rev NoLS", "level3", "nucleoli", n_terminal="MRQARRNRRRRWRERQR", source="Kubota 1989"),
    TargetingSignal("COX8A presequence", "level3", "mitochondria", n_terminal="MSVLTPLLLRGLTGSARRLPVPRAKIHSL",
                    source="Rizzuto 1989"),
    TargetingSignal("Su9 presequence (N. crassa ATP9)", "level3", "mitochondria",
                    n_terminal="MASTRVLASRLASQMAASAKVARPAVRVAQVSKRTIQTGSPLQTLKRTQMTSIVNATTRQAFQKRAYSS",
                    source="Westermann & Neupert 2000"),
    TargetingSignal("TOM20 N-terminal anchor", "level3", "mitochondria", n_terminal="MVGRNSAIAAGVCGALFIGYCIYFDRKRRSDPN",
                    source="Kanaji 2000"),
    TargetingSignal("PKI NES", "level3", "cytosol", c_terminal="NSNELALKLAGLDINK", source="Wen 1995"),
    TargetingSignal("calreticulin signal peptide + KDEL", "level2", "endoplasmic-reticulum",
                    n_terminal="MLLSVPLLLGLLGLAVA", c_terminal="KDEL", source="Munro & Pelham 1987"),
    TargetingSignal("preprolactin signal peptide + KDEL", "level3", "endomembrane-system",
                    n_terminal="MNSQGSAQKAGTLLLLLISNLLFCQNVQPLPICSG", c_terminal="KDEL", source="Munro & Pelham 1987"),
    TargetingSignal("Ig kappa leader (secreted)", "level3", "endomembrane-system", n_terminal="METDTLLLWVLLLWVPGSTGD",
                    source="Coloma 1992"),
    TargetingSignal("H-Ras CAAX tail", "level3", "plasma-membrane", c_terminal="KLNPPDESGPGCMSCKCVLS",
                    source="Hancock 1990"),
    TargetingSignal("Lyn myristoylation/palmitoylation", "level3", "plasma-membrane", n_terminal="MGCIKSKGKDS",
                    source="Inoue 2005"),
    TargetingSignal("PTS1 (SKL)", "level1", "peroxisomes", c_terminal="SKL", source="Gould 1989"),
)
