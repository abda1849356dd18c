"""`llmkit export OUTPUT_DIR --format onnx [--quantize int8] [--to DIR]`: a trained run as a folder that ONNX
Runtime runs without torch (llmkit.onnx_export), which `llmkit infer ... infer.backend=onnxruntime` predicts with.

    llmkit export runs/tiny-classifier --format onnx
    llmkit export runs/tiny-classifier --format onnx --quantize int8 --to runs/tiny-classifier-int8
"""

from __future__ import annotations

from pathlib import Path

from llmkit.console import say
from llmkit.errors import LlmkitError

FORMATS, QUANTIZATIONS = ("onnx",), ("int8",)


def run(output_dir: Path, fmt: str, quantize: str | None, to: Path | None) -> Path:
    if fmt not in FORMATS:
        raise LlmkitError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise LlmkitError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    from llmkit.onnx_export import export_onnx

    folder, info = export_onnx(output_dir, to, quantize)
    say(f"export: {folder}/ ({info['family']}, {info['precision']}; fp32 matches torch to "
        f"{info['max_abs_diff_fp32']:.1e} on a check batch)")
    return folder
