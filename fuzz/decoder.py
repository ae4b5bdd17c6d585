"""``python -m fuzz.decoder -atheris_runs=20000``: fuzz the strict wire decoder."""

import atheris

with atheris.instrument_imports(include=["dtm_ray"]):  # coverage of our code only: fast startup
    from fuzz.targets import decoder, run_atheris

if __name__ == "__main__":
    run_atheris(decoder)
