"""The installed llama.cpp is the one scripts/install builds: native for this CPU, without AMX kernels."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from minimill.engine import selftest

AMX_INSTRUCTIONS = ("ldtilecfg", "tileloadd", "tdpbssd", "tdpbf16ps", "tilezero")


def test_the_build_was_made_by_scripts_install_without_amx() -> None:
    stamp = selftest.build_stamp()
    assert stamp is not None, "llama-cpp-python was not installed by scripts/install"
    assert "-DGGML_AMX_TILE=OFF" in stamp and "-mno-amx-tile" in stamp and "llama-cpp-python=0.3.36" in stamp


@pytest.mark.skipif(shutil.which("objdump") is None, reason="binutils' objdump is not installed")
def test_the_cpu_backend_has_no_amx_instructions() -> None:
    directory = selftest.native_dir()
    assert directory is not None
    libraries = sorted(directory.glob("libggml-cpu*.so"))
    assert libraries
    for library in libraries:
        listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                                 text=True, check=True).stdout
        found = [name for name in AMX_INSTRUCTIONS if f"\t{name}" in listing or f" {name} " in listing]
        assert not found, f"{library.name} contains AMX instructions: {found}"


def test_a_crash_is_explained_with_its_signal_and_the_fix() -> None:
    message = selftest.explain(-int(signal.SIGSEGV), "")
    assert "SIGSEGV" in message and "CPU instructions" in message and "scripts/install" in message
    message = selftest.explain(1, "one\ntwo\nllama_decode returned -3\n")
    assert "exit 1" in message and "llama_decode returned -3" in message
