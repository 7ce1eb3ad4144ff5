"""The LiteRT backend: runs ``tflite_int8`` files with ai-edge-litert, or tflite-runtime where that is all there is.

The file takes int8 in and gives int8 out; this backend quantises the standardised
rows with the input tensor's scale and zero point and dequantises the output, so
callers see floats like every other backend.
"""

from __future__ import annotations

import numpy as np

from edge.runtime.base import Backend, RuntimeUnavailable, dequantize, quantize
from edge.runtime.manifest import ManifestError, ModelFile


def _interpreter_class():
    """(Interpreter class, module name): ai-edge-litert first, tflite-runtime (numpy < 2 only) second."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        return None, None


def runtime_available() -> bool:
    """Whether a LiteRT interpreter (ai-edge-litert or tflite-runtime) is installed on this gateway."""
    return _interpreter_class()[0] is not None


class LiteRTBackend(Backend):
    """Runs ``tflite_int8`` files with the LiteRT interpreter, quantising inputs and dequantising outputs."""

    name = "litert"

    def __init__(self, entry: ModelFile, num_threads: int = 1):
        super().__init__(entry, num_threads)
        Interpreter, self.module = _interpreter_class()
        if Interpreter is None:
            raise RuntimeUnavailable(
                "neither ai-edge-litert nor tflite-runtime is installed on "
                "this gateway: use the numpy or onnxruntime backend"
            )
        try:
            self.interpreter = Interpreter(model_path=str(entry.path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ManifestError(f"{entry.path}: {self.module} cannot load this model ({e})") from None
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self.input_index, self.output_index = inp["index"], out["index"]
        self.input_dtype, self.output_dtype = inp["dtype"], out["dtype"]
        self.input_quant, self.output_quant = inp["quantization"], out["quantization"]
        self.batch = int(inp["shape"][0])
        self._quantised_in = self.input_dtype == np.int8
        self._quantised_out = self.output_dtype == np.int8
        expected = entry.info.get("input_quant")
        if (
            expected
            and self.input_dtype == np.int8
            and (
                not np.isclose(self.input_quant[0], expected["scale"]) or self.input_quant[1] != expected["zero_point"]
            )
        ):
            raise ManifestError(
                f"{entry.path}: input quantisation {self.input_quant} differs from the manifest's {expected}"
            )

    def _run(self, scaled):
        n = len(scaled)
        if n != self.batch:
            # Resizing reallocates every tensor: keep the last batch size, most calls repeat it.
            self.interpreter.resize_tensor_input(self.input_index, [n, scaled.shape[1]])
            self.interpreter.allocate_tensors()
            self.batch = n
        x = quantize(scaled, *self.input_quant) if self._quantised_in else scaled
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output_index)
        return dequantize(y, *self.output_quant) if self._quantised_out else y
