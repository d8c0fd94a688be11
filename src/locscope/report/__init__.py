"""Report writers for the pipelines and the training gate: PNG / TIFF pictures and grids (``images``) and the HTML
page skeleton (``html``)."""
