"""``python -m fuzz.decoder -atheris_runs=20000``: fuzz the strict wire decoder."""

from fuzz.targets import decoder, run_atheris

if __name__ == "__main__":
    run_atheris(decoder)
