"""Write a full-int8 TFLite flatbuffer for a dense network, without TensorFlow.

TensorFlow's converter is a 274 MB wheel; our networks need four builtin ops
(FULLY_CONNECTED with fused RELU, LOGISTIC, TANH, SOFTMAX), so we write the
flatbuffer ourselves with the generated TFLite schema that ai-edge-litert ships.
Quantisation follows the TFLite int8 spec: weights symmetric int8 per output channel
(zero point 0), biases int32 with scale ``s_input * s_weight``, activations asymmetric
int8 from the plain min/max of the calibration rows (no moving average: with small
batches it collapsed the logit range, field notes), LOGISTIC/SOFTMAX outputs fixed at
scale 1/256 and zero point -128, TANH at 1/128 and 0. Input and output are int8; their
scale and zero point go into the manifest.
"""

from __future__ import annotations

import flatbuffers
import numpy as np

from edge.runtime.numpy_backend import ACTIVATIONS
from training.export.network import DenseNetwork, UnsupportedModelError

try:  # the generated schema (flatc --python --gen-object-api) shipped with ai-edge-litert
    from ai_edge_litert import schema_py_generated as tfl
except ImportError:  # pragma: no cover - depends on the install
    tfl = None

# Beyond these inputs LOGISTIC and TANH saturate within their fixed output step, so a
# wider calibrated range would only waste int8 resolution around the decision point.
SATURATION = {"logistic": 8.0, "tanh": 4.0}
FIXED_OUTPUT_QUANT = {"logistic": (1.0 / 256, -128), "softmax": (1.0 / 256, -128), "tanh": (1.0 / 128, 0)}
_OP = {"fc": 9, "logistic": 14, "softmax": 25, "tanh": 28}
# Op versions as TensorFlow's converter writes them for int8 kernels (the resolver checks them).
_OP_VERSION = {"fc": 4, "logistic": 2, "softmax": 2, "tanh": 2}


def activation_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0 exactly.

    >>> activation_quant(0.0, 25.5)
    (0.1, -128)
    >>> activation_quant(-1.0, 1.0)
    (0.00784313725490196, 0)
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:  # a dead layer: any positive scale will do
        hi = lo + 1e-3
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def weight_quant(W: np.ndarray, per_channel: bool, min_scale=0.0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in TFLite layout (units, inputs) and their scale(s) (at least ``min_scale``)."""
    Wt = np.asarray(W, dtype=np.float64).T
    amax = np.abs(Wt).max(axis=1) if per_channel else np.full(Wt.shape[0], np.abs(Wt).max())
    scales = np.maximum(np.where(amax > 0, amax / 127.0, 1.0), min_scale)
    if not per_channel:
        scales = np.full_like(scales, scales.max())
    q = np.clip(np.round(Wt / scales[:, None]), -127, 127).astype(np.int8)
    return q, (scales if per_channel else scales[:1])


class _AlignedBuffer(tfl.BufferT if tfl else object):
    """A constant buffer whose bytes start on a 16-byte boundary (int32 biases read in place)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            raw = self.data.tobytes()
            builder.StartVector(1, len(raw), 16)
            builder.head -= len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            builder.vectorNumElems = len(raw)
            data = builder.EndVector()
        tfl.BufferStart(builder)
        if data is not None:
            tfl.BufferAddData(builder, data)
        return tfl.BufferEnd(builder)


class _Graph:
    """Collects tensors, buffers and operators of one subgraph."""

    def __init__(self):
        self.tensors, self.operators, self.opcodes = [], [], []
        self.buffers = [tfl.BufferT()]  # buffer 0: the empty sentinel

    def tensor(self, name, shape, ttype, scale=None, zero_point=None, data=None, channel_dim=0):
        t = tfl.TensorT()
        t.name, t.type = name, ttype
        t.shape = np.array(shape, dtype=np.int32)
        if shape[0] == 1 and data is None:
            t.shapeSignature = np.array([-1, *shape[1:]], dtype=np.int32)  # any batch size
        if scale is not None:
            q = tfl.QuantizationParametersT()
            q.scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            q.zeroPoint = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
            q.quantizedDimension = channel_dim
            t.quantization = q
        if data is not None:
            buf = _AlignedBuffer()
            buf.data = np.ascontiguousarray(data)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, kind, inputs, outputs, options_type=0, options=None):
        if kind not in self.opcodes:
            self.opcodes.append(kind)
        o = tfl.OperatorT()
        o.opcodeIndex = self.opcodes.index(kind)
        o.inputs = np.array(inputs, dtype=np.int32)
        o.outputs = np.array(outputs, dtype=np.int32)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)


