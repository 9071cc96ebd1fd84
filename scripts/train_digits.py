#!/usr/bin/env python3
"""Train the bundled digits CNN and write it with its data split (deterministic).

Data: scikit-learn's bundled ``load_digits`` (1,797 grey 8x8 images, values 0..16,
no download), scaled to [0, 1]. A seeded permutation splits it into 1,000 training,
200 calibration and 597 evaluation images; only the training images are used to
fit. The network, trained in float64 numpy with hand-written backprop and Adam::

    image [N,1,8,8] -> Conv 3x3 (8) -> Relu ........................... a1
                    -> depthwise Conv 3x3 (group 8) -> Relu ............ a2
    a1 + a2 -> Add -> MaxPool 2x2 -> Conv 3x3 (16) -> Relu
            -> AveragePool 2x2 -> Flatten -> Gemm (10) ................. logits

Writes ``edgecal/data/digits_cnn.onnx`` (float32, opset 13) and
``edgecal/data/digits_split.npz`` (calib_x, eval_x float32 [N,1,8,8]; calib_y,
eval_y int64). Needs numpy, scikit-learn and onnx (``pip install -e '.[train]'``)::

    .venv/bin/python scripts/train_digits.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

OUT = Path(__file__).resolve().parent.parent / "edgecal" / "data"
SEED, EPOCHS, BATCH, LR = 0, 40, 32, 3e-3
N_TRAIN, N_CALIB = 1000, 200


def windows(x: np.ndarray) -> np.ndarray:
    """3x3 windows of x zero-padded by 1: (n, c, h, w, 3, 3)."""
    return sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))


class Net:
    def __init__(self, rng: np.random.Generator) -> None:
        def he(shape, fan_in):
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)

        self.p = {"w1": he((8, 1, 3, 3), 9), "b1": np.zeros(8), "wd": he((8, 1, 3, 3), 9), "bd": np.zeros(8),
                  "w3": he((16, 8, 3, 3), 72), "b3": np.zeros(16), "wf": he((10, 64), 64), "bf": np.zeros(10)}

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        p, c = self.p, {"x": x}
        c["c1"] = windows(x)
        a1 = np.maximum(np.einsum("nchwij,ocij->nohw", c["c1"], p["w1"]) + p["b1"][:, None, None], 0)
        c["a1"], c["cd"] = a1, windows(a1)
        a2 = np.maximum(np.einsum("nchwij,cij->nchw", c["cd"], p["wd"][:, 0]) + p["bd"][:, None, None], 0)
        c["a2"] = a2
        s = a1 + a2
        blocks = s.reshape(len(x), 8, 4, 2, 4, 2)
        m = blocks.max(axis=(3, 5))
        c["mask"] = blocks == m[:, :, :, None, :, None]
        c["c3"] = windows(m)
        a3 = np.maximum(np.einsum("nchwij,ocij->nohw", c["c3"], p["w3"]) + p["b3"][:, None, None], 0)
        c["a3"] = a3
        f = a3.reshape(len(x), 16, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(len(x), 64)
        c["f"] = f
        return f @ p["wf"].T + p["bf"], c

    def backward(self, dlogits: np.ndarray, c: dict) -> dict:
        p, g, n = self.p, {}, len(dlogits)
        g["wf"], g["bf"] = dlogits.T @ c["f"], dlogits.sum(0)
        df = (dlogits @ p["wf"]).reshape(n, 16, 2, 1, 2, 1)
        da3 = np.broadcast_to(df / 4, (n, 16, 2, 2, 2, 2)).reshape(n, 16, 4, 4) * (c["a3"] > 0)
        g["w3"], g["b3"] = np.einsum("nchwij,nohw->ocij", c["c3"], da3), da3.sum((0, 2, 3))
        dm = np.einsum("nohwij,ocij->nchw", windows(da3), p["w3"][:, :, ::-1, ::-1])
        ds = (c["mask"] * dm[:, :, :, None, :, None]).reshape(n, 8, 8, 8)
        da2 = ds * (c["a2"] > 0)
        g["wd"] = np.einsum("nchwij,nchw->cij", c["cd"], da2)[:, None]
        g["bd"] = da2.sum((0, 2, 3))
        da1 = ds + np.einsum("nchwij,cij->nchw", windows(da2), p["wd"][:, 0, ::-1, ::-1])
        da1 = da1 * (c["a1"] > 0)
        g["w1"], g["b1"] = np.einsum("nchwij,nohw->ocij", c["c1"], da1), da1.sum((0, 2, 3))
        return g


def softmax_grad(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(prob[np.arange(len(y)), y] + 1e-12))
    prob[np.arange(len(y)), y] -= 1
    return float(loss), prob / len(y)


def train(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Net:
    net = Net(rng)
    m = {k: np.zeros_like(v) for k, v in net.p.items()}
    v = {k: np.zeros_like(val) for k, val in net.p.items()}
    step = 0
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            logits, cache = net.forward(x[idx])
            loss, dlogits = softmax_grad(logits, y[idx])
            grads = net.backward(dlogits, cache)
            step += 1
            for k in net.p:
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                net.p[k] -= LR * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)
        print(f"epoch {epoch + 1}: loss {loss:.4f}", file=sys.stderr)
    return net


def export_onnx(net: Net, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    p = {k: v.astype(np.float32) for k, v in net.p.items()}
    inits = [numpy_helper.from_array(v, k) for k, v in p.items()] + [
        numpy_helper.from_array(np.array([-1, 64], np.int64), "flat_shape")]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["conv1"], name="conv1", **conv),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "wd", "bd"], ["dwconv"], name="dwconv", group=8, **conv),
        helper.make_node("Relu", ["dwconv"], ["relu2"], name="relu2"),
        helper.make_node("Add", ["relu1", "relu2"], ["residual"], name="residual"),
        helper.make_node("MaxPool", ["residual"], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "w3", "b3"], ["conv3"], name="conv3", **conv),
        helper.make_node("Relu", ["conv3"], ["relu3"], name="relu3"),
        helper.make_node("AveragePool", ["relu3"], ["pool2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["pool2", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgecal train_digits")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def main() -> int:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    tr, ca, ev = order[:N_TRAIN], order[N_TRAIN:N_TRAIN + N_CALIB], order[N_TRAIN + N_CALIB:]
    net = train(x[tr], y[tr], rng)
    acc = float(np.mean(net.forward(x[ev])[0].argmax(1) == y[ev]))
    print(f"float64 evaluation accuracy {acc:.4f} on {len(ev)} images", file=sys.stderr)
    export_onnx(net, OUT / "digits_cnn.onnx")
    np.savez_compressed(OUT / "digits_split.npz", calib_x=x[ca].astype(np.float32), calib_y=y[ca],
                        eval_x=x[ev].astype(np.float32), eval_y=y[ev])
    print(f"wrote {OUT / 'digits_cnn.onnx'} and {OUT / 'digits_split.npz'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
