"""Report writers: PNG pictures and grids (``images``) for the pipelines and the training gate."""
