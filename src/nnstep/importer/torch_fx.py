"""A PyTorch model, traced with ``torch.fx``, as nnstep layers (docs/import.md).

SOURCE is ``path/to/file.py:Name`` or ``package.module:Name``: an ``nn.Module`` class, or a
function returning one, built with no arguments. The file is imported because the user named it
(that is the point of the command); nothing else is ever run from a file, and nothing is
unpickled: the model's parameters are the ones its constructor made (and whatever it loads itself).

Every leaf module and functional call of the traced graph becomes one layer: which torch module or
function a layer type is, its class says (``torch_modules``, ``torch_functions``, layers/*.py);
how the options and parameters carry over is here, one converter per nnstep type. The shapes come
from running the graph once on the example batch (fx's ShapeProp), so a ``view(x.size(0), -1)``
becomes a reshape to the shape it gave.
"""
from __future__ import annotations

import importlib
import importlib.util
import operator
import os
import sys
import traceback

import numpy as np

from ..errors import ScenarioError, cut, did_you_mean
from ..layers import registry
from .writer import Imported, Model, Unmappable, unique_name


def _import_torch(source: str):
    try:
        import torch
        import torch.fx  # noqa: F401
    except ImportError:
        raise ScenarioError("importing a PyTorch model needs torch: pip install 'nnstep[torch]'", file=source) from None
    return torch


def what_maps() -> str:
    """The torch modules and functions that map, from the layer classes' declarations."""
    mods, fns = [], []
    for cls in registry.builtin_types().values():
        mods += [f"nn.{m}" for m in cls.torch_modules]
        fns += list(cls.torch_functions)
    return "modules " + ", ".join(mods) + "; functions and operators " + ", ".join(fns)


# --- finding the model ---------------------------------------------------------------------------

def _where_raised(e: BaseException, path: str | None) -> str:
    """" at line 12": the deepest frame in the user's file ("" when none is: a call with the wrong
    arguments fails before it runs a line of theirs)."""
    tb = traceback.extract_tb(e.__traceback__)
    frames = [f for f in tb if path and os.path.realpath(f.filename) == os.path.realpath(path)]
    return f" at line {frames[-1].lineno}" if frames else ""


def load_object(source: str):
    """The object SOURCE names: imports the user's file or module."""
    spec, sep, name = source.rpartition(":")
    if source.lower().endswith((".pt", ".pth", ".ckpt", ".bin", ".safetensors")):
        raise ScenarioError("holds weights, not a model: name the model's class, or a function that builds it and "
                            "loads these weights (path/to/file.py:Name; docs/import.md)", file=source)
    if not sep or not spec or not name:
        raise ScenarioError("expected path/to/file.py:Name, package.module:Name or model.onnx", where=source)
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        if not os.path.exists(spec):
            raise ScenarioError("no such file", file=spec)
        if not os.path.isfile(spec):
            raise ScenarioError("is not a file", file=spec)
        modname = "_nnstep_import_" + "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(spec))[0])
        folder = os.path.dirname(os.path.abspath(spec))
        sys.path.insert(0, folder)              # its own imports of files beside it
        try:
            mspec = importlib.util.spec_from_file_location(modname, spec)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[modname] = module
            mspec.loader.exec_module(module)
        except SyntaxError as e:
            raise ScenarioError(f"line {e.lineno}: invalid Python: {cut(e.msg or str(e))}", file=spec) from None
        except Exception as e:
            raise ScenarioError(f"importing it raised {type(e).__name__}{_where_raised(e, spec)}: {cut(str(e), 200)}",
                                file=spec) from None
        finally:
            try:
                sys.path.remove(folder)
            except ValueError:
                pass
        where = spec
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as e:
            raise ScenarioError(f"no module named {cut(repr(e.name or spec))} (a file? write path/to/file.py:Name)",
                                file=spec) from None
        except Exception as e:
            raise ScenarioError(f"importing it raised {type(e).__name__}: {cut(str(e), 200)}", file=spec) from None
        where = spec
    if not hasattr(module, name):
        defined = [k for k, v in vars(module).items() if not k.startswith("_") and callable(v)
                   and getattr(v, "__module__", None) == module.__name__]
        raise ScenarioError(f"has no {cut(repr(name))}{did_you_mean(name, defined)}", file=where)
    return getattr(module, name), where


