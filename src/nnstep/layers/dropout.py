"""``dropout``: torch's nn.Dropout(p) in training mode, out = in ⊙ mask, mask = [u < 1 − p] / (1 − p)
with u uniform in [0, 1). The mask, ``<layer>.mask``, is drawn from the generator the program passes
(``rng``), seeded from the scenario's seed, the step and the layer, so that every replay of a step
(the debugger stepping back, ``run``, ``trace``, gradcheck) draws the same one; the layer never
seeds anything itself. ``export --torch`` writes every step's mask as data (torch would draw
others)."""
from __future__ import annotations

from nnstep.layers import Const, F, Factor, K, Layer, Lit, Option, Rule, Term, Value, el, exact


class Dropout(Layer):
    """Training mode: keep with probability 1 − p, scale by 1/(1 − p) (p = 0: a mask of ones); its
    backward multiplies by the same mask."""
    type = "dropout"
    torch_modules = ("Dropout",)
    torch_functions = ("F.dropout",)
    options = {"p": Option(0.5, "prob_open", "the probability of dropping an input, in [0, 1)")}
    extras = ("mask",)
    torch_random_extra = "mask"
    torch_source = '''
class NnstepDropout(nn.Module):
    """nn.Dropout in training mode (out = in · mask), with the mask nnstep drew for the step being
    trained (RANDOM, STEP)."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def forward(self, x):
        return x * torch.tensor(self.masks[STEP - 1], dtype=x.dtype)
'''

    @classmethod
    def intermediates(cls, opts, in_shapes, out_shape):
        return [("mask", tuple(in_shapes[0]), 1)]

    @classmethod
    def forward_formula(cls, L, n):
        return F("{mask} = [u < 1 − {p}] / (1 − {p}), u uniform in [0, 1), drawn from the seed, the step and "
                 "the layer;  {out} = {x} ⊙ {mask}", mask=n.e("mask"), p=Const("p", L.options["p"]), out=n.out, x=n.x)

    @classmethod
    def backward_formula(cls, L, n):
        return F("{gin} = {g} ⊙ {mask};  (a dropped input gets no gradient, a kept one 1/(1 − p) of it)",
                 gin=n.gin, g=n.g, mask=n.e("mask"))

    @classmethod
    def torch_module(cls, L):
        return (f"NnstepDropout(RANDOM[{L.name!r}])",
                f"nn.Dropout(p={exact(L.options['p'])}) with nnstep's masks (see NnstepDropout)")

    def forward(self, x, P, rng=None):
        if rng is None:
            raise ValueError("dropout draws its mask from the generator the program passes (rng)")
        p = self.opts["p"]
        keep = rng.random(x.shape) < 1.0 - p
        mask = keep.astype(x.dtype) / x.dtype.type(1.0 - p)
        return x * mask, {"mask": mask}, {}

    def backward(self, g, x, out, P, extras):
        return g * extras["mask"], {}, None

    def value_rule(self, name, idx, V):
        m = el(V, self.t("mask"), idx)
        if name == self.t("out"):
            return Value("the input times the mask", el(V, self.x, idx) * m)
        if name == self.t("mask"):
            p = K("p", self.opts["p"])
            if m.v() == 0:
                return Value("dropped: u ≥ 1 − p for the uniform u drawn here", Lit(0), given=[p])
            return Value("kept (u < 1 − p for the uniform u drawn here), and scaled by 1/(1 − p)", 1 / (1 - p))
        return None

    def grad_rule(self, wrt, idx, V):
        m = V(self.t("mask"))
        return Rule("element-wise: upstream × mask", [Term(
            (Factor(self.dout(idx, self.sym(self.x, idx)), self.sym(self.t("mask"), idx),
                    float(m[tuple(idx)])),), (self.grad_out, tuple(idx)))])
