"""Predictions written as they come: JSON lines to stdout or a file, or embeddings as one .npy array. A file
appears complete or not at all (written aside, then moved in)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from llmkit.console import say
from llmkit.errors import LlmkitError


class JsonLines:
    """Rows to stdout, or to a file that appears complete or not at all."""

    def __init__(self, path: str | None):
        self.path = path if path and path != "-" else None
        self.tmp = Path(f"{self.path}.tmp-{os.getpid()}") if self.path else None
        self.out = open(self.tmp, "w", encoding="utf-8") if self.tmp else sys.stdout
        self.count = 0

    def write(self, rows: list[dict]) -> None:
        self.out.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self.count += len(rows)

    def close(self) -> int:
        if self.tmp:
            self.out.close()
            os.replace(self.tmp, self.path)
            say(f"{self.count} predictions written to {self.path}", err=True)
        return self.count

    def discard(self) -> None:
        if self.tmp:
            self.out.close()
            self.tmp.unlink(missing_ok=True)


class EmbeddingArray:
    """The rows' embeddings as one [rows, size] float32 .npy array: streamed to a raw file, then copied in
    behind the .npy header once the row count is known."""

    def __init__(self, path: str):
        self.path, self.raw = path, Path(f"{path}.raw-{os.getpid()}")
        self.out = open(self.raw, "wb")
        self.count, self.size = 0, None

    def write(self, rows: list[dict]) -> None:
        import numpy as np

        if "embedding" not in rows[0]:
            raise LlmkitError(f"--output: {self.path}: a .npy file holds embeddings, and this model predicts "
                              f"{', '.join(k for k in rows[0] if k != 'text')}; write .jsonl instead")
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        self.size = vectors.shape[1]
        self.out.write(vectors.tobytes())
        self.count += len(rows)

    def close(self) -> int:
        import numpy as np

        import shutil

        self.out.close()
        tmp = Path(f"{self.path}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f, open(self.raw, "rb") as raw:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                      "shape": (self.count, self.size)}
            np.lib.format.write_array_header_1_0(f, header)
            shutil.copyfileobj(raw, f, 1 << 20)
        os.replace(tmp, self.path)
        say(f"{self.count} embeddings of size {self.size} written to {self.path}", err=True)
        return self.count

    def discard(self) -> None:
        self.out.close()
        self.raw.unlink(missing_ok=True)
