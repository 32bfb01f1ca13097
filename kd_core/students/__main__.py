"""``python -m kd_core.students [--write] [--chunk_size 12]``: each student shape preset's parameters and
algorithmic latency; ``--write`` (re)writes the ESPnet and fairseq preset files from :mod:`.presets`."""
import argparse
from pathlib import Path
from typing import Optional

from .presets import SHAPES, describe, preset_files


def main(argv: Optional[list] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="write the ESPnet and fairseq preset files")
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2]))
    p.add_argument("--chunk_size", type=int, default=12)
    a = p.parse_args(argv)
    if a.write:
        from ..atomic import atomic_write_text

        for path, text in preset_files(Path(a.root)).items():
            atomic_write_text(path, text)
    for name in SHAPES:
        d = describe(name, a.chunk_size)
        print(f"{name:10s} {d['params'] / 1e6:5.2f}M  1/{1 / d['fraction_of_teacher']:4.1f} of the zoo teacher  "
              f"latency {d['latency_ms']:.0f} ms at chunk {a.chunk_size}"
              + (f"  (SEW: encoder on {d['squeeze']}x fewer frames)" if d["squeeze"] > 1 else ""))


if __name__ == "__main__":
    main()
