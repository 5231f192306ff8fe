"""Swish with a learnable β: a layer type of your own, worked (docs/layers.md walks through it).

    out = x · σ(β·x),  one β per feature (the last dimension), β starting at 1 (Swish-1, the SiLU)

With s = σ(β·x), its derivatives are ∂out/∂x = s + β·x·s·(1 − s) and ∂out/∂β = x²·s·(1 − s), so for
an upstream gradient g = ∂E/∂out:

    grad_in = g ⊙ (s + β·x·s·(1 − s))          ∂E/∂β_f = Σ over the batch of g ⊙ x²·s·(1 − s)

Use it with --layers:

    nnstep gradcheck examples/layers/swish.toml --layers examples/layers/swish.py
    nnstep examples/layers/swish.toml --layers examples/layers/swish.py
"""
import numpy as np

from nnstep.layers import F, Factor, Layer, Rule, Term, Value, el, expr as X


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


class Swish(Layer):
    """out = x · σ(β·x), one learnable β per feature (the last dimension)."""
    type = "swish"                      # what a scenario writes: type = "swish"
    params = ("beta",)
    symbols = {"beta": "β"}             # its name on screen
    init = {"beta": "ones"}             # β starts at 1: Swish-1, the SiLU

    # --- the declaration: read before any number exists ------------------------------------------
    @classmethod
    def shapes(cls, opts, in_shapes):   # per sample, no batch dimension
        s = in_shapes[0]
        return s, {"beta": (s[-1],)}    # out has the input's shape; β one per feature

    @classmethod
    def forward_formula(cls, L, n):
        return F("{out} = {x} ⊙ σ({b} ⊙ {x})", out=n.out, x=n.x, b=n.p("beta"))

    @classmethod
    def backward_formula(cls, L, n):
        return F("s = σ({b} ⊙ {x});  {gin} = {g} ⊙ (s + {b} ⊙ {x} ⊙ s ⊙ (1 − s));  "
                 "{bg} = Σₙ {g} ⊙ {x}² ⊙ s ⊙ (1 − s)",
                 b=n.p("beta"), x=n.x, g=n.g, gin=n.gin, bg=n.pg("beta"))

    # --- the math ------------------------------------------------------------------------------------
    def forward(self, x, P):
        s = sigmoid(P["beta"] * x)
        return x * s, {}, {}            # (out, extras, new state)

    def backward(self, g, x, out, P, extras):
        b = P["beta"]
        s = sigmoid(b * x)
        d = s * (1 - s)
        grad_in = g * (s + b * x * d)
        dbeta = (g * x * x * d).reshape(-1, x.shape[-1]).sum(axis=0)
        return grad_in, {"beta": dbeta}, None    # (grad_in, {param: grad}, local or None)

    # --- one element at a time, for explain -----------------------------------------------------------
    def value_rule(self, name, idx, V):
        """out[n, f] = x[n, f] · σ(β[f] · x[n, f])."""
        if name != self.t("out"):
            return None
        x = el(V, self.x, idx)                       # the input's element
        b = el(V, self.t("beta"), idx[-1:])          # its feature's β
        return Value("x times σ(β·x)", x * X.sig(b * x))

    def grad_rule(self, wrt, idx, V):
        x, beta = V(self.x), V(self.t("beta"))
        s = sigmoid(beta * x)
        if wrt == "beta":                            # ∂E/∂β_f = Σₙ g[n, f] · x²·s·(1 − s)
            f = idx[0]
            terms = []
            for r in np.ndindex(*x.shape[:-1]):
                at = r + (f,)
                d = float(x[at] ** 2 * s[at] * (1 - s[at]))
                terms.append(Term((Factor(self.dout(at, self.sym(self.t("beta"), idx)),
                                          f"{self.sym(self.x, at)}²·s·(1 − s)", d),), (self.grad_out, at)))
            return Rule("Σ over the batch", terms)
        at = tuple(idx)                              # grad_in: element-wise, one term
        d = float(s[at] + beta[at[-1]] * x[at] * s[at] * (1 - s[at]))
        return Rule("element-wise: upstream × ∂out/∂x", [Term(
            (Factor(self.dout(at, self.sym(self.x, at)), "s + β·x·s·(1 − s)", d),), (self.grad_out, at))])

    # --- the torch equivalent, for export --torch ---------------------------------------------------
    torch_source = '''
class Swish(nn.Module):
    """x · σ(β·x), one learnable β per feature."""

    def __init__(self, features):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(features))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)
'''

    @classmethod
    def torch_module(cls, L):
        return f"Swish({L.in_shape[-1]})", "x · σ(β·x), β per feature"
