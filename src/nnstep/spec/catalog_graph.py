"""The catalogue's graph layers (docs/scenario-format.md, "Graph networks"): merges (`add`, `mul`, `concat`, `matmul`), shape
layers (`transpose`, `reshape`, `scale`), `embedding` and `attention`. Shapes are per sample (no
batch dimension); a `dim` counts the batch as 0, as torch does on the batched tensor."""
from __future__ import annotations

import math

import numpy as np

from ..errors import cut
from .catalog import LayerType, ShapeError, Step, _check_dim, fmt_shape
from .formula import Const, F, Ref


def _nshape(s) -> str:
    return fmt_shape(("N",) + tuple(s))


def _dim(d: int, nd_batched: int) -> int:
    return d % nd_batched


class _Merge(LayerType):
    merge = True
    arity = (2, None)

    @classmethod
    def _same(cls, in_shapes):
        for s in in_shapes[1:]:
            if tuple(s) != tuple(in_shapes[0]):
                raise ShapeError(f"{cls.type} needs inputs of one shape, got "
                                 + " and ".join(_nshape(x) for x in in_shapes))

    @classmethod
    def _sum_text(cls, n, op: str) -> tuple[str, dict]:
        parts = {f"x{k}": x for k, x in enumerate(n.xs)}
        return f" {op} ".join("{x%d}" % k for k in range(len(n.xs))), parts


class Add(_Merge):
    type = "add"

    @classmethod
    def infer(cls, opts, in_shapes):
        cls._same(in_shapes)
        return tuple(in_shapes[0]), {}

    @classmethod
    def fwd_formula(cls, L, n):
        t, parts = cls._sum_text(n, "+")
        return F("{out} = " + t, out=n.out, **parts)

    @classmethod
    def bwd_formula(cls, L, n):
        parts = {f"gin{k}": g for k, g in enumerate(n.gins)}
        return F(";  ".join("{gin%d} = {g}" % k for k in range(len(n.gins)))
                 + ";  (a sum passes the upstream gradient to each input unchanged)", g=n.g, **parts)


class Mul(_Merge):
    type = "mul"

    @classmethod
    def infer(cls, opts, in_shapes):
        cls._same(in_shapes)
        return tuple(in_shapes[0]), {}

    @classmethod
    def fwd_formula(cls, L, n):
        t, parts = cls._sum_text(n, "⊙")
        return F("{out} = " + t, out=n.out, **parts)

    @classmethod
    def bwd_formula(cls, L, n):
        parts = {f"x{k}": x for k, x in enumerate(n.xs)}
        parts.update({f"gin{k}": g for k, g in enumerate(n.gins)})
        clauses = []
        for k in range(len(n.xs)):
            others = " ⊙ ".join("{x%d}" % j for j in range(len(n.xs)) if j != k)
            clauses.append("{gin%d} = {g} ⊙ %s" % (k, others))
        return F(";  ".join(clauses) + ";  (the product rule: each input's gradient is the upstream times "
                 "the other factors)", g=n.g, **parts)


class Concat(_Merge):
    type = "concat"
    options = {"dim": (-1, "int")}

    @classmethod
    def infer(cls, opts, in_shapes):
        s0 = tuple(in_shapes[0])
        _check_dim(opts["dim"], s0)
        d = _dim(opts["dim"], len(s0) + 1) - 1            # per-sample axis
        total = 0
        for s in in_shapes:
            if len(s) != len(s0) or any(a != b for j, (a, b) in enumerate(zip(s, s0)) if j != d):
                raise ShapeError(f"concat along dim {opts['dim']} needs every other dimension equal, got "
                                 + " and ".join(_nshape(x) for x in in_shapes))
            total += s[d]
        out = list(s0)
        out[d] = total
        return tuple(out), {}

    @classmethod
    def fwd_formula(cls, L, n):
        parts = {f"x{k}": x for k, x in enumerate(n.xs)}
        return F("{out} = cat(" + ", ".join("{x%d}" % k for k in range(len(n.xs))) + f"; dim {L.options['dim']})",
                 out=n.out, **parts)

    @classmethod
    def bwd_formula(cls, L, n):
        d = _dim(L.options["dim"], len(L.in_shapes[0]) + 1)
        parts, clauses, at = {}, [], 0
        for k, g in enumerate(n.gins):
            w = L.in_shapes[k][d - 1]
            parts[f"gin{k}"] = g
            parts[f"g{k}"] = Ref(n.g.name, n.g.role, f"[dim {d}: {at}..{at + w - 1}]")
            clauses.append("{gin%d} = {g%d}" % (k, k))
            at += w
        return F(";  ".join(clauses) + ";  (each input gets back its own slice of the upstream gradient)", **parts)


