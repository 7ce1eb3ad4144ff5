"""Air-site models: the site simulation, training, evaluation and the co-location calibration."""
