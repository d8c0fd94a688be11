"""Encoders: protein sequence encoders (built-in, ESM2) and image encoders (the default SubCell image encoder)."""
