"""Learned leak detectors: train, evaluate against Minimum Night Flow, write the card and the report."""
