"""``locscope localize`` / ``explain`` with a CELL-E 2 model: sequence -> one-pass images in standard cells -> shares.

The ``'image'`` method of :mod:`locscope.pipelines.localize` with CELL-E 2 as the generator: each sequence's protein
image is generated (``passes`` forward passes, one by default) in ``samples`` standard simulator cells (the same cells
as CELL-Diff's, :func:`locscope.pipelines.readout.standard_cells`; CELL-E 2 sees their nucleus image only), and the
probability map of each image (CELL-E 2's "PDF") is unmixed against the cell's compartment patterns
(:func:`locscope.pipelines.readout.unmix_compartments`); level-1 shares are averaged over the cells and summed into
level-3 / level-2 probabilities. CELL-E 2 has no compartment head, so ``'head'`` / ``'combined'`` do not apply.

Every sequence sees the same cells and the same Gumbel uniforms per cell (common random numbers): a prediction does not
depend on the other sequences of its batch, and differences between two sequences come from the sequences alone.
Sequences longer than the model's residue limit keep both termini (:func:`locscope.utils.sequences.keep_termini`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from locscope.errors import ArgumentError
from locscope.pipelines.readout import Localization, level_probabilities, standard_cells, unmix_compartments
from locscope.utils.progress import track
from locscope.utils.sequences import keep_termini


class Celle2LocalizationPredictor:
    """Sequence -> localization probabilities with a CELL-E 2 model (module docstring).

    Parameters
    ----------
    model : locscope.models.celle2.Celle2
        In eval mode, with locscope's sequence encoder or a released one.
    samples : int
        Standard cells (= generated images) per sequence, K >= 1.
    passes : int
        Decoding passes per image (>= 1).
    batch_size : int
        Sequences per network batch (each expands to ``samples`` rows).
    seed : int
        Seeds the shared Gumbel uniforms.
    """

    method = "image"

    def __init__(self, model, samples: int = 4, passes: int = 1, batch_size: int = 16, seed: int = 0) -> None:
        from locscope.models.celle2 import normalize_nucleus

        if samples < 1:
            raise ArgumentError("samples", f"={samples}: need at least 1 generated image per sequence")
        if passes < 1:
            raise ArgumentError("passes", f"={passes}: must be >= 1")
        if batch_size < 1:
            raise ArgumentError("batch_size", f"={batch_size}: need at least 1 sequence per batch")
        self.model, self.samples, self.passes, self.batch_size = model, samples, passes, batch_size
        cfg = model.config
        self.device = next(model.parameters()).device
        self.cells = standard_cells(cfg.image_size, ("nucleus",), samples)
        nucleus = torch.from_numpy(np.stack([c.landmarks[:1] for c in self.cells])).to(self.device)
        with torch.no_grad():
            self.nucleus = model.encode_nucleus(normalize_nucleus(nucleus))  # (K, S)
        generator = torch.Generator().manual_seed(seed)
        self.uniforms = [torch.rand(samples, cfg.image_seq_len, cfg.protein_codebook_size, generator=generator)
                         for _ in range(passes)]

    @torch.no_grad()
    def generate(self, sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(decoded images, probability maps)``, each ``(len(sequences), K, H, W)`` in [0, 1]."""
        from locscope.diffusion.celle2_sampler import decode_image_tokens

        cfg, k = self.model.config, self.samples
        # the full text stream for every sequence: the transformer attends to padding, so padding to the batch's
        # longest sequence would make a prediction depend on its batch
        text = self.model.tokenize([keep_termini(s, cfg.text_seq_len) for s in sequences])
        n = len(sequences)  # rows [s0 c0, s0 c1, ..., s1 c0, ...]
        sample = decode_image_tokens(self.model, text.repeat_interleave(k, dim=0), self.nucleus.repeat(n, 1),
                                     passes=self.passes, uniforms=[u.repeat(n, 1, 1) for u in self.uniforms])
        decoded = self.model.decode_protein(sample.tokens).float().clamp(0, 1)
        probability = self.model.probability_map(sample.probabilities).float()
        shape = (n, k, cfg.image_size, cfg.image_size)
        return decoded.cpu().numpy().reshape(shape), probability.cpu().numpy().reshape(shape)

    def predict(self, sequences: Sequence[str], progress: bool = False, keep_images: bool = False):
        """Localization of ``sequences`` (amino-acid strings of any length), batched.

        Returns
        -------
        locscope.pipelines.localize.Localization
            Level-3 / level-2 probabilities and the level-1 shares; ``images`` = the decoded images when
            ``keep_images``.
        """
        level3, level2, level1, images = [], [], [], []
        starts = range(0, len(sequences), self.batch_size)
        for start in track(starts, "localizing (CELL-E 2 images)", enabled=progress and len(starts) > 1):
            decoded, probability = self.generate(list(sequences[start:start + self.batch_size]))
            shares = np.array([[unmix_compartments(pdf, cell) for pdf, cell in zip(row, self.cells)]
                               for row in probability]).mean(1)
            p3, p2 = level_probabilities(shares)
            level3.append(p3)
            level2.append(p2)
            level1.append(shares)
            if keep_images:
                images.append(decoded)
        return Localization(np.concatenate(level3), np.concatenate(level2), np.concatenate(level1),
                            np.concatenate(images) if keep_images else None)
