"""Write the ONNX formats: ``onnx_float`` (skl2onnx) and ``onnx_int8`` (onnxruntime static quantisation).

``onnx_float`` is skl2onnx's own conversion of the model (on standardised input), an
independent path from our dense-network reading, so parity with the ``numpy`` file
checks both. ``onnx_int8`` quantises a plain MatMul/Add graph of the dense network
(skl2onnx turns linear models into ``ai.onnx.ml`` operators that have no int8 kernel),
calibrated on the calibration rows with plain min/max.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from training.export.network import DenseNetwork, Extracted, UnsupportedModelError

OPSET = 17
INPUT, OUTPUT = "features", "scores"
_ONNX_ACT = {"relu": "Relu", "logistic": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax", "exp": "Exp"}
# QOperator: QLinearMatMul/QLinearAdd nodes; QDQ: float graph with Quantize/Dequantize pairs
# that onnxruntime fuses. docs/inference-bench.json compares both; QDQ is the default (see docs/models.md).
QUANT_FORMATS = ("qdq", "qoperator")


def onnx_float_bytes(ex: Extracted) -> tuple[bytes, dict]:
    """skl2onnx conversion without ZipMap; returns (model bytes, info with the output name)."""
    from skl2onnx import to_onnx

    n = len(ex.mean)
    sample = np.zeros((1, n), dtype=np.float32)
    est = ex.onnx_estimator
    options = {id(est): {"zipmap": False}} if ex.task == "classification" else None
    try:
        onx = to_onnx(est, sample, options=options)
    except Exception as e:  # skl2onnx raises many types for unsupported models
        raise UnsupportedModelError(f"skl2onnx cannot convert {ex.model_type}: {e}") from None
    outputs = [o.name for o in onx.graph.output]
    name = "probabilities" if ex.task == "classification" else outputs[0]
    if name not in outputs:
        raise UnsupportedModelError(f"skl2onnx gave outputs {outputs}, expected '{name}'")
    return onx.SerializeToString(), {"output": name}


def dense_graph(net: DenseNetwork):
    """A float ONNX graph ``features -> scores`` of the dense network."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, h = [], [], INPUT
    for i, (W, b, act) in enumerate(zip(net.weights, net.biases, net.activations, strict=True)):
        inits += [
            numpy_helper.from_array(np.asarray(W, np.float32), f"W{i}"),
            numpy_helper.from_array(np.asarray(b, np.float32), f"B{i}"),
        ]
        last = i == len(net.weights) - 1
        z = OUTPUT if last and act == "identity" else f"z{i}"
        nodes += [helper.make_node("MatMul", [h, f"W{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"B{i}"], [z])]
        if act != "identity":
            h = OUTPUT if last else f"h{i}"
            kw = {"axis": 1} if act == "softmax" else {}
            nodes.append(helper.make_node(_ONNX_ACT[act], [z], [h], **kw))
        else:
            h = z
    n_in, n_out = net.weights[0].shape[0], net.weights[-1].shape[1]
    graph = helper.make_graph(
        nodes,
        "frugalsense_dense",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="frugalsense")
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    return model


class _Rows:
    """Calibration reader: the rows in batches (min/max is global, batch size does not matter)."""

    def __init__(self, X: np.ndarray, batch: int = 256):
        self._batches = iter([{INPUT: X[i : i + batch]} for i in range(0, len(X), batch)])

    def get_next(self):
        return next(self._batches, None)


def onnx_int8_bytes(
    net: DenseNetwork, X_scaled: np.ndarray, quant_format: str = "qdq", per_channel: bool = True
) -> tuple[bytes, dict]:
    """Statically quantised int8 ONNX of ``net``; float input and output."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quant_format not in QUANT_FORMATS:
        raise ValueError(f"quant_format must be one of {QUANT_FORMATS}")
    with tempfile.TemporaryDirectory() as tmp:
        f32, pre, q8 = (Path(tmp) / n for n in ("f32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(dense_graph(net), f32)
        # sympy is no longer an onnxruntime dependency: symbolic shape inference would fail.
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(q8),
            _Rows(np.asarray(X_scaled, np.float32)),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        data = q8.read_bytes()
    return data, {"output": OUTPUT, "quant_format": quant_format, "per_channel": per_channel}
