"""The catalogue's graph layers (docs/scenario-format.md, "Graph networks"): merges (`add`, `mul`, `concat`, `matmul`), shape
layers (`transpose`, `reshape`, `scale`), `embedding` and `attention`. Shapes are per sample (no
batch dimension); a `dim` counts the batch as 0, as torch does on the batched tensor."""
from __future__ import annotations

import math

import numpy as np

from ..errors import cut
from .catalog import LayerType, ShapeError, Step, _check_dim, fmt_shape
from ..layers.formula import Const, F, Ref


def _nshape(s) -> str:
    return fmt_shape(("N",) + tuple(s))


def _dim(d: int, nd_batched: int) -> int:
    return d % nd_batched


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


GRAPH_LAYERS = {c.type: c for c in (Attention,)}
