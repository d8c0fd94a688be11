"""Datasets: the chunked store, splits by protein, manifests, transforms and the localization ontology."""
