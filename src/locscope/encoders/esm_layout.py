"""ESM2 parameter names: fair-esm's (what released CELL-Diff / CELL-E 2 checkpoints store) <-> transformers'
``EsmForMaskedLM`` (what locscope computes with, and what ``facebook/esm2_*`` directories hold).

fair-esm keeps one rotary ``inv_freq`` table per layer (``layers.N.self_attn.rot_emb.inv_freq``), transformers one
for the whole model (``esm.rotary_embeddings.inv_freq``); the tables are equal by construction (they depend only on
the head width), so the per-layer names map to ``None`` here and callers keep one.

>>> fair_esm_to_transformers("layers.3.self_attn.q_proj.weight")
'esm.encoder.layer.3.attention.self.query.weight'
>>> transformers_to_fair_esm("esm.encoder.layer.3.LayerNorm.gamma")
'layers.3.final_layer_norm.weight'
"""

from __future__ import annotations

import torch

#: fair-esm module inside ``layers.N`` -> transformers module inside ``esm.encoder.layer.N``.
LAYER_MODULES = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "LayerNorm",
}
#: Whole-model keys whose names differ (``lm_head.dense`` / ``layer_norm`` / ``bias`` are the same in both).
TOP_KEYS = {
    "embed_tokens.weight": "esm.embeddings.word_embeddings.weight",
    "emb_layer_norm_after.weight": "esm.encoder.emb_layer_norm_after.weight",
    "emb_layer_norm_after.bias": "esm.encoder.emb_layer_norm_after.bias",
    "contact_head.regression.weight": "esm.contact_head.regression.weight",
    "contact_head.regression.bias": "esm.contact_head.regression.bias",
    "lm_head.weight": "lm_head.decoder.weight",
}
ROTARY_KEY = "esm.rotary_embeddings.inv_freq"
_SAME = ("lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight", "lm_head.layer_norm.bias",
         "lm_head.bias")
_TOP_INVERSE = {hf: fair for fair, hf in TOP_KEYS.items()}
_LAYER_INVERSE = {hf: fair for fair, hf in LAYER_MODULES.items()}


def fair_esm_to_transformers(key: str) -> str | None:
    """The ``EsmForMaskedLM`` name of a fair-esm ESM2 key; ``None`` for a per-layer rotary table.

    Raises
    ------
    KeyError
        If ``key`` is not an ESM2 key.
    """
    if key in TOP_KEYS:
        return TOP_KEYS[key]
    if key in _SAME:
        return key
    parts = key.split(".")
    if len(parts) >= 4 and parts[0] == "layers" and parts[1].isdigit():
        module = ".".join(parts[2:-1])
        if module == "self_attn.rot_emb" and parts[-1] == "inv_freq":
            return None
        if module in LAYER_MODULES:
            return f"esm.encoder.layer.{parts[1]}.{LAYER_MODULES[module]}.{parts[-1]}"
    raise KeyError(key)


def transformers_to_fair_esm(key: str) -> str | None:
    """The fair-esm name of an ``EsmForMaskedLM`` / ``EsmModel`` key (``esm.`` prefix optional, LayerNorm
    ``gamma`` / ``beta`` accepted); ``None`` for keys fair-esm does not store (rotary tables, position ids)."""
    name = key if key.startswith(("esm.", "lm_head.")) else "esm." + key
    if ".LayerNorm." in name:  # transformers may write LayerNorm weight / bias as gamma / beta
        name = name.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias")
    if name in _TOP_INVERSE:
        return _TOP_INVERSE[name]
    if name in _SAME:
        return name
    prefix = "esm.encoder.layer."
    if name.startswith(prefix):
        index, rest = name[len(prefix):].split(".", 1)
        module, leaf = rest.rsplit(".", 1)
        if module in _LAYER_INVERSE:
            return f"layers.{index}.{_LAYER_INVERSE[module]}.{leaf}"
    return None


def rotary_inv_freq(head_dim: int) -> torch.Tensor:
    """ESM2's rotary table ``1 / 10000^(2i / head_dim)``, ``(head_dim // 2,)`` float32."""
    return 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
