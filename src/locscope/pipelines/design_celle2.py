"""``locscope design --model CELLE2 --target nucleus``: residue infill by CELL-E 2's own transformer, candidates ranked
by the nucleus proportion of their generated images (the slides' NLS design).

1. The template's masked residues (``--template 'MVSKGEE...<mask:10>'`` or ``--terminus N|C``) are decoded by the
   transformer's residue head, conditioned on the nucleus image with every protein-image token masked, several
   residues per pass (MaskGIT's confidence-ordered parallel decoder, :func:`decode_parallel`), ``candidates`` times.
2. Each candidate, the unmodified reporter (the template without the masked spans) and as many control sequences
   (the masked positions filled with uniformly random residues) is turned into ``score_samples`` one-pass images on
   the same nucleus; its score is the nucleus proportion of the threshold images: the share of above-threshold pixels
   inside the nucleus (the nucleus image above its Otsu threshold).
3. ``candidates.fasta`` / ``candidates.csv`` (ranked), ``summary.json`` (the reporter's and the controls' scores
   beside the candidates') and ``report.html``.
"""

from __future__ import annotations

import csv
import html
import io
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locscope.errors import ArgumentError
from locscope.metrics.celle2 import nucleus_mask, nucleus_proportion
from locscope.pipelines.design_templates import DESIGN_FILES, Candidate, DesignResult, build_template
from locscope.report.html import html_page
from locscope.utils.atomic import write_json, write_text

NUCLEAR_TARGETS = ("nucleus", "nucleoplasm")


def score_sequences(net, token_rows: torch.Tensor, nucleus_ids: torch.Tensor, nucleus: np.ndarray, samples: int,
                    seed: int, batch_size: int) -> np.ndarray:
    """Mean nucleus proportion (:func:`locscope.metrics.celle2.nucleus_proportion`) of ``samples`` one-pass images per
    token row ``(N, L)`` -> ``(N,)``; an image without protein pixels scores 0 (it shows nothing in the nucleus)."""
    from locscope.diffusion.celle2_sampler import decode_image_tokens

    scores = []
    for start in range(0, len(token_rows), batch_size):
        text = token_rows[start:start + batch_size].repeat_interleave(samples, dim=0)
        with torch.no_grad():
            sample = decode_image_tokens(net, text, nucleus_ids.expand(len(text), -1), passes=1,
                                         generator=torch.Generator(device=text.device).manual_seed(seed + start))
            binary = (net.decode_protein(sample.tokens)[:, 0] > 0.5).cpu().numpy()
        shares = np.nan_to_num(nucleus_proportion(binary, np.broadcast_to(nucleus, binary.shape)), nan=0.0)
        scores.append(shares.reshape(-1, samples).mean(1))
    return np.concatenate(scores)


