"""``locscope localize``: level-3, level-2 (and level-1) localization probabilities of protein sequences.

Method (selectable with ``method``):

``'localizer'`` (default)
    The sequence localizer (:mod:`locscope.models.localizer`; bundled ``localizer-small``, trained on 12,269 real
    proteins of SCL2205 + OpenCell + DeepLoc 1.0): independent (multi-label) probabilities of every level-3, level-2
    and level-1 class. Any length: proteins longer than the model's ``max_length`` keep both termini.

The other methods use a generator: a CELL-Diff model (``model`` a CELL-Diff directory or bundled name; default ``celldiff-64``) or a
latent diffusion model (``latent-tiny``; its standard cells add the nucleus image its distance map is made from); a
generator given without a method runs ``'combined'``:

``'image'``
    Generate the protein's image in ``samples`` standard simulator cells (fixed landmark cells rendered by
    :func:`locscope.synth.render_cell` with seeds ``readout.STANDARD_CELL_SEED + k``), then read off the compartment
    fractions of each generated image by non-negative least-squares unmixing against the cell's ground-truth compartment
    patterns (blurred and illuminated exactly like the simulator's optics, plus a constant background term): the image
    is modelled as ``background + sum_c a_c * pattern_c`` and ``a_c / sum(a)`` is compartment ``c``'s share of the
    protein. On simulator images with known fractions this recovers the level-3 fractions to a total-variation error of
    ~0.03. Level-1 shares are summed into level-2 and level-3 classes and averaged over the ``samples`` images.
``'head'``
    The model's sequence heads (one encoder pass, no image generation). Models with the compartment bottleneck have a
    fraction head over level-1 compartments: level 3 is the mean of the level-3 head and the fraction head summed into
    level-3 classes, level 2 the fraction head summed into level-2 classes. Models without it give level 3 only
    (level-2 classes that split the endomembrane system are left empty).
``'combined'``
    ``weight * head + (1 - weight) * image`` at level 3 and (with a fraction head) at level 2; without a fraction head
    level 2 takes the image's split of each level-3 class.

Every sequence sees the same standard cells and the same initial noise (common random numbers), so a prediction does
not depend on the other sequences in the batch, and differences between two sequences (e.g. a mutant) come from the
sequences alone.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from locscope.errors import ArgumentError, InputError
from locscope.models import hub
from locscope.models.latent import LATENT_DEFAULT_GUIDANCE, LATENT_DEFAULT_STEPS, LatentDiffusion
from locscope.pipelines.readout import (  # noqa: F401  (Localization: this module's result type, kept importable here)
    LEVEL2_CLASSES, LEVEL3_CLASSES, Localization, level2_from_level3, level_probabilities, sequence_head_probabilities,
    standard_cells, unmix_compartments,
)
from locscope.utils.progress import track

Method = Literal["localizer", "image", "head", "combined"]
METHODS: tuple[str, ...] = ("localizer", "image", "head", "combined")
DEFAULT_LOCALIZER = "localizer-small"
STREAM_CHUNK = 512  # sequences read, predicted and written at a time


# ------------------------------------------------------------------------------------------------ generation
GENERATORS = ("celldiff", "latent")  # model families the image methods run


def generator_landmarks(model) -> tuple[str, ...]:
    """The landmark images a generator reads, in order: CELL-Diff its ``landmark_channels``; a latent diffusion
    model the nucleus (for the distance map) and then its ``landmark_channels``."""
    return model.landmark_inputs if isinstance(model, LatentDiffusion) else tuple(model.config.landmark_channels)


def noise_shape(model) -> tuple[int, int, int]:
    """Shape of one generated image's initial noise (CELL-Diff: the image; latent diffusion: the latent)."""
    if isinstance(model, LatentDiffusion):
        return model.noise_shape
    return 1, model.config.image_size, model.config.image_size