def build_model(source: str):
    torch = _import_torch(source)
    obj, where = load_object(source)
    name = source.rpartition(":")[2]
    if not callable(obj):
        raise ScenarioError(f"{cut(name)} is a {type(obj).__name__}, not an nn.Module class or a function returning "
                            "one", file=where)
    if isinstance(obj, torch.nn.Module):
        model = obj
    else:
        try:
            model = obj()
        except Exception as e:
            raise ScenarioError(f"{cut(name)}() raised {type(e).__name__}{_where_raised(e, where)}: {cut(str(e), 200)} "
                                "(nnstep import builds the model with no arguments: give them defaults, or name a "
                                "function that builds it)", file=where) from None
    if not isinstance(model, torch.nn.Module):
        raise ScenarioError(f"{cut(name)}() returned a {type(model).__name__}, not an nn.Module", file=where)
    return model


# --- mapping -------------------------------------------------------------------------------------

def _arr(t) -> np.ndarray:
    return t.detach().to("cpu").double().numpy().copy()


class _Mapper:
    def __init__(self, torch, gm, source, batch):
        self.torch, self.gm, self.source, self.N = torch, gm, source, batch
        self.F = torch.nn.functional
        self.layers: list[Imported] = []
        self.names: dict = {}               # fx node -> nnstep tensor name
        self.tuples: dict = {}              # fx node of a module returning a tuple -> its layer name
        self.taken: set = set()
        self.node_of: dict[str, object] = {}   # layer name -> fx node whose value is its output
        self.maps = what_maps()

    def refuse(self, node, op, why):
        raise Unmappable(self.source, node.name, op, why, self.maps)

    def shape(self, node):
        tm = node.meta.get("tensor_meta")
        return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None

    def tensor(self, node, arg, op):
        """The nnstep tensor an argument is."""
        fx = self.torch.fx
        if isinstance(arg, fx.Node):
            if arg in self.names:
                return self.names[arg]
            if arg.op == "get_attr":
                self.refuse(node, op, f"reads the model's tensor {arg.target!r} directly; nnstep's layers hold their "
                                      "own parameters (use a module such as nn.Linear for it)")
            self.refuse(node, op, f"reads {arg.name}, which nnstep does not compute as a tensor of the batch")
        self.refuse(node, op, f"takes {cut(repr(arg))} where nnstep needs a tensor of the batch")

    def add(self, node, typ, options, inputs, params=None, states=None, origin="", bias=True, name=None):
        base = name or node.name
        if base[:1] == "_" and base[1:].isdigit():      # model[0] of a top-level nn.Sequential: linear0
            base = typ + base[1:]
        L = Imported(name=unique_name(base, self.taken), type=typ, options=options, inputs=inputs,
                     params=params or {}, states=states or {}, origin=origin, bias=bias)
        self.layers.append(L)
        self.names[node] = L.name
        self.node_of[L.name] = node
        return L

    def run(self):
        fx = self.torch.fx
        g = self.gm.graph
        out_node = None
        placeholders = [n for n in g.nodes if n.op == "placeholder"]
        if not placeholders:
            raise ScenarioError("the model's forward takes no input", file=self.source)
        self.names[placeholders[0]] = "input"
        for n in placeholders[1:]:
            if n.users:
                raise ScenarioError(f"the model's forward takes {len(placeholders)} inputs ({', '.join(p.name for p in placeholders)}); "
                                    "nnstep feeds one batch, x", file=self.source)
        for node in g.nodes:
            if node.op in ("placeholder", "get_attr") or node in self.names:
                continue                        # (element 0 of an attention's or RNN's tuple: named already)
            if node.op == "output":
                out_node = node
                continue
            shp = self.shape(node)
            if shp is None and node.op == "call_function" and node.target is operator.getitem:
                src = node.args[0]
                if src in self.tuples:
                    continue                    # (h, c) of an LSTM, unused: dead code already gone
            if shp is None and node.op == "call_function" and node.target is getattr:
                continue                        # x.shape: as x.size() below
            if shp is None and node.op == "call_method" and node.target in ("size", "dim"):
                continue                        # sizes: the reshape that reads them takes its shape from the trace
            if shp is None and node.op == "call_function" and not any(isinstance(a, fx.Node) and self.shape(a) for a in node.args):
                continue                        # arithmetic on sizes
            self.convert(node)
        arg = out_node.args[0]
        if not isinstance(arg, fx.Node) or arg not in self.names or self.names[arg] == "input":
            raise ScenarioError("the model's forward must return one tensor computed from its input (a tuple or dict "
                                "of outputs, or the input itself, is not a network nnstep steps through)", file=self.source)
        last = self.names[arg]
        if not self.layers or self.layers[-1].name != last:
            raise ScenarioError(f"the model returns {last}, which is not the last layer computed", file=self.source)
        return self.layers, tuple(self.shape(arg)[1:])

    # -- one node ------------------------------------------------------------------------------
    def convert(self, node):
        torch, F = self.torch, self.F
        shp = self.shape(node)
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            op = f"nn.{type(mod).__name__} {node.target}"
            kind = type(mod).__name__
            if type(mod).__module__.split(".")[:2] != ["torch", "nn"]:
                self.refuse(node, op, "is a module fx kept as a leaf, which no nnstep layer is")
        elif node.op == "call_method":
            op = f"Tensor.{node.target}"
            kind = op
        else:
            op = _fn_name(torch, node.target)
            kind = op
        if shp is not None and (len(shp) < 1 or shp[0] != self.N):
            self.refuse(node, op, f"gives shape {list(shp)}: nnstep keeps the batch first ({self.N} here), "
                                  "and every layer works on each sample")
        typ = _TYPE_OF.get(kind) or self.by_declaration(node, kind)
        if typ is None:
            self.refuse(node, op, "does not map to an nnstep layer")
        conv = getattr(self, "c_" + typ, None)
        conv(node, op)

    def by_declaration(self, node, kind):
        for cls in registry.builtin_types().values():
            if node.op == "call_module" and kind in cls.torch_modules:
                return cls.type
            if node.op != "call_module" and kind in cls.torch_functions:
                return cls.type
        return None

    def args(self, node, names, defaults):
        """The call's arguments by name (positional first), with defaults."""
        out = dict(defaults)
        for k, v in zip(names, node.args):
            out[k] = v
        out.update(node.kwargs)
        return out

    def one_input(self, node, op):
        return [self.tensor(node, node.args[0], op)]

    # converters: c_<nnstep type>(node, op)
    def c_linear(self, node, op):
        m = self.gm.get_submodule(node.target)
        p = {"weight": _arr(m.weight)}
        if m.bias is not None:
            p["bias"] = _arr(m.bias)
        self.add(node, "linear", {"out": m.out_features}, self.one_input(node, op), p, origin=op, bias=m.bias is not None)

    def c_embedding(self, node, op):
        m = self.gm.get_submodule(node.target)
        if m.padding_idx is not None or m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            self.refuse(node, op, "uses padding_idx, max_norm, scale_grad_by_freq or sparse, which nnstep's embedding "
                                  "has not (its gradient or forward would differ)")
        self.add(node, "embedding", {"num": m.num_embeddings, "dim": m.embedding_dim}, self.one_input(node, op),
                 {"weight": _arr(m.weight)}, origin=op)

    def _conv(self, node, op, nd):
        m = self.gm.get_submodule(node.target)
        if m.groups != 1 or any(d != 1 for d in m.dilation) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            self.refuse(node, op, "uses groups, dilation, a padding mode or string padding, which nnstep's convolutions "
                                  "have not (groups = 1, dilation = 1, numeric zero padding)")
        p = {"weight": _arr(m.weight)}
        if m.bias is not None:
            p["bias"] = _arr(m.bias)
        opts = {"out_channels": m.out_channels, "kernel_size": _ints(m.kernel_size), "stride": _ints(m.stride),
                "padding": _ints(m.padding)}
        self.add(node, f"conv{nd}d", opts, self.one_input(node, op), p, origin=op, bias=m.bias is not None)

    def c_conv1d(self, node, op):
        self._conv(node, op, 1)

    def c_conv2d(self, node, op):
        self._conv(node, op, 2)

    def _adaptive(self, node, op, typ):
        """An adaptive pool whose output size divides the input's: the plain pool with kernel = stride =
        input size / output size (ResNet's global average pool, AdaptiveAvgPool2d(1))."""
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            if getattr(m, "return_indices", False):
                self.refuse(node, op, "returns indices")
        elif len(node.args) > 2 or node.kwargs.get("return_indices"):
            self.refuse(node, op, "returns indices")
        ins, outs = self.shape(node.args[0])[2:], self.shape(node)[2:]
        if any(o == 0 or i % o for i, o in zip(ins, outs)):
            self.refuse(node, op, f"pools {list(ins)} to {list(outs)}, not a whole number of inputs per output; "
                                  "nnstep's pooling has one window size")
        k = _ints([i // o for i, o in zip(ins, outs)])
        self.add(node, typ, {"kernel_size": k, "stride": k, "padding": 0}, self.one_input(node, op), origin=op)

    def _pool(self, node, op, typ):
        if "adaptive" in op.lower():
            return self._adaptive(node, op, typ)
        avg = typ.startswith("avg")
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            a = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                 "ceil_mode": m.ceil_mode, "dilation": getattr(m, "dilation", 1),
                 "return_indices": getattr(m, "return_indices", False),
                 "count_include_pad": getattr(m, "count_include_pad", True),
                 "divisor_override": getattr(m, "divisor_override", None)}
        else:
            if avg:
                names = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]
            else:
                names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
            a = self.args(node, names, {"stride": None, "padding": 0, "ceil_mode": False, "dilation": 1,
                                        "return_indices": False, "count_include_pad": True, "divisor_override": None})
        if (a["ceil_mode"] or _ints(a["dilation"]) not in (1, [1, 1]) or a["return_indices"]
                or not a["count_include_pad"] or a["divisor_override"] is not None):
            self.refuse(node, op, "uses ceil_mode, dilation, return_indices, count_include_pad = False or "
                                  "divisor_override, which nnstep's pooling has not")
        st = a["stride"]
        opts = {"kernel_size": _ints(a["kernel_size"])}
        if st is not None and st != [] and st != ():
            opts["stride"] = _ints(st)
        opts["padding"] = _ints(a["padding"])
        self.add(node, typ, opts, self.one_input(node, op), origin=op)

    def c_maxpool1d(self, node, op):
        self._pool(node, op, "maxpool1d")

    def c_maxpool2d(self, node, op):
        self._pool(node, op, "maxpool2d")

    def c_avgpool1d(self, node, op):
        self._pool(node, op, "avgpool1d")

    def c_avgpool2d(self, node, op):
        self._pool(node, op, "avgpool2d")

    def c_batchnorm(self, node, op):
        m = self.gm.get_submodule(node.target)
        if m.momentum is None:
            self.refuse(node, op, "uses momentum = None (a cumulative average), which nnstep's batchnorm has not")
        opts = {"eps": float(m.eps), "momentum": float(m.momentum), "affine": bool(m.affine)}
        p = {"weight": _arr(m.weight), "bias": _arr(m.bias)} if m.affine else {}
        states = {}
        if m.track_running_stats and m.running_mean is not None:
            states = {"running_mean": self.snapshot[f"{node.target}.running_mean"],
                      "running_var": self.snapshot[f"{node.target}.running_var"]}
        self.add(node, "batchnorm", opts, self.one_input(node, op), p, states, origin=op)

    def c_layernorm(self, node, op):
        m = self.gm.get_submodule(node.target)
        if m.elementwise_affine and m.bias is None:
            self.refuse(node, op, "has a weight but no bias (bias=False), which nnstep's layernorm has not")
        opts = {"eps": float(m.eps), "affine": bool(m.elementwise_affine), "dims": len(m.normalized_shape)}
        p = {"weight": _arr(m.weight), "bias": _arr(m.bias)} if m.elementwise_affine else {}
        self.add(node, "layernorm", opts, self.one_input(node, op), p, origin=op)

    def _simple(self, node, op, typ, opts=None):
        self.add(node, typ, opts or {}, self.one_input(node, op), origin=op)

    def c_relu(self, node, op):
        self._simple(node, op, "relu")

    def c_sigmoid(self, node, op):
        self._simple(node, op, "sigmoid")

    def c_tanh(self, node, op):
        self._simple(node, op, "tanh")

    def c_identity(self, node, op):
        self._simple(node, op, "identity")

    def c_leaky_relu(self, node, op):
        if node.op == "call_module":
            slope = self.gm.get_submodule(node.target).negative_slope
        else:
            slope = self.args(node, ["input", "negative_slope"], {"negative_slope": 0.01})["negative_slope"]
        self._simple(node, op, "leaky_relu", {"negative_slope": float(slope)})

    def c_gelu(self, node, op):
        if node.op == "call_module":
            approx = self.gm.get_submodule(node.target).approximate
        else:
            approx = self.args(node, ["input"], {"approximate": "none"})["approximate"]
        self._simple(node, op, "gelu", {"approximate": approx})

    def _softmax(self, node, op, typ):
        if node.op == "call_module":
            dim = self.gm.get_submodule(node.target).dim
        else:
            a = self.args(node, ["input", "dim"], {"dim": None, "dtype": None})
            dim = a["dim"]
            if a.get("dtype") is not None:
                self.refuse(node, op, "casts to another dtype")
        if dim is None:
            self.refuse(node, op, "has no dim (torch's implicit choice is deprecated): give dim=-1")
        self._simple(node, op, typ, {"dim": int(dim)})

    def c_softmax(self, node, op):
        self._softmax(node, op, "softmax")

    def c_log_softmax(self, node, op):
        self._softmax(node, op, "log_softmax")

    def c_dropout(self, node, op):
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            p, training = m.p, True
        else:
            a = self.args(node, ["input", "p", "training", "inplace"], {"p": 0.5, "training": True})
            p, training = a["p"], a["training"]
        if not training:                          # F.dropout(x, p, training=False) is the identity
            self.names[node] = self.tensor(node, node.args[0], op)
            return
        self._simple(node, op, "dropout", {"p": float(p)})

    def c_flatten(self, node, op):
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            start, end = m.start_dim, m.end_dim
        else:
            a = self.args(node, ["input", "start_dim", "end_dim"], {"start_dim": 0, "end_dim": -1})
            start, end = a["start_dim"], a["end_dim"]
        nd = len(self.shape(node.args[0]))
        if start % nd == 1 and end % nd == nd - 1:
            self._simple(node, op, "flatten")
        else:
            self.c_reshape(node, op)

    def c_reshape(self, node, op):
        shp = self.shape(node)
        self.add(node, "reshape", {"shape": list(shp[1:])}, self.one_input(node, op), origin=op)

    def c_transpose(self, node, op):
        nd = len(self.shape(node.args[0]))
        if node.target in ("permute", getattr(self.torch, "permute", None)):
            perm = node.args[1] if isinstance(node.args[1], (list, tuple)) else node.args[1:]
            perm = [int(p) % nd for p in (perm or node.kwargs.get("dims", ()))]
            moved = [i for i, p in enumerate(perm) if p != i]
            if not moved:                         # the identity permutation
                self.names[node] = self.tensor(node, node.args[0], op)
                return
            if len(moved) != 2:
                self.refuse(node, f"permutes {perm}; nnstep's transpose swaps two dimensions")
            d0, d1 = moved
        else:
            a = self.args(node, ["input", "dim0", "dim1"], {})
            d0, d1 = int(a["dim0"]), int(a["dim1"])
        if d0 % nd == 0 or d1 % nd == 0:
            self.refuse(node, op, "swaps the batch dimension, which nnstep keeps first")
        self._simple(node, op, "transpose", {"dims": [d0, d1]})

    def _operands(self, node, op):
        fx = self.torch.fx
        a, b = node.args[0], node.args[1]
        if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
            self.refuse(node, op, "uses alpha, which nnstep's add has not")
        return a, b, isinstance(a, fx.Node) and self.shape(a) is not None, isinstance(b, fx.Node) and self.shape(b) is not None

    def _merge(self, node, op, typ):
        a, b, ta, tb = self._operands(node, op)
        if ta and tb:
            ins = [self.tensor(node, a, op), self.tensor(node, b, op)]
            if self.shape(a) != self.shape(b):
                self.refuse(node, op, f"broadcasts {list(self.shape(a))} with {list(self.shape(b))}; nnstep's "
                                      f"{typ} takes tensors of the same shape")
            self.add(node, typ, {}, ins, origin=op)
        elif typ == "mul" and (ta or tb) and isinstance(b if ta else a, (int, float)):
            self.add(node, "scale", {"by": float(b if ta else a)}, [self.tensor(node, a if ta else b, op)], origin=op)
        else:
            self.refuse(node, op, f"{'adds' if typ == 'add' else 'multiplies by'} something that is not a tensor of "
                                  "the batch (a constant, a parameter)")

    def c_add(self, node, op):
        self._merge(node, op, "add")

    def c_mul(self, node, op):
        self._merge(node, op, "mul")

    def c_scale(self, node, op):                  # x / number
        a, b, ta, tb = self._operands(node, op)
        if not (ta and not tb and isinstance(b, (int, float)) and b != 0):
            self.refuse(node, op, "divides by something that is not a nonzero number")
        self.add(node, "scale", {"by": 1.0 / float(b)}, [self.tensor(node, a, op)], origin=op)

    def c_matmul(self, node, op):
        a, b = node.args[0], node.args[1]
        self.add(node, "matmul", {}, [self.tensor(node, a, op), self.tensor(node, b, op)], origin=op)

    def c_concat(self, node, op):
        a = self.args(node, ["tensors", "dim"], {"dim": 0})
        parts = a["tensors"]
        dim = int(a["dim"])
        nd = len(self.shape(node))
        if dim % nd == 0:
            self.refuse(node, op, "concatenates along the batch dimension, which nnstep keeps first")
        self.add(node, "concat", {"dim": dim}, [self.tensor(node, t, op) for t in parts], origin=op)

    def _tuple_out(self, node, op, L):
        """A module returning a tuple: its first element is the layer's output; the rest unused."""
        del self.names[node]
        self.tuples[node] = L.name
        users = list(node.users)
        for u in users:
            if u.op == "output":
                self.refuse(node, op, "is returned whole, a tuple; nnstep's layer gives its first element only "
                                      "(return out[0])")
            if not (u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0):
                self.refuse(node, op, "has its second output used (attention weights, or an RNN's last state); "
                                      "nnstep's layer gives one output, element 0")
            self.names[u] = L.name
        L_node = users[0] if users else node
        self.node_of[L.name] = L_node

    def c_attention(self, node, op):
        m = self.gm.get_submodule(node.target)
        a = self.args(node, ["query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                             "average_attn_weights", "is_causal"],
                      {"key_padding_mask": None, "need_weights": True, "attn_mask": None, "is_causal": False})
        if not (a["query"] is a["key"] is a["value"]):
            self.refuse(node, op, "is not self-attention (query, key and value must be one tensor)")
        if a["key_padding_mask"] is not None or a["attn_mask"] is not None or a["is_causal"]:
            self.refuse(node, op, "takes a mask, which nnstep's attention takes only as causal = true of its own")
        if not m.batch_first or m.dropout != 0 or m.bias_k is not None or m.add_zero_attn or not m._qkv_same_embed_dim:
            self.refuse(node, op, "needs batch_first=True, dropout=0, no add_bias_kv/add_zero_attn, and kdim = vdim = "
                                  "embed_dim")
        has_bias = m.in_proj_bias is not None
        if has_bias != (m.out_proj.bias is not None):
            self.refuse(node, op, "has a bias on one projection only")
        p = {"in_proj_weight": _arr(m.in_proj_weight), "out_proj_weight": _arr(m.out_proj.weight)}
        if has_bias:
            p["in_proj_bias"] = _arr(m.in_proj_bias)
            p["out_proj_bias"] = _arr(m.out_proj.bias)
        L = self.add(node, "attention", {"heads": m.num_heads, "bias": has_bias}, self.one_input(node, op), p,
                     origin=op)
        self._tuple_out(node, op, L)

    def _recurrent(self, node, op, typ):
        m = self.gm.get_submodule(node.target)
        if m.num_layers != 1 or not m.batch_first or m.bidirectional or getattr(m, "proj_size", 0):
            self.refuse(node, op, "needs num_layers=1, batch_first=True, bidirectional=False (and no proj_size)")
        if len(node.args) > 1 or node.kwargs:
            self.refuse(node, op, "is given an initial state; nnstep's starts from zeros")
        p = {"weight_ih": _arr(m.weight_ih_l0), "weight_hh": _arr(m.weight_hh_l0)}
        if m.bias:
            p["bias_ih"], p["bias_hh"] = _arr(m.bias_ih_l0), _arr(m.bias_hh_l0)
        opts = {"hidden": m.hidden_size, "bias": bool(m.bias)}
        if typ == "rnn":
            opts["nonlinearity"] = m.nonlinearity
        L = self.add(node, typ, opts, self.one_input(node, op), p, origin=op)
        self._tuple_out(node, op, L)

    def c_rnn(self, node, op):
        self._recurrent(node, op, "rnn")

    def c_lstm(self, node, op):
        self._recurrent(node, op, "lstm")

    def c_alias(self, node, op):                  # x.contiguous(): the same values
        self.names[node] = self.tensor(node, node.args[0], op)


# torch's callables and methods that map to something the declarations do not say directly
_TYPE_OF = {"Tensor.contiguous": "alias", "Tensor.permute": "transpose", "torch.permute": "transpose", "operator.add": "add", "operator.iadd": "add", "operator.mul": "mul",
            "operator.imul": "mul", "operator.truediv": "scale", "operator.matmul": "matmul", "torch.add": "add",
            "torch.mul": "mul", "torch.cat": "concat", "torch.concat": "concat", "torch.matmul": "matmul",
            "Tensor.view": "reshape", "Tensor.reshape": "reshape", "torch.reshape": "reshape",
            "Tensor.add": "add", "Tensor.mul": "mul", "Tensor.matmul": "matmul"}


def _fn_name(torch, fn) -> str:
    """A call_function target as a user writes it: F.relu, torch.cat, operator.add."""
    F = torch.nn.functional
    for k, v in vars(F).items():
        if v is fn and not k.startswith("_"):
            return f"F.{k}"
    if getattr(fn, "__module__", None) == "_operator" or fn in vars(operator).values():
        return f"operator.{fn.__name__}"
    name = getattr(fn, "__name__", repr(fn))
    if getattr(torch, name, None) is fn:
        return f"torch.{name}"
    return f"{getattr(fn, '__module__', '?')}.{name}"


def _ints(v):
    if isinstance(v, (list, tuple)):
        v = [int(e) for e in v]
        return v[0] if len(set(v)) == 1 else v
    return int(v)


def load(source: str, x: np.ndarray | None, shape: tuple[int, ...] | None = None) -> Model:
    """Trace the model SOURCE names and map it, with ``x`` (the data's batch) for the shapes, or
    (``x`` None) a random batch of ``shape``: token indices when the input goes to an embedding."""
    torch = _import_torch(source)
    model = build_model(source)
    snapshot = {k: _arr(v) for k, v in model.state_dict().items()}    # before any forward moves batchnorm's stats
    model = model.double()
    model.train()
    import torch.fx as fx
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ScenarioError(f"torch.fx cannot trace it: {type(e).__name__}: {cut(msg, 300)}", file=source) from None
    gm.graph.eliminate_dead_code()
    gm.recompile()
    first = [n for n in gm.graph.nodes if n.op == "placeholder"][:1]
    emb = [u for f in first for u in f.users if u.op == "call_module"
           and isinstance(gm.get_submodule(u.target), torch.nn.Embedding)]
    if x is None:
        rng = np.random.default_rng(0)
        x = rng.integers(0, gm.get_submodule(emb[0].target).num_embeddings, size=shape) \
            if emb else rng.normal(size=shape)
    elif emb and x.dtype.kind == "f" and np.all(x == np.round(x)):
        x = x.astype(np.int64)                  # token indices saved as floats: nnstep reads them so too
    xt = _as_tensor(torch, x)
    from torch.fx.passes.shape_prop import ShapeProp
    state = {k: v.clone() for k, v in gm.state_dict().items()}
    import contextlib
    import io
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):     # ShapeProp prints a traceback
            ShapeProp(gm).propagate(xt)
    except Exception as e:
        cause = e.__cause__ or e
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        at = ""
        for n in gm.graph.nodes:
            if n.op not in ("placeholder", "output") and "tensor_meta" not in n.meta:
                at = f" at node {n.name!r}"
                break
        raise ScenarioError(f"the model does not run on a batch of shape {list(x.shape)}{at}: "
                            f"{type(cause).__name__}: {cut(msg, 300)}", file=source) from None
    gm.load_state_dict(state)
    mp = _Mapper(torch, gm, source, x.shape[0])
    mp.snapshot = snapshot
    layers, out_shape = mp.run()
    tokens = layers[0].options["num"] if layers[0].type == "embedding" and layers[0].inputs == ["input"] else None

    def reference(xb: np.ndarray, masks: dict) -> dict:
        """The model's own forward (traced: the same graph of the same modules), every layer's output;
        a dropout applies nnstep's mask, since torch would draw another."""
        values = {}
        drop_nodes = {mp.node_of[n]: m for n, m in masks.items()}
        out_of = {node: name for name, node in mp.node_of.items()}

        class Recorder(fx.Interpreter):
            def run_node(self, n):
                if n in drop_nodes:
                    r = self.env[n.args[0]] * torch.from_numpy(np.asarray(drop_nodes[n], dtype=np.float64))
                else:
                    r = super().run_node(n)
                if n in out_of and isinstance(r, torch.Tensor):
                    values[out_of[n]] = _arr(r)
                return r

        with torch.no_grad():
            out = Recorder(gm).run(_as_tensor(torch, xb))
        values[""] = _arr(out)
        return values

    return Model(source=source, layers=layers, out_shape=out_shape, reference=reference, tokens=tokens,
                 in_shape=tuple(np.shape(x)))


def _as_tensor(torch, x: np.ndarray):
    if np.asarray(x).dtype.kind in "biu":
        return torch.from_numpy(np.asarray(x, dtype=np.int64))
    return torch.from_numpy(np.asarray(x, dtype=np.float64))

