"""Extra files of PyTorch zip archives (TorchScript ``.ts`` and torch.export ``.pt2``), read without
deserialising the program: both keep ``_extra_files``/``extra_files`` under ``<archive>/extra/``."""

from __future__ import annotations

import zipfile
from pathlib import Path


def read_extra_file(path: Path, name: str) -> str | None:
    """The text of extra file ``name`` in the archive at ``path``; None when absent or not a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if len(parts) == 3 and parts[1] == "extra" and parts[2] == name:
                    return archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, OSError):
        return None
    return None