def sampling_defaults(model, sampler: str = "dpmsolver", steps: int | None = None, guidance: float | None = None
                      ) -> tuple[int, float]:
    """``(steps, guidance)`` with the model family's defaults (those of ``locscope generate``) filled in: CELL-Diff
    10 DPM-Solver++ / 100 DDIM steps at guidance 2, latent diffusion 8 / 50 steps at guidance 3.

    Examples
    --------
    >>> sampling_defaults(hub.load("latent-tiny"))  # doctest: +SKIP
    (8, 3.0)
    """
    from locscope.diffusion.celldiff_sampler import DEFAULT_GUIDANCE
    from locscope.diffusion.samplers import DEFAULT_STEPS

    latent = isinstance(model, LatentDiffusion)
    if steps is None:
        steps = (LATENT_DEFAULT_STEPS if latent else DEFAULT_STEPS).get(sampler, 100)
    if guidance is None:
        guidance = LATENT_DEFAULT_GUIDANCE if latent else DEFAULT_GUIDANCE
    return steps, guidance


def generate_in_cells(model, tokens: torch.Tensor, landmarks: torch.Tensor, noise: torch.Tensor,
                      sampler: str = "dpmsolver", steps: int | None = None, guidance: float | None = None,
                      landmark_present: torch.Tensor | np.ndarray | Sequence[bool] | None = None) -> torch.Tensor:
    """Generate every sequence's protein image in every cell, all from the same initial noise per cell
    (:func:`locscope.diffusion.celldiff_sampler.sample_protein_images` with one row per (sequence, cell)).

    Parameters
    ----------
    model : locscope.models.celldiff.CellDiff or locscope.models.latent.LatentDiffusion
    tokens : torch.Tensor
        ``(B, L)`` residue tokens.
    landmarks : torch.Tensor
        ``(K, n_landmarks, H, W)`` in [-1, 1] (:func:`generator_landmarks` order, model resolution).
    noise : torch.Tensor
        ``(K, *noise_shape(model))`` initial noise, one per cell (shared by all sequences).
    sampler : {'ddim', 'dpmsolver'}
    steps : int, optional
    guidance : float, optional
        Classifier-free guidance scale (steps and guidance: the model family's defaults, :func:`sampling_defaults`).
    landmark_present : array-like of bool, optional
        ``(n_landmarks,)`` or ``(K, n_landmarks)``; absent landmarks use the model's learned placeholder.

    Returns
    -------
    torch.Tensor
        ``(B, K, H, W)`` float32 in [0, 1].
    """
    from locscope.diffusion.celldiff_sampler import sample_protein_images

    steps, guidance = sampling_defaults(model, sampler, steps, guidance)
    device = landmarks.device
    batch, cells = tokens.shape[0], landmarks.shape[0]
    present = None
    if landmark_present is not None:
        present = torch.as_tensor(np.asarray(landmark_present, bool)).reshape(-1, landmarks.shape[1])
        present = present.expand(cells, -1).repeat(batch, 1)
    # rows [s0 c0, s0 c1, ..., s1 c0, ...]
    sample = model.sample_in_cells if isinstance(model, LatentDiffusion) else \
        (lambda *args, **options: sample_protein_images(model, *args, **options))
    images, _ = sample(landmarks.repeat(batch, 1, 1, 1), tokens.to(device).repeat_interleave(cells, dim=0), present,
                       samples=1, sampler=sampler, steps=steps, guidance=guidance,
                       noise=noise.to(device).repeat(batch, 1, 1, 1))
    images = (images + 1.0) / 2.0
    return images.reshape(batch, cells, *images.shape[-2:])