def design_celle2(out: str | Path, *, model: str | Path, landmarks: Sequence[str | Path], target: str | None,
                  template: str | None, length: int | None, terminus: str | None, terminus_length: int,
                  candidates: int, passes: int, temperature: float, top_k: int | None, score_samples: int, top: int,
                  batch_size: int, seed: int, device: str, overwrite: bool = False):
    """Infill a template with CELL-E 2's residue head and rank the candidates by nucleus proportion (module docstring).

    Returns
    -------
    locscope.pipelines.design.DesignResult

    Raises
    ------
    InputError
        A target other than the nucleus, no nucleus image, a model with the released ESM2 text encoder, a template
        beyond the model's residue limit, or bad options.
    """
    from locscope.diffusion.masked_decoding import decode_parallel
    from locscope.encoders.protein import AMINO_ACIDS, MASK_ID, RESIDUE_IDS, VOCAB, decode_tokens
    from locscope.models import hub
    from locscope.pipelines.generate_celle2 import nucleus_tokens
    from locscope.utils.device import resolve_device
    from locscope.utils.outputs import check_output_folder, output_folder

    check_output_folder(out, "design", overwrite=overwrite, known_files=DESIGN_FILES)
    if target not in NUCLEAR_TARGETS:
        raise ArgumentError("target", f"{target}: CELL-E 2 designs rank candidates by their nucleus proportion; use "
                                      "target nucleus", mentions=("target",))
    if not landmarks:
        raise ArgumentError("landmarks", ": CELL-E 2 designs need a nucleus image (its only landmark)")
    for name, value in (("candidates", candidates), ("passes", passes), ("score_samples", score_samples)):
        if value < 1:
            raise ArgumentError(name, f"{value}: must be >= 1")
    ids = build_template(template, length, terminus, terminus_length)
    if MASK_ID not in ids:
        raise ArgumentError("template", "has no <mask> residues to infill")
    torch_device = resolve_device(device)
    net = hub.load(model, families=("celle2",), device=torch_device, argument="model")
    if net.config.text_encoder != "builtin":
        raise ArgumentError("model", f"{model}: residue infill needs a CELL-E 2 model with locscope's sequence "
                                     "encoder (this one reads ESM2 tokens)")
    if len(ids) > net.config.text_seq_len:
        raise ArgumentError("template", f"has {len(ids)} residues; the model's residue limit is "
                                        f"{net.config.text_seq_len}")
    nucleus_ids, cell = nucleus_tokens(net, landmarks)
    image = cell.images[0]
    nucleus = nucleus_mask(image)
    blocked = torch.tensor([token not in AMINO_ACIDS for token in VOCAB], device=torch_device)
    template_row = torch.tensor(ids, device=torch_device)

    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        protein = torch.full((len(tokens), net.config.image_seq_len), net.protein_mask_id, device=torch_device)
        logits = net(tokens, nucleus_ids.expand(len(tokens), -1), protein).text_logits
        return logits.float().masked_fill(blocked, -1e4)

    started = time.perf_counter()
    designed, used_passes = [], 0
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    with torch.no_grad():
        for start in range(0, candidates, batch_size):
            rows = template_row[None].repeat(min(batch_size, candidates - start), 1)
            result = decode_parallel(logits_fn, rows, MASK_ID, passes=passes, temperature=temperature, top_k=top_k,
                                     generator=generator)
            designed.append(result.tokens)
            used_passes = max(used_passes, result.passes)
    designed_rows = torch.cat(designed)
    decode_seconds = (time.perf_counter() - started) / candidates
    masked = template_row == MASK_ID
    random_rows = template_row[None].repeat(candidates, 1)
    residues = torch.tensor(RESIDUE_IDS[1:], device=torch_device)  # the 20 amino acids (not X)
    picks = torch.randint(0, len(residues), (candidates, int(masked.sum())), generator=generator, device=torch_device)
    random_rows[:, masked] = residues[picks]
    reporter_row = template_row[~masked][None]
    started = time.perf_counter()
    scores = score_sequences(net, designed_rows, nucleus_ids, nucleus, score_samples, seed, batch_size)
    score_seconds = (time.perf_counter() - started) / candidates
    control = score_sequences(net, random_rows, nucleus_ids, nucleus, score_samples, seed, batch_size)
    reporter = float(score_sequences(net, reporter_row, nucleus_ids, nucleus, score_samples, seed, batch_size)[0])
    order = np.argsort(-scores, kind="stable")
    ranked = [Candidate(rank=i + 1, sequence=decode_tokens(designed_rows[j]), score=float(scores[j]),
                        level3={}, top_level3="", grammar_call="", grammar_compartments={})
              for i, j in enumerate(order)]
    template_text = decode_tokens(template_row)
    summary = {"model": str(model), "target": "nucleus", "template": template_text, "candidates": candidates,
               "passes_per_candidate": used_passes, "score_samples": score_samples,
               "score": "nucleus proportion of one-pass threshold images", "reporter_score": reporter,
               "candidates_mean_score": float(scores.mean()), "random_residues_mean_score": float(control.mean()),
               "share_of_candidates_above_reporter": float((scores > reporter).mean()),
               "share_of_random_above_reporter": float((control > reporter).mean()),
               "decode_seconds_per_candidate": decode_seconds, "score_seconds_per_candidate": score_seconds,
               "top": [{"rank": c.rank, "sequence": c.sequence, "score": c.score} for c in ranked[:top]]}
    with output_folder(out, "design", overwrite=overwrite, known_files=DESIGN_FILES) as folder:
        write_text(folder / "candidates.fasta", "".join(f">candidate_{c.rank} nucleus_proportion={c.score:.4f}\n"
                                                        f"{c.sequence}\n" for c in ranked))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["rank", "sequence", "nucleus_proportion"])
        for c in ranked:
            writer.writerow([c.rank, c.sequence, f"{c.score:.4f}"])
        write_text(folder / "candidates.csv", buffer.getvalue())
        write_json(folder / "summary.json", summary)
        rows = "".join(f"<tr><td>{c.rank}</td><td><code>{html.escape(c.sequence)}</code></td><td>{c.score:.3f}</td>"
                       f"</tr>" for c in ranked[:top])
        write_text(folder / "report.html", html_page("locscope design (CELL-E 2)", f"""<h1>CELL-E 2 infill, ranked by \
nucleus proportion</h1>
<p>Template <code>{html.escape(template_text)}</code>; {candidates} candidates ({used_passes} passes each);
unmodified reporter {reporter:.3f}; candidates' mean {scores.mean():.3f}; random residues' mean {control.mean():.3f}.
</p><table><tr><th>rank</th><th>sequence</th><th>nucleus proportion</th></tr>{rows}</table>"""))
    return DesignResult(ranked, template_text, "nucleus", "parallel", float(used_passes), decode_seconds,
                        score_seconds, "nucleus proportion (CELL-E 2 one-pass images)", proposer="celle2")
