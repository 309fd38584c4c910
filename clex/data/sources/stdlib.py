import sysconfig
from pathlib import Path

from clex.data.sources import DATASETS


@DATASETS.register("stdlib")
def stdlib_documents(cfg):
    """The ``.py`` files of the running interpreter's standard library (no site-packages, no empty
    files): tens of MB of real long documents on every machine, with no download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if {"site-packages", "dist-packages"} & set(relative.parts) or path.stat().st_size == 0:
            continue
        yield relative.as_posix(), path.read_text(encoding="utf-8", errors="surrogateescape")
