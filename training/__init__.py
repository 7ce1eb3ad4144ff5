"""Model training: water (scenarios), leak and air model families, export to the edge formats, model cards."""
