"""Benchmarks and fleet tools, run from the repository root (``python -m scripts.bench``).

They import the installed package (``make setup`` installs edge, gateway and training editable) and one another as
``scripts.<name>``; none edits ``sys.path``. Those that import no other script also run as files
(``python scripts/make_certs.py``).
"""
