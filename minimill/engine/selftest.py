"""A one-token self-test of llama.cpp on this host, run in a child process before `serve` listens.

A llama.cpp build that uses instructions this CPU does not really run (a native build on a host that
advertises AMX but faults on it) dies with SIGSEGV or SIGILL on its first matrix product. In a child
that costs nothing, and the parent can say what went wrong instead of dying mid-request.
`python -m minimill.engine.selftest MODEL.gguf` is the child.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SELFTEST_TIMEOUT_SECONDS = 300.0
STAMP = "minimill-build.txt"  # written next to the native libraries by scripts/install


@dataclass(frozen=True, slots=True)
class SelfTest:
    """The outcome: ok, or a message naming the cause."""

    ok: bool
    message: str = ""


def native_dir() -> Path | None:
    """Where llama-cpp-python keeps its native libraries (without importing it)."""
    spec = importlib.util.find_spec("llama_cpp")
    return Path(spec.origin).parent / "lib" if spec is not None and spec.origin else None


def build_stamp() -> str | None:
    """What scripts/install recorded about the installed llama.cpp build, or None if it did not build it."""
    directory = native_dir()
    stamp = directory / STAMP if directory is not None else None
    return stamp.read_text() if stamp is not None and stamp.is_file() else None


def engine_build() -> str:
    """The installed llama.cpp: llama-cpp-python's version and how scripts/install built it."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return f"llama-cpp-python {version}; {build_stamp() or 'not built by scripts/install'}"


def cpu_advertises_amx() -> bool:
    """Whether /proc/cpuinfo lists AMX."""
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def explain(returncode: int, output: str) -> str:
    """Why the child failed, and what to do about it."""
    stamp = build_stamp()
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else returncode
        cause = f"llama.cpp crashed with {name} on its first token"
        if -returncode in (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS):
            cause += (": this build uses CPU instructions this host does not run"
                      + (" (the CPU advertises AMX; a native build compiles AMX kernels that fault here)"
                         if cpu_advertises_amx() else ""))
    else:
        tail = output.strip().splitlines()[-3:]
        cause = f"llama.cpp failed its first token (exit {returncode}): {' | '.join(tail)}"
    fix = ("Rebuild it for this host with `scripts/install` (no AMX, never pip's cached wheel)." if stamp is None else
           f"It was built by scripts/install as: {stamp}. Rerun `scripts/install` on this host.")
    return f"{cause}. {fix}"


def run(model_path: Path, timeout: float = SELFTEST_TIMEOUT_SECONDS) -> SelfTest:
    """Decode a short prompt and sample one token with `model_path` in a child process."""
    try:
        done = subprocess.run([sys.executable, "-m", "minimill.engine.selftest", str(model_path)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return SelfTest(False, f"llama.cpp did not produce its first token within {timeout:.0f} s")
    if done.returncode == 0:
        return SelfTest(True)
    return SelfTest(False, explain(done.returncode, done.stdout + done.stderr))


def main(argv: list[str]) -> int:
    """The child: one decode, one token."""
    from minimill.engine.llama import ContextShape, LlamaContext, LlamaModel, TokenBatch

    model = LlamaModel(Path(argv[1]))
    ctx = LlamaContext(model, ContextShape(n_ctx=256, n_seq_max=1, n_batch=64, threads=1))
    tokens = model.tokenize("Hello, my name is")
    batch = TokenBatch(64)
    for position, token in enumerate(tokens):
        batch.add(token, position, 0, position == len(tokens) - 1)
    code = ctx.decode(batch)
    if code != 0:
        sys.stderr.write(f"llama_decode returned {code}\n")
        return 1
    logits = ctx.logits(batch.size - 1)
    token = int(logits.argmax())
    if not 0 <= token < model.n_vocab or not bool(abs(float(logits[token])) < float("inf")):
        sys.stderr.write("the logits are not finite\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
