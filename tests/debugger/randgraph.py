"""Random graph scenarios: small networks drawn from a seed, over every layer type, merge, loss and
optimizer nnstep knows, as TOML text. For sweeps that must hold on any network, not just the
lessons (tests/debugger/test_explain_sweep.py).

The generator keeps a current tensor and its per-sample shape, and grows the graph from it with
blocks that each keep every layer read (a branch is merged back, so there is no dead branch): a
chain of unary layers, a residual (add or mul), a concat of two branches, a matmul of the tensor
with its own transpose. Inputs are a feature vector, a sequence, token indices, or a 1d or 2d
image; the head flattens if need be and ends in a linear layer that fits the loss drawn.
"""
from __future__ import annotations

import json
import random

LOSSES = ["mse", "l1", "smooth_l1", "huber", "cross_entropy", "bce", "bce_with_logits", "nll"]


class _Net:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.layers: list[dict] = []
        self.count: dict[str, int] = {}
        self.cur = "input"
        self.shape: tuple[int, ...] = ()

    def add(self, L: dict, shape, inputs=None) -> str:
        t = L["type"]
        self.count[t] = self.count.get(t, 0) + 1
        name = f"{t}{self.count[t]}"
        L = {"type": t, "name": name, **{k: v for k, v in L.items() if k != "type"}}
        if inputs is not None:
            L["inputs"] = inputs
        elif self.layers and self.cur != self.layers[-1]["name"] or not self.layers and self.cur != "input":
            L["input"] = self.cur
        self.layers.append(L)
        self.cur, self.shape = name, tuple(shape)
        return name

    # --- blocks ------------------------------------------------------------------------------------
    def same_shape(self) -> dict:
        """A layer that keeps the shape."""
        r, s = self.rng, self.shape
        opts = [{"type": t} for t in ("relu", "sigmoid", "tanh", "identity")]
        opts += [{"type": "leaky_relu", "negative_slope": 0.1}, {"type": "gelu", "approximate": r.choice(["none", "tanh"])},
                 {"type": "softmax"}, {"type": "log_softmax"}, {"type": "dropout", "p": r.choice([0.25, 0.5])},
                 {"type": "scale", "by": r.choice([-0.5, 2.0])}, {"type": "layernorm"}]
        if len(s) == 2:
            opts.append({"type": "layernorm", "dims": 1})
        if len(s) in (1, 2, 3) and s[0] > 0:
            opts.append({"type": "batchnorm"})
        if len(s) >= 1:
            opts.append({"type": "linear", "out": s[-1]})
        if len(s) == 2 and s[1] % 2 == 0:
            opts.append({"type": "attention", "heads": r.choice([1, 2]), "causal": r.choice([True, False]),
                         "bias": r.choice([True, False])})
        if len(s) == 2:
            opts += [{"type": "rnn", "hidden": s[1]}, {"type": "lstm", "hidden": s[1]}]
            if r.random() < 0.4:                    # sequences: the sequence layers, often
                return r.choice(opts[-3:] if s[1] % 2 == 0 else opts[-2:])
        return r.choice(opts)

    def unary(self):
        r, s = self.rng, self.shape
        L = self.same_shape()
        shape = s
        if r.random() < 0.3 and len(s) >= 1:
            L = {"type": "linear", "out": r.randint(2, 4)}
            shape = s[:-1] + (L["out"],)
        if L["type"] == "rnn" and r.random() < 0.5:
            L["nonlinearity"] = "relu"
        self.add(L, shape)

    def residual(self):
        base = self.cur
        self.unary_keep()
        self.add({"type": self.rng.choice(["add", "mul"])}, self.shape, inputs=[base, self.cur])

    def unary_keep(self):
        L = self.same_shape()
        self.add(L, self.shape)

    def concat(self):
        base, s = self.cur, self.shape
        a = self.add({"type": "linear", "out": 2}, s[:-1] + (2,))
        self.cur, self.shape = base, s
        b = self.add({"type": "linear", "out": 3}, s[:-1] + (3,))
        self.add({"type": "concat", "dim": -1}, s[:-1] + (5,), inputs=[a, b])

    def matmul(self):
        base, s = self.cur, self.shape                  # (T, E) @ (E, T) -> (T, T)
        t = self.add({"type": "transpose", "dims": [-1, -2]}, (s[1], s[0]))
        self.add({"type": "matmul"}, (s[0], s[0]), inputs=[base, t])

    def image(self):
        r, s = self.rng, self.shape
        nd = len(s) - 1
        conv = f"conv{nd}d"
        k = r.choice([1, 2, 3])
        pad = r.choice([0, 1])
        stride = r.choice([1, 2])
        sp = tuple((d + 2 * pad - k) // stride + 1 for d in s[1:])
        if min(sp) >= 1:
            self.add({"type": conv, "out_channels": r.randint(1, 2), "kernel_size": k, "stride": stride,
                      "padding": pad}, (0,) + sp)
            self.shape = (self.layers[-1]["out_channels"],) + sp
        if r.random() < 0.5:
            self.add({"type": "batchnorm"}, self.shape)
        self.add({"type": r.choice(["relu", "tanh"])}, self.shape)
        kind = r.choice(["max", "avg"])
        if min(self.shape[1:]) >= 2:
            kp = 2
            p = r.choice([0, 1])
            sp = tuple((d + 2 * p - kp) // kp + 1 for d in self.shape[1:])
            self.add({"type": f"{kind}pool{nd}d", "kernel_size": kp, "padding": p}, (self.shape[0],) + sp)
        if r.random() < 0.5:
            base = self.cur
            self.add({"type": "relu"}, self.shape)
            self.add({"type": "add"}, self.shape, inputs=[base, self.cur])

    def flatten(self):
        n = 1
        for d in self.shape:
            n *= d
        if self.rng.random() < 0.5 or len(self.shape) != 2:
            self.add({"type": "flatten"}, (n,))
        else:
            self.add({"type": "reshape", "shape": [-1]}, (n,))


def _data(shape, kind="normal"):
    return {"random": kind, "shape": list(shape)}


def scenario(seed: int) -> str:
    """One random graph scenario, as TOML."""
    r = random.Random(seed)
    net = _Net(r)
    N = r.choice([2, 3])
    kind = r.choice(["flat", "seq", "tokens", "image1d", "image2d"])
    x = None
    if kind == "flat":
        net.shape = (r.randint(2, 4),)
    elif kind == "seq":
        net.shape = (3, r.choice([2, 4]))
    elif kind == "tokens":
        V, T = 5, 3
        x = {"random": "integers", "low": 0, "high": V, "shape": [N, T]}
        net.add({"type": "embedding", "num": V, "dim": r.choice([2, 4])}, (T, 0))
        net.shape = (T, net.layers[-1]["dim"])
    elif kind == "image1d":
        net.shape = (r.randint(1, 2), r.randint(4, 6))
    else:
        net.shape = (r.randint(1, 2), r.randint(4, 5), r.randint(4, 5))
    if x is None:
        x = _data((N,) + net.shape)
    if kind.startswith("image"):
        net.image()
        net.flatten()
    for _ in range(r.randint(1, 3)):
        block = r.choice(["unary", "unary", "residual", "concat"] + (["matmul"] if len(net.shape) == 2 else []))
        getattr(net, block)()
    loss = r.choice(LOSSES)
    seq_head = len(net.shape) == 2 and loss in ("mse", "cross_entropy", "nll", "huber") and r.random() < 0.5
    if len(net.shape) != 1 and not seq_head:
        net.flatten()
    C = r.choice([2, 3])
    out = C if loss in ("cross_entropy", "nll") else r.choice([1, 2])
    net.add({"type": "linear", "out": out}, net.shape[:-1] + (out,))
    if loss == "bce":
        net.add({"type": "sigmoid"}, net.shape)
    if loss == "nll":
        net.add({"type": "log_softmax"}, net.shape)
    lo = {"type": loss, "reduction": r.choice(["mean", "sum"])}
    if r.random() < 0.3:
        lo["scale"] = 0.5
    lead = (N,) + net.shape[:-1]
    if loss in ("cross_entropy", "nll"):
        if seq_head:
            lo["class_dim"] = -1
        if loss == "cross_entropy" and r.random() < 0.3:
            lo["label_smoothing"] = 0.1
        if loss == "cross_entropy" and r.random() < 0.3:
            lo["weight"] = [1.0 + i for i in range(C)]
        y = {"random": "integers", "low": 0, "high": C, "shape": list(lead)}
    elif loss in ("bce", "bce_with_logits"):
        y = {"random": "uniform", "low": 0.0, "high": 1.0, "shape": list(lead) + [out]}
        if loss == "bce_with_logits" and r.random() < 0.4:
            lo["pos_weight"] = [2.0] * out
    else:
        y = _data(list(lead) + [out])
        if loss == "smooth_l1":
            lo["beta"] = r.choice([0.0, 0.5, 1.0])
        if loss == "huber":
            lo["delta"] = r.choice([0.5, 1.0])
    opt = r.choice(["sgd", "sgd_m", "adam", "adamw", "rmsprop"])
    o: dict = {"type": opt.split("_")[0], "lr": 0.05}
    if opt == "sgd_m":
        o.update(momentum=0.9, nesterov=r.choice([True, False]), weight_decay=r.choice([0.0, 0.01]))
    if opt == "adam" and r.random() < 0.5:
        o["weight_decay"] = 0.01
    if opt == "rmsprop":
        o.update(centered=r.choice([True, False]), momentum=r.choice([0.0, 0.5]))
    if r.random() < 0.3:
        o["clip_grad_norm"] = 0.5
    sched = None
    if r.random() < 0.3:
        sched = r.choice([{"type": "step", "step_size": 1, "gamma": 0.5}, {"type": "exponential", "gamma": 0.9},
                          {"type": "cosine", "t_max": 4}, {"type": "linear", "total_iters": 3}])
    layers = net.layers
    if r.random() < 0.3:
        for L in layers:
            if L["type"] == "linear":
                L["frozen"] = ["bias"]
                break
    return _toml(seed, x, y, layers, lo, o, sched, batchnorm=any(L["type"] == "batchnorm" for L in layers))


def _v(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_v(e)}" for k, e in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_v(e) for e in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def _toml(seed, x, y, layers, loss, opt, sched, batchnorm) -> str:
    out = [f'[scenario]\nname = "random graph {seed}"\nseed = {seed}\n', "[data]", f"x = {_v(x)}", f"y = {_v(y)}", ""]
    for L in layers:
        out.append("[[layers]]")
        out += [f"{k} = {_v(v)}" for k, v in L.items()]
        out.append("")
    out.append("[loss]")
    out += [f"{k} = {_v(v)}" for k, v in loss.items()]
    out.append("\n[optimizer]")
    out += [f"{k} = {_v(v)}" for k, v in opt.items()]
    if sched:
        out.append("\n[optimizer.schedule]")
        out += [f"{k} = {_v(v)}" for k, v in sched.items()]
    out.append("\n[train]\nsteps = 2")
    return "\n".join(out) + "\n"
