"""Export a checkpoint for ONNX Runtime: `python -m model.export [--checkpoint PATH]`.

Writes two files beside the checkpoint (`spotcheck.pt` -> `spotcheck.onnx` and
`spotcheck.json`):

- the ONNX graph: input `input` (N, 3, size, size) float32, outputs `logits`
  (N, classes), `maps` (N, C, h, w), the last feature maps, and
  `ood_features` (N, C'), from the network's `forward_with_maps`; the batch
  axis is dynamic;
- a JSON sidecar with everything else the checkpoint holds, as plain JSON:
  classes, preprocess, calibration, meta and the feature-distance statistics
  (`ood`), plus the head's weights (for the class activation map) and the SHA-256 of both the ONNX file and the
  checkpoint it came from, so a stale or damaged export is noticed.

With these two files `model.predictor.Predictor(..., backend="onnx")` needs
only onnxruntime and numpy, no torch. The export is checked before it is
written: ONNX Runtime must reproduce PyTorch's outputs.

Exit status 0 when both files are written; 2 for a bad command line or a
checkpoint that cannot be used; 1 when they cannot be written (a full disk,
no permission); 130 when stopped (Ctrl+C or a `kill`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from data.flags import int_from, named_path, run_command
from model.checkpoint import (CheckpointError, atomic_write, checkpoint_path, network_from, read_checkpoint,
                              sha256_of)

SIDECAR_FORMAT = "spotcheck-onnx/1"
OPSET = 17
# The opsets the pinned torch's TorchScript exporter supports for this network: 7 and 8 failed ONNX's checker and 24
# "Unsupported onnx_opset_version", both with a traceback; 21 to 23 came with a warning that they are not supported.
OPSETS = range(9, 21)
INPUT, OUTPUTS = "input", ("logits", "maps", "ood_features")
EXPORT_SUFFIXES = (".onnx", ".json")  # an export's two files: either one names it where a checkpoint is asked for


def onnx_paths(checkpoint: str | Path) -> tuple[Path, Path]:
    """(the ONNX file, its JSON sidecar) for a checkpoint path such as `spotcheck.pt`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_suffix(".onnx"), checkpoint.with_suffix(".json")


