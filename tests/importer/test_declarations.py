"""What a layer class declares it is (torch_modules, torch_functions, onnx_ops) and what the
importers convert are the same lists: every declared name is a real torch module or function, and
has a converter; every converter's type declares something."""
import operator

import pytest

from nnstep.importer import onnx as onnx_import, torch_fx
from nnstep.layers import registry

torch = pytest.importorskip("torch")


def declared(attr):
    return {(cls.type, name) for cls in registry.builtin_types().values() for name in getattr(cls, attr)}


def test_every_declared_torch_module_exists_and_converts():
    assert declared("torch_modules")
    for typ, name in declared("torch_modules"):
        assert isinstance(getattr(torch.nn, name), type), name
        assert hasattr(torch_fx._Mapper, f"c_{typ}"), typ


def test_every_declared_torch_function_exists_and_converts():
    F = torch.nn.functional
    ops = {"+": operator.add, "*": operator.mul, "@": operator.matmul, "* number": operator.mul,
           "/ number": operator.truediv}
    for typ, name in declared("torch_functions"):
        if name in ops:
            fn = ops[name]
        elif name.startswith("F."):
            fn = getattr(F, name[2:])
        elif name.startswith("torch."):
            fn = getattr(torch, name[6:])
        else:
            assert name.startswith("Tensor."), name
            fn = getattr(torch.Tensor, name[7:].split(" ")[0])
        assert callable(fn), name
        assert hasattr(torch_fx._Mapper, f"c_{typ}"), typ


def test_every_declared_onnx_operator_converts():
    onnx = pytest.importorskip("onnx")
    for typ, name in declared("onnx_ops"):
        for op in name.split("+"):
            onnx.defs.get_schema(op)                      # a real ONNX operator
            assert hasattr(onnx_import._Mapper, f"c_{op}"), op


def test_the_lists_in_messages_come_from_the_declarations():
    assert "nn.MultiheadAttention" in torch_fx.what_maps() and "torch.cat" in torch_fx.what_maps()
    assert onnx_import.what_maps().split(", ")[:2] == ["Gemm", "MatMul+Add"]
    converters = {n[2:] for n in vars(torch_fx._Mapper) if n.startswith("c_")} - {"alias"}
    assert converters <= {t for t, _ in declared("torch_modules") | declared("torch_functions")}