# ------------------------------------------------------------------------------------------------ the predictor
class LocalizationPredictor:
    """Sequence -> localization probabilities with a CELL-Diff model (see the module docstring for the methods).

    Parameters
    ----------
    model : locscope.models.celldiff.CellDiff or locscope.models.latent.LatentDiffusion
        In eval mode.
    method : {'image', 'head', 'combined'}
    samples : int
        Standard cells (= generated images) per sequence, K.
    head_weight : float
        Weight of the compartment head in ``'combined'`` (0..1).
    sampler, steps, guidance
        Image generation (see :func:`generate_in_cells`).
    batch_size : int
        Sequences per network batch (each expands to ``samples`` images).
    seed : int
        Seeds the shared initial noise.

    Examples
    --------
    >>> predictor = LocalizationPredictor(hub.load("celldiff-tiny"), method="combined", samples=4)  # doctest: +SKIP
    >>> predictor.predict(["MPKKKRKV..."]).top()  # doctest: +SKIP
    ['nucleus']
    """

    def __init__(self, model, method: str = "combined", samples: int = 4, head_weight: float = 0.5,
                 sampler: str = "dpmsolver", steps: int | None = None, guidance: float | None = None,
                 batch_size: int = 16, seed: int = 0, landmark_present: Sequence[bool] | None = None) -> None:
        if method not in METHODS:
            raise ArgumentError("method", f"={method!r}: accepted values are {', '.join(METHODS)}")
        if samples < 1:
            raise ArgumentError("samples", f"={samples}: need at least 1 generated image per sequence")
        if not 0.0 <= head_weight <= 1.0:
            raise ArgumentError("head_weight", f"={head_weight}: must be between 0 and 1")
        heads = tuple(model.config.compartment_classes)
        if method != "image" and set(heads) != set(LEVEL3_CLASSES):
            raise ArgumentError("method", f"={method!r}: the model's compartment head predicts {heads}, not the level-3 "
                                          "classes")
        self.model, self.method, self.samples, self.head_weight = model, method, samples, head_weight
        self.steps, self.guidance = sampling_defaults(model, sampler, steps, guidance)
        self.sampler, self.batch_size = sampler, batch_size
        self.landmark_present = None if landmark_present is None else np.asarray(landmark_present, bool)
        self.device = next(model.parameters()).device
        cfg = model.config
        self.cells = standard_cells(cfg.image_size, generator_landmarks(model), samples) if method != "head" else []
        generator = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(samples, *noise_shape(model), generator=generator)
        self.landmarks = torch.from_numpy(np.stack([c.landmarks for c in self.cells]) * 2.0 - 1.0) if self.cells else None

    def tokenize(self, sequences: Sequence[str]) -> torch.Tensor:
        return self.model.tokenize(list(sequences))[0]

    @torch.no_grad()
    def predict(self, sequences: Sequence[str], progress: bool = False, keep_images: bool = False) -> Localization:
        """Localization of ``sequences`` (strings of amino-acid letters), batched."""
        level3, level2, level1, images = [], [], [], []
        starts = range(0, len(sequences), self.batch_size)
        for start in track(starts, f"localizing ({self.method})", enabled=progress and len(starts) > 1):
            chunk = list(sequences[start:start + self.batch_size])
            tokens = self.tokenize(chunk).to(self.device)
            p3 = np.zeros((len(chunk), len(LEVEL3_CLASSES)))
            p2 = np.full((len(chunk), len(LEVEL2_CLASSES)), np.nan)
            if self.method != "head":
                generated = generate_in_cells(self.model, tokens, self.landmarks.to(self.device), self.noise,
                                              self.sampler, self.steps, self.guidance,
                                              self.landmark_present).cpu().numpy()
                shares = np.array([[unmix_compartments(img, cell) for img, cell in zip(row, self.cells)]
                                   for row in generated])  # (b, K, n_compartments)
                image3, image2 = level_probabilities(shares.mean(1))
                level1.append(shares.mean(1))
                images.append(generated if keep_images else None)
                p3, p2 = image3, image2
            if self.method != "image":
                head, head2 = sequence_head_probabilities(self.model, tokens)
                if self.method == "head":
                    p3 = head
                    p2 = head2 if head2 is not None else level2_from_level3(head, None)
                elif head2 is not None:
                    p3 = self.head_weight * head + (1 - self.head_weight) * p3
                    p2 = self.head_weight * head2 + (1 - self.head_weight) * image2
                else:
                    p3 = self.head_weight * head + (1 - self.head_weight) * p3
                    p2 = level2_from_level3(p3, image2)
            level3.append(p3)
            level2.append(p2)
        return Localization(np.concatenate(level3), np.concatenate(level2),
                            np.concatenate(level1) if level1 else None,
                            np.concatenate(images) if keep_images and images else None)