def plain(value: Any) -> Any:
    """Plain JSON values (tensors and arrays become lists, NaN and infinity None): checkpoint metadata for the
    sidecar, and the reports training and evaluation write."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):  # NaN is not JSON: e.g. the recall of a class that
        return None  # validation had no image of, as when a user's own photos hold no vascular spot
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def export(checkpoint: str | Path | None = None, *, opset: int = OPSET) -> tuple[Path, Path]:
    """Export `checkpoint` (default: the embedded model) to ONNX + JSON beside it; returns both paths."""
    import io
    import warnings

    import torch

    checkpoint = checkpoint_path(checkpoint)
    if problem := exported_already(checkpoint):
        raise CheckpointError(problem)
    ckpt, digest = read_checkpoint(checkpoint)  # the bytes exported are the bytes named in the sidecar
    classes = list(ckpt["classes"])
    size = int(ckpt["preprocess"]["size"])
    model = network_from(ckpt)

    class WithMaps(torch.nn.Module):
        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_with_maps(x)

    wrapper = WithMaps(model).eval()  # the exporter restores the wrapper's mode, recursively, afterwards
    example = torch.zeros(2, 3, size, size)
    buffer = io.BytesIO()
    batch = {0: "batch"}
    with warnings.catch_warnings():
        # The TorchScript exporter: deprecated, but it needs no onnxscript and handles this plain CNN exactly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, (example,), buffer, input_names=[INPUT], output_names=list(OUTPUTS),
                          dynamic_axes={INPUT: batch, **{name: batch for name in OUTPUTS}},
                          # Unfolded, batch norm keeps the checkpoint's float16-exact weights; ONNX Runtime folds it.
                          opset_version=opset, do_constant_folding=False, dynamo=False)
    graph = float16_weights(buffer.getvalue())

    _check_against_torch(model, graph, size)

    onnx_path, json_path = onnx_paths(checkpoint)
    atomic_write(onnx_path, lambda f: f.write(graph))
    head = model.head  # an ensemble builds its combined head on each access
    sidecar = {
        "format": SIDECAR_FORMAT,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_of(onnx_path),
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": digest,
        "input": INPUT,
        "outputs": list(OUTPUTS),
        "opset": opset,
        "arch": ckpt.get("arch", "spotnet"),
        "members": int(ckpt.get("members", 1)),
        "classes": classes,
        "preprocess": plain(ckpt["preprocess"]),
        "calibration": plain(ckpt["calibration"]),
        "meta": plain(ckpt["meta"]),
        "ood": plain(ckpt.get("ood")),
        # float32 values printed by Python round-trip exactly back to float32
        "head": {"weight": plain(head.weight.detach().numpy()), "bias": plain(head.bias.detach().numpy())},
    }
    atomic_write(json_path, lambda f: f.write(sidecar_text(sidecar).encode()))
    return onnx_path, json_path


def exported_already(path: Path) -> str | None:
    """Why `path` cannot be exported when it is an ONNX model or its sidecar (batch scoring and evaluation take either
    in place of its checkpoint, so it is easily given here too), or None."""
    if path.suffix not in EXPORT_SUFFIXES or not path.is_file():
        return None
    checkpoint = path.with_suffix(".pt")
    beside = f"beside it: {checkpoint}" if checkpoint.is_file() else f"there is no {checkpoint.name} beside it"
    return (f"{path} is {'an ONNX model' if path.suffix == '.onnx' else 'the sidecar of an ONNX model'}, exported "
            f"already, not a checkpoint: give the .pt checkpoint it was exported from ({beside})")


def float16_weights(graph: bytes) -> bytes:
    """Store each float32 weight that float16 holds exactly (the checkpoint's weights are float16) as float16,
    widened back by a Cast node: half the file, the same arithmetic (ONNX Runtime folds the casts on loading)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(graph)
    initializers, casts = [], []
    for weight in model.graph.initializer:
        values = numpy_helper.to_array(weight) if weight.data_type == TensorProto.FLOAT else None
        exact = values is not None and np.array_equal(values.astype(np.float16).astype(np.float32), values)
        if exact and values.size > 1:
            initializers.append(numpy_helper.from_array(values.astype(np.float16), weight.name + ".float16"))
            casts.append(helper.make_node("Cast", [weight.name + ".float16"], [weight.name], to=TensorProto.FLOAT))
        else:
            initializers.append(weight)
    nodes = [*casts, *model.graph.node]
    del model.graph.initializer[:], model.graph.node[:]
    model.graph.initializer.extend(initializers)
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def sidecar_text(sidecar: dict[str, Any]) -> str:
    """Indented JSON, with each row of a matrix on one line (a short diff when the model changes)."""

    def write(value: Any, indent: str) -> str:
        inner = indent + " "
        if isinstance(value, dict) and value:
            items = ",\n".join(f"{inner}{json.dumps(k)}: {write(v, inner)}" for k, v in value.items())
            return "{\n" + items + "\n" + indent + "}"
        if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
            return "[\n" + ",\n".join(inner + json.dumps(row) for row in value) + "\n" + indent + "]"
        return json.dumps(value)

    text = write(sidecar, "") + "\n"
    assert json.loads(text) == sidecar
    return text


def _check_against_torch(model, graph: bytes, size: int, tolerance: float = 1e-4) -> None:
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(0).normal(0, 1, (3, 3, size, size)).astype(np.float32)
    with torch.inference_mode():
        expected = [t.numpy() for t in model.forward_with_maps(torch.from_numpy(x))]
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUTS), {INPUT: x})
    for name, e, g in zip(OUTPUTS, expected, got):
        worst = float(np.abs(e - g).max()) if e.shape == g.shape else float("inf")
        if not worst <= tolerance * max(1.0, float(np.abs(e).max())):  # NaN fails too
            raise RuntimeError(f"ONNX Runtime does not reproduce PyTorch's {name}: shapes {e.shape} vs {g.shape}, "
                               f"largest difference {worst:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=named_path, default=None, help="the .pt checkpoint to export (default: the embedded model)")
    parser.add_argument("--opset", type=int_from(OPSETS[0], OPSETS[-1], "opset_number"), default=OPSET,
                        help=f"ONNX opset, {OPSETS[0]} to {OPSETS[-1]} (default: {OPSET})")
    args = parser.parse_args(argv)
    try:
        onnx_path, json_path = export(args.checkpoint, opset=args.opset)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a folder it may not write into: a message, not a traceback
        print(f"error: cannot export {args.checkpoint or 'the embedded model'}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 2**20:.2f} MB) and {json_path}")
    return 0


if __name__ == "__main__":
    run_command(main)
