"""Coverage-guided fuzz targets (atheris) for the decoder and every party's message handler.

Run one with ``python -m fuzz.decoder -atheris_runs=20000`` (or ``fuzz.replica``,
``fuzz.participant``, ``fuzz.client``); ``pip install -e ".[fuzz]"`` installs atheris. The same
targets run through hypothesis in ``tests/test_fuzz_targets.py`` when atheris is absent.
"""