def load_localizer(model: str | Path | None = None, device: str | torch.device = "cpu"):
    """A sequence localizer from a bundled name (``'localizer-small'``, default) or a model directory, in eval mode
    (resolved by :mod:`locscope.models.hub`; InputError when there is none, CheckpointError for weights that do not
    fit)."""
    return hub.load(model, default=DEFAULT_LOCALIZER, families=("localizer",), device=device, argument="model")


class LocalizerPredictor:
    """Sequence -> localization with a :class:`~locscope.models.localizer.SequenceLocalizer`.

    ``predict`` returns a :class:`Localization` whose level-3 / level-2 columns are :data:`LEVEL3_CLASSES` /
    :data:`LEVEL2_CLASSES` and whose ``level1`` holds the model's level-1 classes (``level1_classes``); a
    plastid probability is reported at level 1 only.
    """

    def __init__(self, model, batch_size: int = 64, label_style: str | None = None) -> None:
        if batch_size < 1:
            raise ArgumentError("batch_size", f"={batch_size}: need at least 1 sequence per batch")
        config = model.config
        if label_style is not None and label_style not in config.label_styles:
            raise ArgumentError("label_style", f"{label_style!r}: this localizer's label styles are "
                                f"{', '.join(config.label_styles)}")
        self.model, self.batch_size, self.label_style = model, batch_size, label_style
        missing = ([c for c in LEVEL3_CLASSES if c not in config.level3_classes]
                   + [c for c in LEVEL2_CLASSES if c not in config.level2_classes])
        if missing:
            raise InputError(f"the localizer does not predict {', '.join(missing)}")
        self.columns3 = [config.level3_classes.index(c) for c in LEVEL3_CLASSES]
        self.columns2 = [config.level2_classes.index(c) for c in LEVEL2_CLASSES]

    def predict(self, sequences: Sequence[str], progress: bool = False) -> Localization:
        """Localization of ``sequences`` (amino-acid strings of any length)."""
        parts = []
        starts = range(0, len(sequences), STREAM_CHUNK)
        for start in track(starts, "localizing", enabled=progress and len(starts) > 1):
            parts.append(self.model.predict_sequences(list(sequences[start:start + STREAM_CHUNK]), self.batch_size,
                                                      self.label_style))
        merged = {level: np.concatenate([p[level] for p in parts]) for level in ("level1", "level2", "level3")}
        return Localization(merged["level3"][:, self.columns3].astype(np.float64),
                            merged["level2"][:, self.columns2].astype(np.float64),
                            merged["level1"].astype(np.float64), None, tuple(self.model.config.level1_classes))


