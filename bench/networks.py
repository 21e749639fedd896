"""Superseded by ``bench/official.py``: the official networks beside ours (same weights, same torch), or without
``--official`` our side alone beside the last recorded official figures, plus each speed-up's own effect.

Run: ./dev bench networks [official.py's options]  (= python bench/official.py …)
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("official.py")), run_name="__main__")
