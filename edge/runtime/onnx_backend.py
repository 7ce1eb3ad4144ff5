"""The onnxruntime backend: runs the ``onnx_float`` and ``onnx_int8`` files (float in, float out)."""

from __future__ import annotations

from edge.runtime.base import Backend, RuntimeUnavailable
from edge.runtime.manifest import ManifestError, ModelFile


def runtime_available() -> bool:
    """Whether onnxruntime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxBackend(Backend):
    """One ``onnx_float`` or ``onnx_int8`` file on an onnxruntime CPU session."""

    name = "onnxruntime"

    def __init__(self, entry: ModelFile, num_threads: int = 1):
        super().__init__(entry, num_threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable(
                "onnxruntime is not installed on this gateway "
                "(no wheel for 32-bit ARM): use the numpy or litert backend"
            ) from None
        opts = ort.SessionOptions()
        # Gateways run several services on few cores: one thread per model unless told otherwise.
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # On x86-64 CPUs without VNNI (AVX2 only, e.g. an AMD EPYC VM) the fused u8s8 int8 GEMM adds
        # products in saturating 16-bit pairs (VPMADDUBSW): the synthetic 3-class MLP's onnx_int8 drifted to a
        # mean error of 0.027 (95.8 % decisions) against 0.0045 (99.2 %) with this option, which makes
        # onnxruntime run those GEMMs as u8u8. No effect on VNNI or ARM CPUs; no measurable cost here.
        # A QOperator file (fused com.microsoft.QGemm with int8 weights) has no kernel under that option:
        # such a file is loaded without it.
        precise = ort.SessionOptions()
        for key in ("intra_op_num_threads", "inter_op_num_threads", "log_severity_level"):
            setattr(precise, key, getattr(opts, key))
        precise.add_session_config_entry("session.x64quantprecision", "1")
        self.session = self._session(ort, entry, precise, fallback=opts)
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = entry.info.get("output", outputs[0])
        if self.output_name not in outputs:
            raise ManifestError(f"{entry.path}: has no output '{self.output_name}' (it has {outputs})")

        self._outputs = [self.output_name]

    @staticmethod
    def _session(ort, entry: ModelFile, opts, *, fallback):
        """An inference session on ``opts``, else on ``fallback`` when ``opts`` has no kernel for a node."""
        try:
            return ort.InferenceSession(str(entry.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            if "NOT_IMPLEMENTED" not in str(e):
                raise ManifestError(f"{entry.path}: onnxruntime cannot load this model ({e})") from None
        try:
            return ort.InferenceSession(str(entry.path), sess_options=fallback, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ManifestError(f"{entry.path}: onnxruntime cannot load this model ({e})") from None

    def _run(self, scaled):
        return self.session.run(self._outputs, {self.input_name: scaled})[0]
