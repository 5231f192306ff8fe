"""An ONNX graph as nnstep layers (docs/import.md). The file is parsed by onnx (protobuf, never
pickle) and checked with ``onnx.checker`` first.

Which ONNX operator a layer type is, its class says (``onnx_ops``, layers/*.py); how attributes and
initializers carry over is here, one converter per operator, with ONNX's conventions undone:
Gemm's transA/transB, alpha and beta; MatMul's weight stored (in, out); the LSTM's gates stacked
i, o, f, c (torch and nnstep: i, f, g, o) and its biases as one (Wb, Rb) row; an LSTM/RNN output
with its num_directions axis, removed by the Squeeze (or Reshape) after it.

nnstep steps in training mode, so a BatchNormalization normalizes with the batch's statistics (ONNX's
training_mode = 1) and carries the graph's running mean and variance over as its state (nnstep's
momentum is 1 − ONNX's). The model's own forward, for the check before writing, is
``onnx.reference.ReferenceEvaluator`` on the graph in float64 with training_mode = 1.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ScenarioError, cut
from ..layers import registry
from .writer import Imported, Model, Unmappable, unique_name


def what_maps() -> str:
    ops = []
    for cls in registry.builtin_types().values():
        ops += [o for o in cls.onnx_ops if o not in ops]
    return ", ".join(ops)


def _import_onnx(source: str):
    try:
        import onnx
        import onnx.reference  # noqa: F401
    except ImportError:
        raise ScenarioError("importing an ONNX model needs onnx: pip install 'nnstep[onnx]'", file=source) from None
    return onnx


def _read(source: str):
    onnx = _import_onnx(source)
    if not os.path.exists(source):
        raise ScenarioError("no such file", file=source)
    if not os.path.isfile(source):
        raise ScenarioError("is not a file", file=source)
    try:
        model = onnx.load(source, load_external_data=False)
    except Exception as e:
        raise ScenarioError(f"cannot read it as an ONNX model: {type(e).__name__}: {cut(str(e), 200)}",
                            file=source) from None
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ScenarioError(f"keeps {len(external)} of its weights in external data files ({cut(external[0])}, ...), "
                            "which nnstep import does not read: save the model with its weights inside "
                            "(onnx.save(model, path, save_as_external_data=False))", file=source)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        msg = " ".join(str(e).split())
        raise ScenarioError(f"fails onnx.checker: {cut(msg, 300)}", file=source) from None
    return onnx, model


def _float64(onnx, model):
    """A copy of the model computing in float64, batchnorm in training mode: the reference."""
    from onnx import TensorProto, numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        if tt.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
            tt.elem_type = TensorProto.DOUBLE
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type in (TensorProto.FLOAT,
                                                                                   TensorProto.FLOAT16):
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
                    a.i = TensorProto.DOUBLE
        if n.op_type == "BatchNormalization":
            for a in list(n.attribute):
                if a.name == "training_mode":
                    n.attribute.remove(a)
            n.attribute.append(onnx.helper.make_attribute("training_mode", 1))
            while len(n.output) < 3:
                n.output.append(f"{n.output[0]}__nnstep_running_{len(n.output)}")
    return m


def _attrs(onnx, node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class _Mapper:
    def __init__(self, onnx, model, source, values, consts):
        self.onnx, self.g, self.source = onnx, model.graph, source
        self.values = values                    # every value of the reference run, by name
        self.consts = consts                    # initializers and Constant outputs
        self.names: dict[str, str] = {}         # ONNX value -> nnstep tensor name
        self.value_of: dict[str, str] = {}      # layer name -> ONNX value holding its output
        self.layers: list[Imported] = []
        self.taken: set = set()
        self.pending: dict[str, Imported] = {}  # an LSTM/RNN's Y (with its directions axis) -> its layer
        self.consumers: dict[str, list] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        for o in self.g.output:
            self.consumers.setdefault(o.name, []).append(None)
        self.skip: set = set()                  # nodes folded into an earlier one (MatMul+Add's Add)
        self.tmajor: dict[str, str] = {}        # a time-major copy of batch-first data -> the data's name
        self.tmajor_out: dict[str, Imported] = {}   # an LSTM/RNN's squeezed time-major output -> its layer
        self.maps = what_maps()
        self.count: dict[str, int] = {}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)

    def refuse(self, node, why):
        raise Unmappable(self.source, node.name or node.output[0], node.op_type, why, self.maps)

    def shape(self, v):
        return tuple(np.shape(self.values[v]))

    def tensor(self, node, v):
        if v in self.names:
            return self.names[v]
        if v in self.pending:
            self.refuse(node, f"reads {v}, an {self.pending[v].type.upper()}'s output with its num_directions axis; "
                              "nnstep's takes it squeezed (Squeeze axis 2, as after an exported LSTM)")
        if v in self.consts:
            self.refuse(node, f"reads the constant {v!r} where nnstep needs a tensor of the batch")
        self.refuse(node, f"reads {v!r}, which nnstep does not compute")

    def const(self, node, v, what):
        if v not in self.consts:
            self.refuse(node, f"takes its {what} from {v!r}, computed in the graph; nnstep needs an initializer")
        return np.asarray(self.consts[v], dtype=np.float64)

    def add(self, node, typ, options, inputs, params=None, states=None, bias=True, out=None):
        base = node.name or f"{node.op_type.lower()}{self.count.setdefault(node.op_type, 0) + 1}"
        self.count[node.op_type] = self.count.get(node.op_type, 0) + 1
        L = Imported(name=unique_name(base, self.taken), type=typ, options=options, inputs=inputs, params=params or {},
                     states=states or {}, origin=f"{node.op_type} {node.name}".strip(), bias=bias)
        self.layers.append(L)
        v = out or node.output[0]
        self.names[v] = L.name
        self.value_of[L.name] = v
        return L

    def run(self):
        inputs = [i.name for i in self.g.input if i.name not in self.consts]
        self.names[inputs[0]] = "input"
        static = self.static = set(self.consts)   # values that do not depend on the batch's numbers
        for node in self.g.node:
            if id(node) in self.skip:
                continue
            if node.op_type == "Constant":
                continue
            if node.op_type == "Shape" or (node.input and all(i in static or not i for i in node.input)):
                # a shape computation (Shape -> Gather -> Concat -> a Reshape's shape, as exporters
                # write view(x.size(0), -1)), or a constant made of constants (Identity of a weight,
                # an LSTM's zero initial state): the value the run gave, no layer
                for o in node.output:
                    if o:
                        static.add(o)
                        if o in self.values:
                            self.consts[o] = self.values[o]
                continue
            conv = getattr(self, "c_" + node.op_type, None)
            if conv is None:
                self.refuse(node, "does not map to an nnstep layer")
            a = _attrs(self.onnx, node)
            for o in node.output[:1]:
                shp = np.shape(self.values.get(o)) if o in self.values else None
                N = self.shape(inputs[0])[0]
                if (shp is not None and not self.time_major(node, a) and node.op_type not in ("LSTM", "RNN")
                        and (len(shp) < 1 or shp[0] != N)):
                    self.refuse(node, f"gives shape {list(shp)}: nnstep keeps the batch first ({N} here), and every "
                                      "layer works on each sample")
            conv(node, a)
        out = self.g.output[0].name
        if out not in self.names or self.names[out] == "input":
            raise ScenarioError("the graph's output is not computed by a layer nnstep maps", file=self.source)
        if self.layers[-1].name != self.names[out]:
            raise ScenarioError(f"the graph returns {out}, which is not the last layer computed", file=self.source)
        return self.layers, self.shape(out)[1:]

    def one(self, node):
        return [self.tensor(node, node.input[0])]

    # an exporter's LSTM/RNN over time-major data (layout 0): x (N, T, I) -> Transpose [1, 0, 2] ->
    # LSTM -> Y (T, 1, N, H) -> Squeeze axis 1 -> Transpose [1, 0, 2] -> (N, T, H), as torch.onnx
    # writes nn.LSTM(batch_first=True); the pair of transposes is nnstep's batch-first layer itself
    def time_major(self, node, a) -> bool:
        """Whether the node is one of that pattern's time-major steps (no layer of its own)."""
        if node.op_type == "Transpose" and list(a.get("perm", [])) == [1, 0, 2]:
            if node.input[0] in self.tmajor_out:
                return False                      # back to batch first: checked as usual
            users = [u for u in self.consumers.get(node.output[0], []) if u is None or u.op_type != "Shape"]
            return bool(users) and all(u is not None and u.op_type in ("LSTM", "RNN") and
                                       _attrs(self.onnx, u).get("layout", 0) == 0 and u.input[0] == node.output[0]
                                       for u in users)
        return node.op_type == "Squeeze" and node.input[0] in self.pending and self.pending[node.input[0]].time_major


    # -- operators --------------------------------------------------------------------------------
    def c_Gemm(self, node, a):
        if a.get("transA", 0):
            self.refuse(node, "has transA = 1 (the batch would not be first)")
        W = self.const(node, node.input[1], "weight B")
        W = W if a.get("transB", 0) else W.T              # nnstep's (out, in)
        W = W * a.get("alpha", 1.0) if a.get("alpha", 1.0) != 1.0 else W
        p = {"weight": W}
        if len(node.input) > 2 and node.input[2]:
            C = self.const(node, node.input[2], "bias C") * a.get("beta", 1.0)
            if C.size not in (1, W.shape[0]):
                self.refuse(node, f"has a bias C of shape {list(C.shape)}; nnstep's linear takes one per output")
            p["bias"] = np.broadcast_to(C.reshape(-1), (W.shape[0],)).copy()
        self.add(node, "linear", {"out": int(W.shape[0])}, self.one(node), p, bias="bias" in p)

    def c_MatMul(self, node, a):
        x, w = node.input
        if w in self.consts and x not in self.consts:
            W = self.const(node, w, "weight").T
            if W.ndim != 2:
                self.refuse(node, "multiplies by a constant that is not a matrix")
            p = {"weight": W}
            out = node.output[0]
            users = self.consumers.get(out, [])
            if len(users) == 1 and users[0] is not None and users[0].op_type == "Add":
                add = users[0]
                other = add.input[1] if add.input[0] == out else add.input[0]
                if other in self.consts and np.asarray(self.consts[other]).size == W.shape[0]:
                    p["bias"] = np.asarray(self.consts[other], dtype=np.float64).reshape(-1)
                    self.skip.add(id(add))
                    self.add(node, "linear", {"out": int(W.shape[0])}, self.one(node), p, out=add.output[0])
                    self.layers[-1].origin = f"MatMul+Add {node.name}".strip()
                    return
            self.add(node, "linear", {"out": int(W.shape[0])}, self.one(node), p, bias=False)
            return
        self.add(node, "matmul", {}, [self.tensor(node, x), self.tensor(node, w)])

    def c_Conv(self, node, a):
        W = self.const(node, node.input[1], "weight")
        nd = W.ndim - 2
        if nd not in (1, 2):
            self.refuse(node, f"is a {nd}-d convolution; nnstep has conv1d and conv2d")
        if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1] * nd)) or \
                _s(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            self.refuse(node, "uses group, dilations or auto_pad, which nnstep's convolutions have not")
        pads = list(a.get("pads", [0] * (2 * nd)))
        if pads[:nd] != pads[nd:]:
            self.refuse(node, f"pads {pads} unevenly; nnstep pads both sides alike")
        p = {"weight": W}
        if len(node.input) > 2 and node.input[2]:
            p["bias"] = self.const(node, node.input[2], "bias")
        opts = {"out_channels": int(W.shape[0]), "kernel_size": _ints(W.shape[2:]),
                "stride": _ints(a.get("strides", [1] * nd)), "padding": _ints(pads[:nd])}
        self.add(node, f"conv{nd}d", opts, self.one(node), p, bias="bias" in p)

    def _pool(self, node, a, kind):
        k = list(a["kernel_shape"])
        nd = len(k)
        if nd not in (1, 2):
            self.refuse(node, f"pools over {nd} dims; nnstep pools over 1 or 2")
        pads = list(a.get("pads", [0] * (2 * nd)))
        if pads[:nd] != pads[nd:]:
            self.refuse(node, f"pads {pads} unevenly; nnstep pads both sides alike")
        if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1] * nd)) or \
                _s(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            self.refuse(node, "uses ceil_mode, dilations or auto_pad, which nnstep's pooling has not")
        if kind == "avg" and any(pads) and not a.get("count_include_pad", 0):
            self.refuse(node, "pads without count_include_pad; nnstep's average counts the padding, as torch's default")
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            self.refuse(node, "has its Indices output used")
        opts = {"kernel_size": _ints(k), "stride": _ints(a.get("strides", [1] * nd)), "padding": _ints(pads[:nd])}
        self.add(node, f"{kind}pool{nd}d", opts, self.one(node))

    def _global(self, node, kind):
        spatial = self.shape(node.input[0])[2:]
        if len(spatial) not in (1, 2):
            self.refuse(node, f"pools over {len(spatial)} dims; nnstep pools over 1 or 2")
        k = _ints(spatial)
        self.add(node, f"{kind}pool{len(spatial)}d", {"kernel_size": k, "stride": k, "padding": 0}, self.one(node))

    def c_GlobalMaxPool(self, node, a):
        self._global(node, "max")

    def c_GlobalAveragePool(self, node, a):
        self._global(node, "avg")

    def c_MaxPool(self, node, a):
        self._pool(node, a, "max")

    def c_AveragePool(self, node, a):
        self._pool(node, a, "avg")

    def c_BatchNormalization(self, node, a):
        x = self.one(node)
        rank = len(self.shape(node.input[0]))
        if rank not in (2, 3, 4):
            self.refuse(node, f"normalizes a rank-{rank} tensor; nnstep's batchnorm takes (N, C), (N, C, L) or (N, C, H, W)")
        for o in node.output[1:]:
            if o and self.consumers.get(o):
                self.refuse(node, "has its running mean or variance output used")
        p = {"weight": self.const(node, node.input[1], "scale"), "bias": self.const(node, node.input[2], "bias")}
        st = {"running_mean": self.const(node, node.input[3], "mean"),
              "running_var": self.const(node, node.input[4], "variance")}
        opts = {"eps": float(a.get("epsilon", 1e-5)), "momentum": float(1.0 - a.get("momentum", 0.9)), "affine": True}
        self.add(node, "batchnorm", opts, x, p, st)

    def c_LayerNormalization(self, node, a):
        rank = len(self.shape(node.input[0]))
        axis = a.get("axis", -1) % rank
        if axis == 0:
            self.refuse(node, "normalizes over the batch dimension too")
        for o in node.output[1:]:
            if o and self.consumers.get(o):
                self.refuse(node, "has its Mean or InvStdDev output used")
        W = self.const(node, node.input[1], "scale")
        B = self.const(node, node.input[2], "bias") if len(node.input) > 2 and node.input[2] else np.zeros_like(W)
        shp = self.shape(node.input[0])[axis:]
        p = {"weight": np.broadcast_to(W, shp).copy(), "bias": np.broadcast_to(B, shp).copy()}
        self.add(node, "layernorm", {"eps": float(a.get("epsilon", 1e-5)), "affine": True, "dims": rank - axis},
                 self.one(node), p)

    def _simple(self, node, typ, opts=None):
        self.add(node, typ, opts or {}, self.one(node))

    def c_Relu(self, node, a):
        self._simple(node, "relu")

    def c_Sigmoid(self, node, a):
        self._simple(node, "sigmoid")

    def c_Tanh(self, node, a):
        self._simple(node, "tanh")

    def c_LeakyRelu(self, node, a):
        self._simple(node, "leaky_relu", {"negative_slope": float(a.get("alpha", 0.01))})

    def c_Gelu(self, node, a):
        self._simple(node, "gelu", {"approximate": _s(a.get("approximate", "none"))})

    def c_Softmax(self, node, a):
        self._softmax(node, a, "softmax")

    def c_LogSoftmax(self, node, a):
        self._softmax(node, a, "log_softmax")

    def _softmax(self, node, a, typ):
        rank = len(self.shape(node.input[0]))
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        if axis % rank == 0:
            self.refuse(node, "runs over the batch dimension")
        if axis % rank != rank - 1 and self.opset < 13:
            self.refuse(node, "is opset < 13's softmax over the flattened trailing dims, which nnstep's is not")
        self._simple(node, typ, {"dim": axis})

    def c_Identity(self, node, a):
        self._simple(node, "identity")

    def _alias(self, node):
        self.names[node.output[0]] = self.tensor(node, node.input[0])

    def c_Flatten(self, node, a):
        rank = len(self.shape(node.input[0]))
        if a.get("axis", 1) % max(rank, 1) != 1:
            self.refuse(node, f"has axis {a.get('axis', 1)}: its 2-d output mixes the batch with other dimensions "
                              "(axis 1 keeps the batch first)")
        self._simple(node, "flatten")

    def c_Reshape(self, node, a):
        if node.input[1] not in self.consts and node.input[1] not in self.static:
            self.refuse(node, "takes its shape from the batch's values")
        if node.input[0] in self.pending:
            return self._squeeze_rnn(node)
        self.add(node, "reshape", {"shape": list(self.shape(node.output[0])[1:])}, self.one(node))

    def c_Squeeze(self, node, a):
        if node.input[0] in self.pending:
            return self._squeeze_rnn(node)
        self.refuse(node, "does not map to an nnstep layer (only the Squeeze of an LSTM's or RNN's directions axis does)")

    def _squeeze_rnn(self, node):
        L = self.pending[node.input[0]]
        if L.time_major:                            # (T, 1, N, H) -> (T, N, H), then a Transpose
            y = self.shape(node.input[0])
            if self.shape(node.output[0]) != (y[0],) + y[2:]:
                self.refuse(node, "does not remove exactly the directions axis of " + L.name)
            del self.pending[node.input[0]]
            self.tmajor_out[node.output[0]] = L
            return
        del self.pending[node.input[0]]
        if self.shape(node.output[0]) != self.shape(node.input[0])[:2] + self.shape(node.input[0])[3:]:
            self.refuse(node, "does not remove exactly the directions axis of " + L.name)
        self.names[node.output[0]] = L.name
        self.value_of[L.name] = node.output[0]

    def c_Transpose(self, node, a):
        if self.time_major(node, a):
            self.tmajor[node.output[0]] = self.tensor(node, node.input[0])
            return
        if node.input[0] in self.tmajor_out:
            if list(a.get("perm", [])) != [1, 0, 2]:
                self.refuse(node, "permutes an LSTM's or RNN's time-major output other than back to batch first")
            L = self.tmajor_out.pop(node.input[0])
            self.names[node.output[0]] = L.name
            self.value_of[L.name] = node.output[0]
            return
        rank = len(self.shape(node.input[0]))
        perm = list(a.get("perm", list(range(rank))[::-1]))
        moved = [i for i, p in enumerate(perm) if p != i]
        if not moved:
            return self._alias(node)
        if len(moved) != 2 or 0 in moved:
            self.refuse(node, f"permutes {perm}; nnstep's transpose swaps two dimensions, the batch kept first")
        self._simple(node, "transpose", {"dims": moved})

    def _merge(self, node, typ):
        a, b = node.input
        ca, cb = a in self.consts, b in self.consts
        if not ca and not cb:
            if self.shape(a) != self.shape(b):
                self.refuse(node, f"broadcasts {list(self.shape(a))} with {list(self.shape(b))}; nnstep's {typ} takes "
                                  "tensors of the same shape")
            self.add(node, typ, {}, [self.tensor(node, a), self.tensor(node, b)])
            return
        c = np.asarray(self.consts[a if ca else b])
        if typ == "mul" and c.size == 1 and not (ca and cb):
            self.add(node, "scale", {"by": float(c.reshape(-1)[0])}, [self.tensor(node, b if ca else a)])
            return
        self.refuse(node, f"{'adds' if typ == 'add' else 'multiplies by'} a constant; nnstep maps a constant only as "
                          "the bias of a MatMul before it, or (Mul) as one number")

    def c_Add(self, node, a):
        self._merge(node, "add")

    def c_Mul(self, node, a):
        self._merge(node, "mul")

    def c_Concat(self, node, a):
        rank = len(self.shape(node.output[0]))
        if a["axis"] % rank == 0:
            self.refuse(node, "concatenates along the batch dimension")
        self.add(node, "concat", {"dim": int(a["axis"])}, [self.tensor(node, v) for v in node.input])

    def c_Gather(self, node, a):
        data, idx = node.input
        if data not in self.consts or a.get("axis", 0) != 0:
            self.refuse(node, "is no embedding lookup (Gather of a constant table, axis 0, by the token indices)")
        W = self.const(node, data, "table")
        if W.ndim != 2:
            self.refuse(node, "gathers from a table that is not (num, dim)")
        self.add(node, "embedding", {"num": int(W.shape[0]), "dim": int(W.shape[1])}, [self.tensor(node, idx)],
                 {"weight": W})

    def _recurrent(self, node, a, typ):
        gates = 4 if typ == "lstm" else 1
        layout = a.get("layout", 0)
        if _s(a.get("direction", "forward")) != "forward" or (layout == 0 and node.input[0] not in self.tmajor):
            self.refuse(node, "needs direction = forward, and batch-first data: layout = 1, or layout = 0 after a "
                              "Transpose [1, 0, 2] of batch-first data (as torch.onnx exports batch_first=True)")
        extra = list(node.input[4:])
        seq_lens, initial = extra[:1], extra[1:3]
        zero_state = all(not v or (v in self.consts and not np.any(np.asarray(self.consts[v]))) for v in initial)
        if any(seq_lens) or extra[3:] and any(extra[3:]) or not zero_state or a.get("clip") is not None \
                or a.get("input_forget", 0):
            self.refuse(node, "takes sequence_lens, a nonzero initial state, peepholes, clip or input_forget, which "
                              "nnstep's has not (it starts from zeros)")
        acts = [_s(s) for s in a.get("activations", [])]
        if typ == "lstm" and acts and acts != ["Sigmoid", "Tanh", "Tanh"]:
            self.refuse(node, f"uses activations {acts}; nnstep's LSTM is sigmoid, tanh, tanh")
        if typ == "rnn" and acts and acts[0] not in ("Tanh", "Relu"):
            self.refuse(node, f"uses activation {acts[0]}; nnstep's RNN is tanh or relu")
        for o in node.output[1:]:
            if o and self.consumers.get(o):
                self.refuse(node, "has its last hidden (or cell) state output used; nnstep's layer gives every hidden state")
        H = int(a["hidden_size"])
        W = self.const(node, node.input[1], "W")[0]
        R = self.const(node, node.input[2], "R")[0]
        order = [0, 2, 3, 1] if typ == "lstm" else [0]        # ONNX i, o, f, c -> torch i, f, g, o

        def reorder(m):
            return np.concatenate([m[k * H:(k + 1) * H] for k in order], axis=0)
        p = {"weight_ih": reorder(W), "weight_hh": reorder(R)}
        has_b = len(node.input) > 3 and bool(node.input[3])
        if has_b:
            B = self.const(node, node.input[3], "B")[0]
            p["bias_ih"], p["bias_hh"] = reorder(B[:gates * H]), reorder(B[gates * H:])
        else:                                                   # ONNX: no B is zeros
            p["bias_ih"], p["bias_hh"] = np.zeros(gates * H), np.zeros(gates * H)
        opts = {"hidden": H, "bias": True}
        if typ == "rnn":
            opts["nonlinearity"] = (acts[0] if acts else "Tanh").lower()
        x = [self.tmajor.pop(node.input[0])] if layout == 0 else self.one(node)
        L = self.add(node, typ, opts, x, p)
        L.time_major = layout == 0
        del self.names[node.output[0]]
        self.pending[node.output[0]] = L

    def c_LSTM(self, node, a):
        self._recurrent(node, a, "lstm")

    def c_RNN(self, node, a):
        self._recurrent(node, a, "rnn")


def _float64_ops():
    """onnx's reference Erf rounds to float32 (``np.vectorize(erf, otypes=["f"])``), and its Gelu is
    computed through it: these keep float64, so the reference is the graph in float64."""
    import math

    from onnx.reference.op_run import OpRun

    erf = np.vectorize(math.erf, otypes=[np.float64])

    class Erf(OpRun):
        op_domain = ""

        def _run(self, x):
            return (erf(x).astype(x.dtype),)

    class Gelu(OpRun):                  # ONNX's definition (opset 20), in float64
        op_domain = ""

        def _run(self, x, approximate="none"):
            if approximate == "tanh":
                y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
            else:
                y = 0.5 * x * (1 + erf(x / math.sqrt(2)))
            return (y.astype(x.dtype),)
    return [Erf, Gelu]


def _ints(v):
    v = [int(e) for e in v]
    return v[0] if len(set(v)) == 1 else v


def load(source: str, x: np.ndarray | None, shape: tuple[int, ...] | None) -> Model:
    onnx, model = _read(source)
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise ScenarioError(f"the graph takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); nnstep feeds "
                            "one batch, x", file=source)
    if len(g.output) != 1:
        raise ScenarioError(f"the graph has {len(g.output)} outputs; nnstep steps through a network with one",
                            file=source)
    inp = inputs[0]
    tt = inp.type.tensor_type
    ints = tt.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
    if x is None:
        if shape is None:
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim]
            if not dims or not all(dims):
                raise ScenarioError(f"the graph's input {inp.name} has shape "
                                    f"{[d.dim_value or d.dim_param or '?' for d in tt.shape.dim]}: give --input-shape "
                                    "N,... (or --data)", file=source)
            shape = tuple(dims)
        rng = np.random.default_rng(0)
        if ints:
            users = [n for n in g.node if inp.name in n.input and n.op_type == "Gather" and n.input[0] in consts]
            high = int(np.shape(consts[users[0].input[0]])[0]) if users else 2
            x = rng.integers(0, high, size=shape)
        else:
            x = rng.normal(size=shape)
    ref_model = _float64(onnx, model)
    try:
        ref = ReferenceEvaluator(ref_model, new_ops=_float64_ops())
    except Exception as e:
        raise ScenarioError(f"onnx's reference evaluator cannot run it: {type(e).__name__}: {cut(str(e), 200)}",
                            file=source) from None

    int_type = np.int32 if tt.elem_type == onnx.TensorProto.INT32 else np.int64

    def feed(xb):
        return {inp.name: np.asarray(xb, dtype=int_type if ints else np.float64)}

    try:
        values = ref.run(None, feed(x), intermediate=True)
    except Exception as e:
        raise ScenarioError(f"the graph does not run on a batch of shape {list(np.shape(x))}: {type(e).__name__}: "
                            f"{cut(' '.join(str(e).split()), 300)}", file=source) from None
    mp = _Mapper(onnx, model, source, values, consts)
    layers, out_shape = mp.run()
    tokens = layers[0].options["num"] if layers[0].type == "embedding" and layers[0].inputs == ["input"] else None

    def reference(xb, masks):
        vals = ref.run(None, feed(xb), intermediate=True)
        out = {name: np.asarray(vals[v], dtype=np.float64) for name, v in mp.value_of.items() if v in vals}
        out[""] = np.asarray(vals[g.output[0].name], dtype=np.float64)
        return out

    return Model(source=source, layers=layers, out_shape=tuple(out_shape), reference=reference, tokens=tokens,
                 in_shape=tuple(np.shape(x)))
