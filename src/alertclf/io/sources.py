"""Where alert files come from: a tiny abstraction so Azure Blob can plug in beside local files.

A :class:`Source` is a name (what messages, notes and ``source_file`` show) and a way to
open the bytes. Local files, folders and glob patterns are resolved by :func:`list_sources`;
an Azure reader only has to build ``Source`` objects whose ``open()`` downloads the blob.
"""

from __future__ import annotations

import glob
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

# Folder listings take these (case-insensitively); a file named explicitly is read whatever
# its extension, because the user chose it.
CSV_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Source:
    """One input file: ``name`` identifies it everywhere, ``open()`` returns its raw bytes."""

    name: str
    opener: Callable[[], BinaryIO] = field(repr=False, compare=False)

    def open(self) -> BinaryIO:
        return self.opener()

    @classmethod
    def from_path(cls, path: str | Path) -> Source:
        path = Path(path)
        return cls(name=str(path), opener=lambda: path.open("rb"))

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Source:
        """An in-memory file (tests, or a blob already downloaded)."""
        return cls(name=name, opener=lambda: io.BytesIO(data))


def may_be_url(location: str | Path) -> bool:
    """False for what can only be a local path; a cheap test that spares local runs the
    Azure SDK import (0.2 s). ("azure:/" and "https:/": a Path collapses the double slash.)"""
    return str(location).strip().lower().startswith(("azure:/", "http:/", "https:/"))


def list_sources(location: str | Path) -> list[Source]:
    """The CSV files at ``location``: one file, a folder's ``*.csv``/``*.csv.gz``, or a glob.

    Folders are not searched recursively (a glob such as ``dir/**/*.csv`` does that), and
    hidden files (``.name``: editors' swap files, macOS ``._`` copies) are skipped, as a
    glob skips them.
    Results are sorted by name so every run reads the files in the same order, which keeps
    "first occurrence wins" duplicate handling deterministic.
    """
    text = str(location)
    # Blob URLs go to the Azure reader, imported only then so local runs never load the SDK.
    if may_be_url(text):
        from alertclf.io import azure

        if azure.is_azure_url(text):
            return azure.list_blob_sources(text)
    path = Path(text).expanduser()
    if path.is_file():
        return [Source.from_path(path)]
    if path.is_dir():
        files = sorted(
            (
                p
                for p in path.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and p.name.lower().endswith(CSV_SUFFIXES)
            ),
            key=lambda p: p.name,
        )
        if not files:
            raise _input_error(f"{text}: no *.csv or *.csv.gz files in this folder")
        logger.debug("%s: %d CSV files", text, len(files))
        return [Source.from_path(p) for p in files]
    if _GLOB_CHARS & set(text):
        matches = sorted(Path(p) for p in glob.glob(str(Path(text).expanduser()), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise _input_error(f"{text}: no files match this pattern")
        return [Source.from_path(p) for p in files]
    if path.exists():
        # A pipe (``--alerts <(curl ...)``, /dev/stdin): read once, here, as it cannot be
        # opened twice. One that never ends is what the scheduler's job timeout is for.
        try:
            return [Source.from_bytes(str(path), path.read_bytes())]
        except OSError as err:
            raise _input_error(f"{text}: cannot read ({err.strerror or err})") from None
    raise _input_error(f"{text}: no such file or folder")


def _input_error(message: str) -> Exception:
    # InputError lives in alerts.py (its public home); alerts.py imports this module at load
    # time, so importing it here at module level would be circular.
    from alertclf.io.alerts import InputError

    return InputError(message)
