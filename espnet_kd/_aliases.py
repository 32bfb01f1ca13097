"""Make ``python -m espnet2.bin.asr_kd_train`` / ``asr_kd_inference`` resolve to this package.

``espnet2.bin`` is a regular package, so new modules cannot be added to it without writing
into ESPnet's directory. Instead, a ``.pth`` file installed with this package calls
:func:`install` at interpreter start-up; it appends a meta-path finder that maps the two
names above to ``espnet_kd.bin.*`` (unless ``ESPNET_KD_NO_ALIASES`` is set). ESPnet's files are untouched, every other import is
unaffected, and uninstalling the package removes the ``.pth`` (and with it the names).
"""
import importlib.abc
import importlib.util
import sys

ALIASES = {
    "espnet2.bin.asr_kd_train": "espnet_kd.bin.asr_kd_train",
    "espnet2.bin.asr_kd_inference": "espnet_kd.bin.asr_kd_inference",
}


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        real = ALIASES.get(fullname)
        if real is None:
            return None
        spec = importlib.util.find_spec(real)
        return importlib.util.spec_from_file_location(fullname, spec.origin) if spec is not None else None


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