# ------------------------------------------------------------------------------------------------ the pipeline
def predictions_csv(ids: Sequence[str], prediction: Localization, method: str, header: bool = True) -> str:
    """CSV text: ``id, top_level3, top_level2, method``, then one ``p3_<class>`` / ``p2_<class>`` column per class;
    with level-1 classes (the localizer) also ``top_level1`` and ``p1_<class>`` columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    level1 = prediction.level1_classes
    if header:
        writer.writerow(["id", "top_level3", "top_level2", "method"] + [f"p3_{c}" for c in LEVEL3_CLASSES]
                        + [f"p2_{c}" for c in LEVEL2_CLASSES]
                        + (["top_level1"] + [f"p1_{c}" for c in level1] if level1 else []))
    top3, top2 = prediction.top("level3"), prediction.top("level2")
    top1 = prediction.top("level1") if level1 else []
    for i, record_id in enumerate(ids):
        p2 = ["" if np.isnan(v) else f"{v:.4f}" for v in prediction.level2[i]]
        writer.writerow([record_id, top3[i], top2[i] if not np.isnan(prediction.level2[i]).all() else "", method]
                        + [f"{v:.4f}" for v in prediction.level3[i]] + p2
                        + ([top1[i]] + [f"{v:.4f}" for v in prediction.level1[i]] if level1 else []))
    return buffer.getvalue()


def make_predictor(model: str | Path | None = None, method: str | None = None, *, samples: int = 4,
                   head_weight: float = 0.5, sampler: str = "dpmsolver", steps: int | None = None,
                   guidance: float | None = None,
                   batch_size: int = 16, seed: int = 0, device: str = "auto", label_style: str | None = None):
    """The predictor of ``method`` -> ``(predictor, method)``.

    ``method`` None runs the model's own method: ``'localizer'`` for a localizer (the default model
    ``localizer-small``), ``'combined'`` for a CELL-Diff model, ``'image'`` for a CELL-E 2 model
    (:mod:`locscope.pipelines.localize_celle2`). ``label_style`` picks a localizer's annotation
    style (``localizer-small``: ``'uniprot'``, the default, or ``'image'``; see :mod:`locscope.models.localizer`).
    """
    from locscope.utils.device import resolve_device
    from locscope.utils.seeding import seed_everything

    if method is not None and method not in METHODS:
        raise ArgumentError("method", f"={method!r}: accepted values are {', '.join(METHODS)}")
    if hub.family_of_model(model, DEFAULT_LOCALIZER) == "celldiff-released":
        raise ArgumentError("model", f"{model}: a released CELL-Diff checkpoint set cannot localize sequences: it has "
                                     "no compartment head, and its images are not of simulator cells whose "
                                     "compartments could be read off; generate its images with `locscope generate "
                                     "--model DIR` and classify them with `locscope classify`")
    if method is None or method == "localizer":
        families = ("localizer", *GENERATORS, "celle2") if method is None else ("localizer",)
        ref = hub.resolve(model, default=DEFAULT_LOCALIZER, families=families, argument="model")
        method = method or {"localizer": "localizer", "celle2": "image"}.get(ref.family, "combined")
    else:
        ref = hub.resolve(model, default=hub.DEFAULT_GENERATOR, families=(*GENERATORS, "celle2"), argument="model")
    if ref.family == "celle2" and method != "image":
        raise ArgumentError("method", f"={method!r}: a CELL-E 2 model has no compartment head; use method image")
    seed_everything(seed)
    net = ref.load(device=resolve_device(device))
    if ref.family == "celle2":
        from locscope.pipelines.localize_celle2 import Celle2LocalizationPredictor

        return Celle2LocalizationPredictor(net, samples, batch_size=batch_size, seed=seed), method
    if method == "localizer":
        return LocalizerPredictor(net, batch_size=batch_size, label_style=label_style), method
    if label_style is not None:
        raise ArgumentError("label_style", f"{label_style!r}: label styles belong to the sequence localizer "
                            f"(method 'localizer'), not to method {method!r}")
    return LocalizationPredictor(net, method, samples, head_weight, sampler, steps, guidance, batch_size, seed), method


def localize(sequences: Sequence[str], ids: Sequence[str], out: str | Path | None = None, *,
             model: str | Path | None = None, method: str | None = None, samples: int = 4, head_weight: float = 0.5,
             sampler: str = "dpmsolver", steps: int | None = None, guidance: float | None = None,
             batch_size: int = 16,
             seed: int = 0, device: str = "auto", progress: bool = True,
             overwrite: bool = False, label_style: str | None = None) -> tuple[Localization, str]:
    """Predict the localization of ``sequences`` and write ``out`` (CSV, atomic) if given; an existing ``out`` file
    is replaced only with ``overwrite``, a folder is refused (:func:`locscope.utils.outputs.check_output_file`).

    ``method`` None picks the localizer, or ``'combined'`` for a CELL-Diff ``model`` (:func:`make_predictor`).

    Parameters
    ----------
    sequences : sequence of str
        Amino-acid sequences, any length (the localizer reads both termini of long ones).
    ids : sequence of str
        One id per sequence (the CSV's first column).
    out : path, optional
        CSV file to write.
    model : str or path, optional
        Localizer (default ``localizer-small``), CELL-Diff or CELL-E 2 model: bundled name or directory.
    method : {'localizer', 'image', 'head', 'combined'}, optional
    samples, head_weight, sampler, steps, guidance :
        CELL-Diff methods: generated images per sequence, the head's weight in ``'combined'`` (0 to 1), the image
        sampler, its steps and the classifier-free guidance scale (None: the model family's, :func:`sampling_defaults`).
    batch_size : int
        Sequences per network batch (>= 1).
    seed : int
    device : {'auto', 'cpu', 'cuda'}

    Returns
    -------
    prediction : Localization
        Level-3 ``(N, 7)`` and level-2 ``(N, 9)`` probabilities (:data:`LEVEL3_CLASSES`, :data:`LEVEL2_CLASSES`;
        level-1 too for the localizer).
    csv_text : str

    Raises
    ------
    ArgumentError
        Unknown ``method``, or a ``model`` of another family.
    """
    from locscope.utils.atomic import write_text
    from locscope.utils.outputs import check_output_file

    if out is not None:
        check_output_file(out, overwrite=overwrite)

    predictor, method = make_predictor(model, method, samples=samples, head_weight=head_weight, sampler=sampler,
                                       steps=steps, guidance=guidance, batch_size=batch_size, seed=seed, device=device,
                                       label_style=label_style)
    prediction = predictor.predict(list(sequences), progress=progress)
    text = predictions_csv(ids, prediction, method)
    if out is not None:
        write_text(out, text)
    return prediction, text


def localize_file(path: str | Path, out: str | Path | None = None, *, model: str | Path | None = None,
                  method: str | None = None, batch_size: int = 16, progress: bool = True, write=None,
                  overwrite: bool = False, **options) -> int:
    """Localize every protein of a FASTA (or sequence table) file, streamed: :data:`STREAM_CHUNK` records are read,
    predicted and written at a time, so a whole proteome never sits in memory; any sequence length is accepted.

    Parameters
    ----------
    path : path
        FASTA / CSV / TSV of proteins (:func:`locscope.io.sequences.iter_sequences`).
    out : path, optional
        Predictions CSV, written atomically (nothing is left behind on an error); else rows go to ``write``. An
        existing file is replaced only with ``overwrite`` (:func:`locscope.utils.outputs.check_output_file`).
    write : callable, optional
        Receives CSV text chunks when ``out`` is None (default: ``sys.stdout.write``).
    **options
        ``samples``, ``head_weight``, ``sampler``, ``steps``, ``guidance``, ``seed``, ``device``, ``label_style`` of
        :func:`make_predictor`.

    Returns
    -------
    int
        Proteins localized.
    """
    import itertools
    import sys
    from contextlib import ExitStack

    from locscope.io.sequences import count_records, iter_sequences
    from locscope.utils.atomic import atomic_path

    from locscope.utils.outputs import check_output_file

    if out is not None:
        check_output_file(out, overwrite=overwrite)
    total = count_records(path)
    predictor, method = make_predictor(model, method, batch_size=batch_size, **options)
    records = iter_sequences(path, max_length=None)
    done = 0
    with ExitStack() as stack:
        if out is not None:
            tmp = stack.enter_context(atomic_path(out))
            handle = stack.enter_context(open(tmp, "w", newline=""))
            write = handle.write
        write = write or sys.stdout.write
        chunks = iter(lambda: list(itertools.islice(records, STREAM_CHUNK)), [])
        for chunk in track(chunks, f"localizing {total} proteins ({method})", total=-(-total // STREAM_CHUNK),
                           enabled=progress):
            prediction = predictor.predict([r.sequence for r in chunk])
            write(predictions_csv([r.id for r in chunk], prediction, method, header=done == 0))
            done += len(chunk)
    return done
