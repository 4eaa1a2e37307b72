"""Where every benchmark's table goes: printed, and appended to bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def publish(lines: list[str]) -> None:
    """Print a section (Markdown lines) and append it to RESULTS.md."""
    text = "\n".join(lines) + "\n"
    print(text)
    with open(RESULTS, "a") as fh:
        fh.write(text)