class Matmul(_Merge):
    type = "matmul"
    arity = (2, 2)

    @classmethod
    def infer(cls, opts, in_shapes):
        if len(in_shapes) != 2:
            raise ShapeError(f"matmul multiplies exactly two tensors, got {len(in_shapes)} inputs")
        a, b = (tuple(s) for s in in_shapes)
        if len(a) < 2 or len(b) < 2:
            raise ShapeError(f"matmul needs a matrix per sample in each input (at least 2 dimensions besides "
                             f"the batch), got {_nshape(a)} and {_nshape(b)}")
        if a[-1] != b[-2]:
            raise ShapeError(f"matmul (…, n, k) @ (…, k, m) needs a's last dimension to equal b's second-to-last, "
                             f"got {_nshape(a)} @ {_nshape(b)} ({a[-1]} ≠ {b[-2]})")
        try:
            lead = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            raise ShapeError(f"matmul's leading dimensions do not broadcast: {_nshape(a)} @ {_nshape(b)}") from None
        return tuple(lead) + (a[-2], b[-1]), {}

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        """An input whose leading dims broadcast gets its gradient for every copy first, (…, n, k)
        or (…, k, m) with the output's leading dims, and then the sum over the copies."""
        lead = tuple(out_shape[:-2])
        out = []
        for k, s in enumerate(in_shapes):
            if tuple(s[:-2]) != lead:
                out.append((f"gradient of inputs[{k}] before the sum over its broadcast copies", lead + tuple(s[-2:]), 0))
        return out

    @classmethod
    def fwd_formula(cls, L, n):
        return F("{out} = {a} @ {b}   (per sample and leading index)", out=n.out, a=n.xs[0], b=n.xs[1])

    @classmethod
    def bwd_formula(cls, L, n):
        a, b = n.xs
        return F("{ga} = {g} @ {b}ᵀ;  {gb} = {a}ᵀ @ {g};  (ᵀ swaps the last two dims; broadcast dims are summed)",
                 ga=n.gins[0], gb=n.gins[1], g=n.g, a=a, b=b)


class Transpose(LayerType):
    type = "transpose"
    options = {"dims": (None, "dimpair")}

    @classmethod
    def infer(cls, opts, in_shapes):
        s = list(in_shapes[0])
        a, b = opts["dims"]
        for d in (a, b):
            _check_dim(d, tuple(s), "dims")
        i, j = _dim(a, len(s) + 1) - 1, _dim(b, len(s) + 1) - 1
        s[i], s[j] = s[j], s[i]
        return tuple(s), {}

    @classmethod
    def fwd_formula(cls, L, n):
        a, b = L.options["dims"]
        return F("{out} = transpose({x}, %d, %d)" % (a, b), out=n.out, x=n.x)

    @classmethod
    def bwd_formula(cls, L, n):
        a, b = L.options["dims"]
        return F("{gin} = transpose({g}, %d, %d)" % (a, b), gin=n.gin, g=n.g)


