"""The README's map matches the tree: every path in its Layout block exists and every module is on it."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kd_core", "espnet_kd", "fairseq_kd", "bench", "tools")


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Layout", 1)[1].split("```", 2)[1]


def test_layout_paths_exist():
    """Top-level entries (``kd_core/``) and the files named under them resolve in the tree."""
    parent, missing = None, []
    for line in _layout().splitlines():
        m = re.match(r"^(\S+/)\s", line)
        if m:  # a top-level folder (or folder path)
            parent = m.group(1)
            missing += [] if (ROOT / parent).is_dir() else [parent]
            continue
        m = re.match(r"^  (\S+)\s", line)
        if m and parent:
            missing += [] if (ROOT / parent / m.group(1)).exists() else [parent + m.group(1)]
    assert not missing, missing


def test_every_module_is_on_the_map():
    layout = _layout()
    names = set(re.findall(r"[\w\-{},]+\.(?:py|sh)", layout))
    expanded = set()
    for n in names:  # asr_kd_{train,inference}.py style
        m = re.match(r"(.*)\{(.*)\}(.*)", n)
        expanded |= {m.group(1) + x + m.group(3) for x in m.group(2).split(",")} if m else {n}
    skip = {"__init__.py", "__main__.py"}
    unlisted = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
                if p.name not in skip and p.name not in expanded]
    assert not unlisted, f"modules missing from the README layout: {unlisted}"
