"""``python -m fuzz.participant -atheris_runs=20000``: fuzz a participant's receive() with hostile bytes."""

import atheris

with atheris.instrument_imports(include=["dtm_ray"]):  # coverage of our code only: fast startup
    from fuzz.targets import handler, run_atheris

if __name__ == "__main__":
    run_atheris(handler("participant"))