class Reshape(LayerType):
    type = "reshape"
    options = {"shape": (None, "shape")}

    @classmethod
    def infer(cls, opts, in_shapes):
        s = tuple(in_shapes[0])
        want = list(opts["shape"])
        size = math.prod(s)
        if want.count(-1) > 1:
            raise ShapeError(f"shape {want} has more than one -1")
        known = math.prod(d for d in want if d != -1)
        if -1 in want:
            if known == 0 or size % known:
                raise ShapeError(f"cannot reshape {_nshape(s)} ({size} values a sample) to {_nshape(want)}")
            want[want.index(-1)] = size // known
        if math.prod(want) != size:
            raise ShapeError(f"cannot reshape {_nshape(s)} ({size} values a sample) to {_nshape(want)} "
                             f"({cut(str(math.prod(want)))} values)")
        return tuple(want), {}

    @classmethod
    def fwd_formula(cls, L, n):
        return F("{out} = reshape({x}, " + _nshape(L.out_shape) + ")", out=n.out, x=n.x)

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{gin} = reshape({g}, " + _nshape(L.in_shape) + ")", gin=n.gin, g=n.g)


class Scale(LayerType):
    type = "scale"
    options = {"by": (None, "float")}

    @classmethod
    def fwd_formula(cls, L, n):
        return F("{out} = {c}·{x}", out=n.out, x=n.x, c=Const("c", L.options["by"]))

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{gin} = {c}·{g}", gin=n.gin, g=n.g, c=Const("c", L.options["by"]))


class Embedding(LayerType):
    """nn.Embedding(num, dim): token indices (N, ...) -> rows of the table (N, ..., dim)."""
    type = "embedding"
    options = {"num": (None, "posint"), "dim": (None, "posint")}
    params = ("weight",)
    symbols = {"weight": "W"}
    init = {"weight": "normal"}              # torch: normal_(0, 1)
    grads_input = False
    int_input = True

    @classmethod
    def infer(cls, opts, in_shapes):
        return tuple(in_shapes[0]) + (opts["dim"],), {"weight": (opts["num"], opts["dim"])}

    @classmethod
    def fans(cls, opts, in_shape):
        return opts["num"], opts["dim"]

    @classmethod
    def fwd_formula(cls, L, n):
        return F("{out}[…, :] = {W}[r, :] with r = {x}[…]   (each token r picks row r of the table)", out=n.out,
                 x=Ref(n.x.name, "input", "[…]"), W=Ref(L.t("weight"), "param", "[r, :]"))

    @classmethod
    def bwd_formula(cls, L, n):
        return F("{Wg}[r, :] = Σ over the tokens t with {x}[t] = r of {g}[t, :];  (token indices get no gradient)",
                 Wg=n.pg("weight"), x=n.x, g=n.g)


