"""Training benchmark: time to train the full model from scratch (no cache)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Train into a temporary folder with --force and print the wall time."""
    rasa = str(Path(sys.executable).parent / "rasa")
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, SQLALCHEMY_SILENCE_UBER_WARNING="1")
        start = time.monotonic()
        subprocess.run(
            [rasa, "train", "--force", "--domain", "domain", "--data", "nlu", "stories",
             "--config", "config.yml", "--out", out],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print(f"full training from scratch: {time.monotonic() - start:.0f}s")


if __name__ == "__main__":
    main()
