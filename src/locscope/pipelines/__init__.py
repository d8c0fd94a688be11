"""User-facing verbs (generate, design, localize, explain, embed, classify, evaluate, simulate, segment): short loops over
library functions that the CLI commands call."""