def calibration_ranges(net: DenseNetwork, X_scaled: np.ndarray) -> list[dict]:
    """Per layer: min/max of its input, of its pre-activation output and of its output."""
    ranges, h = [], np.asarray(X_scaled, dtype=np.float64)
    for i in range(len(net.weights)):
        z = h @ net.weights[i] + net.biases[i]
        out = ACTIVATIONS[net.activations[i]](z.copy())
        ranges.append({"in": (h.min(), h.max()), "pre": (z.min(), z.max()), "out": (out.min(), out.max())})
        h = out
    return ranges


def build_tflite(
    net: DenseNetwork, X_scaled: np.ndarray, per_channel: bool = True, description: str = "frugalsense"
) -> tuple[bytes, dict]:
    """(flatbuffer bytes, info with input_quant/output_quant) for ``net`` calibrated on ``X_scaled``."""
    if tfl is None:
        raise UnsupportedModelError(
            "tflite_int8 export needs the TFLite schema from ai-edge-litert (pip install ai-edge-litert)"
        )
    bad = [a for a in net.activations if a not in ("identity", "relu", "logistic", "tanh", "softmax")]
    if bad:
        raise UnsupportedModelError(f"tflite_int8 cannot express activation(s) {bad}")
    ranges = calibration_ranges(net, X_scaled)
    g = _Graph()
    s_in, z_in = activation_quant(*ranges[0]["in"])
    x = g.tensor("features", [1, net.weights[0].shape[0]], tfl.TensorType.INT8, s_in, z_in)
    first = x
    for i, (W, b, act) in enumerate(zip(net.weights, net.biases, net.activations, strict=True)):
        units = W.shape[1]
        # A unit with near-zero weights but a bias would overflow int32 at s_in * s_w: widen
        # its weight scale until the bias fits (onnxruntime's quantiser does the same).
        min_s_w = np.abs(np.asarray(b, dtype=np.float64)) / (s_in * 2.0**30)
        qW, s_w = weight_quant(W, per_channel, min_s_w)
        s_b = s_in * s_w
        qb = np.round(np.asarray(b, dtype=np.float64) / np.broadcast_to(s_b, (units,))).astype(np.int32)
        w = g.tensor(
            f"dense_{i}/weight", list(qW.shape), tfl.TensorType.INT8, s_w, np.zeros(len(s_w), dtype=np.int64), qW
        )
        bias = g.tensor(f"dense_{i}/bias", [units], tfl.TensorType.INT32, s_b, np.zeros(len(s_b), dtype=np.int64), qb)
        fused = act in ("relu",)
        lo, hi = ranges[i]["out"] if fused else ranges[i]["pre"]
        if act in SATURATION:
            lo, hi = max(lo, -SATURATION[act]), min(hi, SATURATION[act])
        s_out, z_out = activation_quant(lo, hi)
        y = g.tensor(f"dense_{i}/out", [1, units], tfl.TensorType.INT8, s_out, z_out)
        opts = tfl.FullyConnectedOptionsT()
        opts.fusedActivationFunction = tfl.ActivationFunctionType.RELU if fused else tfl.ActivationFunctionType.NONE
        g.op("fc", [x, w, bias], [y], tfl.BuiltinOptions.FullyConnectedOptions, opts)
        if act in FIXED_OUTPUT_QUANT:
            s_out, z_out = FIXED_OUTPUT_QUANT[act]
            a = g.tensor(f"dense_{i}/{act}", [1, units], tfl.TensorType.INT8, s_out, z_out)
            if act == "softmax":
                so = tfl.SoftmaxOptionsT()
                so.beta = 1.0
                g.op(act, [y], [a], tfl.BuiltinOptions.SoftmaxOptions, so)
            else:
                g.op(act, [y], [a])
            y = a
        x, s_in = y, s_out
    sub = tfl.SubGraphT()
    sub.tensors, sub.operators, sub.name = g.tensors, g.operators, "main"
    sub.inputs, sub.outputs = np.array([first], dtype=np.int32), np.array([x], dtype=np.int32)
    model = tfl.ModelT()
    model.version, model.description = 3, description
    model.subgraphs, model.buffers = [sub], g.buffers
    model.operatorCodes = []
    for kind in g.opcodes:
        oc = tfl.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = _OP[kind]
        oc.version = _OP_VERSION[kind]
        model.operatorCodes.append(oc)
    sig = tfl.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs = [_tensor_map("features", first)]
    sig.outputs = [_tensor_map("scores", x)]
    model.signatureDefs = [sig]
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    info = {
        "input_quant": _quant_of(g.tensors[first]),
        "output_quant": _quant_of(g.tensors[x]),
        "per_channel": per_channel,
    }
    return bytes(builder.Output()), info


def _quant_of(tensor) -> dict:
    q = tensor.quantization
    return {"scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}


def _tensor_map(name, index):
    m = tfl.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m
