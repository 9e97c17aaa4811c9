"""Data building: SPARQL endpoints, the embedded store, offline facts and dataset importers."""
