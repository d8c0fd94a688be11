"""Neural network models, one model family per file (``celldiff``, ``celldiff_v2``, ``subcell``, ...)."""
