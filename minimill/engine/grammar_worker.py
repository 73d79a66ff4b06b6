"""`python -m minimill.engine.grammar_worker MODEL.gguf`: the disposable process of `engine/grammar.py`.

Loads the model's vocabulary only, then answers one JSON line per grammar on stdin with
`{"ok": bool, "reason": str}` on stdout. A grammar that crashes llama.cpp kills this process only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from minimill.engine.llama import LlamaModel, grammar_walk


def main(argv: list[str]) -> int:
    """Serve probes until stdin closes."""
    model = LlamaModel(Path(argv[1]), n_gpu_layers=0, vocab_only=True)
    for line in sys.stdin:
        reason = grammar_walk(model, json.loads(line)["grammar"])
        sys.stdout.write(json.dumps({"ok": reason is None, "reason": reason or ""}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