class Attention(LayerType):
    """nn.MultiheadAttention(E, heads, bias=bias, batch_first=True) called as mha(x, x, x,
    need_weights=False), with a causal mask when ``causal``. Five operations forward and five
    backward, each with its tensors (docs/scenario-format.md)."""
    type = "attention"
    options = {"heads": (1, "posint"), "causal": (False, "bool"), "bias": (True, "bool")}
    params = ("in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias")
    symbols = {"in_proj_weight": "W_in", "in_proj_bias": "b_in", "out_proj_weight": "W_o", "out_proj_bias": "b_o"}
    bias_params = ("in_proj_bias", "out_proj_bias")
    extras = ("q", "k", "v", "scores", "weights", "context")
    init = {"in_proj_weight": "xavier_uniform", "in_proj_bias": "zeros", "out_proj_weight": "kaiming_uniform",
            "out_proj_bias": "zeros"}
    needs_in_grad_work = True
    STEPS = ("qkv", "scores", "softmax", "context", "out")

    @classmethod
    def infer(cls, opts, in_shapes):
        s = tuple(in_shapes[0])
        if len(s) != 2:
            raise ShapeError(f"attention expects input (N, T, E): a per-sample shape of 2 dims, got {fmt_shape(s)}")
        T, E = s
        h = opts["heads"]
        if E % h:
            raise ShapeError(f"heads = {h} does not divide the embedding size E = {E}")
        P = {"in_proj_weight": (3 * E, E), "out_proj_weight": (E, E)}
        if opts.get("bias", True):
            P.update({"in_proj_bias": (3 * E,), "out_proj_bias": (E,)})
        return s, dict(sorted(P.items(), key=lambda kv: cls.params.index(kv[0])))

    @classmethod
    def fans(cls, opts, in_shape):
        """torch's fans of the (3E, E) in_proj_weight, which xavier_uniform_ draws from with bound
        √(6/(E + 3E)); out_proj_weight's kaiming_uniform reads only fan_in, E, as its Linear(E, E)."""
        return in_shape[-1], 3 * in_shape[-1]

    @classmethod
    def masked(cls, L) -> "np.ndarray | None":
        """The (query i, key j) cells the causal mask hides, as a (T, T) boolean array, True where
        key j comes after query i: there ``.weights`` (and ``.scores.grad``) are exactly 0, while
        ``.scores`` holds the unmasked q·k/√d. None without the mask. The engine masks with it; a
        screen can mark those cells of any (…, T, T) tensor of the layer."""
        if not L.options["causal"]:
            return None
        T = L.in_shape[0]
        return np.triu(np.ones((T, T), dtype=bool), 1)

    @classmethod
    def masked_tensors(cls, L) -> dict:
        """With the causal mask: the (N, h, T, T) tensors whose (query i, key j) cells it hides,
        ``.scores`` (taken before the mask, finite there), ``.weights`` (exactly 0 there) and their
        gradients (``.scores.grad`` 0 there, ``.weights.grad`` not: the mask stops it), each with
        masked()."""
        hidden = cls.masked(L)
        if hidden is None:
            return {}
        return {L.t(n): hidden for n in ("scores", "weights", "scores.grad", "weights.grad")}

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        T, E = in_shapes[0]
        h = opts["heads"]
        d = E // h
        return [("projection [q | k | v]", (T, 3 * E), 1), ("q", (h, T, d), 1), ("k", (h, T, d), 1),
                ("v", (h, T, d), 1), ("scores", (h, T, T), 1), ("weights", (h, T, T), 1), ("context", (T, E), 1)]

    @classmethod
    def _refs(cls, L, n):
        t = L.t
        return dict(x=n.x, out=n.out, g=n.g, gin=n.gin, Wi=n.p("in_proj_weight"), bi=n.p("in_proj_bias"),
                    Wo=n.p("out_proj_weight"), bo=n.p("out_proj_bias"), Wig=n.pg("in_proj_weight"),
                    big=n.pg("in_proj_bias"), Wog=n.pg("out_proj_weight"), bog=n.pg("out_proj_bias"),
                    q=Ref(t("q"), "extra"), k=Ref(t("k"), "extra"), v=Ref(t("v"), "extra"),
                    S=Ref(t("scores"), "extra"), A=Ref(t("weights"), "extra"), C=Ref(t("context"), "extra"),
                    qg=Ref(t("q.grad"), "grad"), kg=Ref(t("k.grad"), "grad"), vg=Ref(t("v.grad"), "grad"),
                    Sg=Ref(t("scores.grad"), "grad"), Ag=Ref(t("weights.grad"), "grad"),
                    Cg=Ref(t("context.grad"), "grad"),
                    d=Const("d", L.in_shape[1] // L.options["heads"]), h=Const("h", L.options["heads"]))

    @classmethod
    def forward_steps(cls, L, n):
        r = cls._refs(L, n)
        b = L.has("in_proj_bias")
        t = L.t
        P = [p for p in ("in_proj_weight", "in_proj_bias") if L.has(p)]
        causal = L.options["causal"]
        return [
            Step("qkv", "qkv", ((n.x.name, "input"),) + tuple((t(p), "param") for p in P),
                 ((t("q"), "result"), (t("k"), "result"), (t("v"), "result")),
                 F("[q | k | v] = {x} @ {Wi}ᵀ" + (" + {bi}" if b else "") + ";  "
                   "split into {h} heads of {d} values each: {q}, {k}, {v}   (N, heads, T, E/heads)", **r)),
            Step("scores", "scores", ((t("q"), "input"), (t("k"), "input")), ((t("scores"), "result"),),
                 F("{S} = {q} @ {k}ᵀ / √{d}   (N, h, T, T): query i against key j", **r)),
            Step("softmax", "softmax", ((t("scores"), "input"),), ((t("weights"), "result"),),
                 F("{A} = softmax({S}) over the keys j" + (
                     " ≤ i, the keys the causal mask leaves to query i;  (masked: %s is exactly 0 where key j > "
                     "query i, a later key, while %s is taken before the mask and stays finite there)"
                     % (t("weights"), t("scores")) if causal else ""), **r)),
            Step("context", "context", ((t("weights"), "input"), (t("v"), "input")), ((t("context"), "result"),),
                 F("{C} = {A} @ {v}, the heads side by side again   (N, T, E)", **r)),
            Step("out", "out", ((t("context"), "input"),) + tuple((t(p), "param") for p in ("out_proj_weight",
                                                                                        "out_proj_bias") if L.has(p)),
                 ((n.out.name, "result"),),
                 F("{out} = {C} @ {Wo}ᵀ" + (" + {bo}" if L.has("out_proj_bias") else ""), **r)),
        ]

    @classmethod
    def backward_steps(cls, L, n):
        r = cls._refs(L, n)
        t = L.t
        bo = L.has("out_proj_bias")
        bi = L.has("in_proj_bias")
        return [
            Step("out", "back_out", ((n.g.name, "upstream"), (t("context"), "input"), (t("out_proj_weight"), "param")),
                 ((t("out_proj_weight.grad"), "grad_param"),) + (((t("out_proj_bias.grad"), "grad_param"),) if bo else ())
                 + ((t("context.grad"), "grad"),),
                 F("{Wog} = {g}ᵀ @ {C}" + (";  {bog} = Σₙ {g}" if bo else "") + ";  {Cg} = {g} @ {Wo}", **r)),
            Step("context", "back_context", ((t("context.grad"), "upstream"), (t("weights"), "input"), (t("v"), "input")),
                 ((t("weights.grad"), "grad"), (t("v.grad"), "grad")),
                 F("{Ag} = {Cg} @ {v}ᵀ;  {vg} = {A}ᵀ @ {Cg};  (per head)", **r)),
            Step("softmax", "back_softmax", ((t("weights.grad"), "upstream"), (t("weights"), "input")),
                 ((t("scores.grad"), "grad"),),
                 F("{Sg} = {A} ⊙ ({Ag} − Σⱼ({Ag} ⊙ {A}))" + ("   (0 where the mask hid a key: there A = 0)"
                                                            if L.options["causal"] else ""), **r)),
            Step("scores", "back_scores", ((t("scores.grad"), "upstream"), (t("q"), "input"), (t("k"), "input")),
                 ((t("q.grad"), "grad"), (t("k.grad"), "grad")),
                 F("{qg} = {Sg} @ {k} / √{d};  {kg} = {Sg}ᵀ @ {q} / √{d}", **r)),
            Step("qkv", "back_qkv", ((t("q.grad"), "upstream"), (t("k.grad"), "upstream"), (t("v.grad"), "upstream"),
                                     (n.x.name, "input"), (t("in_proj_weight"), "param")),
                 ((t("in_proj_weight.grad"), "grad_param"),) + (((t("in_proj_bias.grad"), "grad_param"),) if bi else ())
                 + ((n.gin.name, "grad_in"),),
                 F("G = [{qg} | {kg} | {vg}], the heads merged back   (N, T, 3E);  {Wig} = Gᵀ @ {x}"
                   + (";  {big} = Σₙ G" if bi else "") + ";  {gin} = G @ {Wi}", **r)),
        ]


GRAPH_LAYERS = {c.type: c for c in (Add, Mul, Concat, Matmul, Transpose, Reshape, Scale, Embedding, Attention)}
