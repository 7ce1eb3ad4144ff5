"""Technician and ops tools, each run as its own short command: ``flash`` (bundle), ``doctor`` and ``report``."""
