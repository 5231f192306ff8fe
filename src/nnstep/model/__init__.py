"""The model of one training step: what a scenario *is* and the step as a program, with no parsing
and no math.

* :mod:`.scenario`: the typed, validated scenario (Scenario, LayerSpec, LossSpec, ...);
* :mod:`.plan`: one training step as the flat list of operations of docs/commands.md (names,
  stages, the tensors each reads and writes with their roles, and the formula), built from a
  scenario and its layer types' classes;
* :mod:`.formula`: a formula's clauses with their numbers filled in (the vocabulary formulas are
  written in is :mod:`nnstep.layers.formula`);
* :mod:`.stats`: the one module of summary statistics (overflow-safe), for breakpoints, the screen
  and the JSON outputs.

It imports nothing of nnstep's but the layer types (:mod:`nnstep.layers`) and
:mod:`nnstep.errors`: the scenario loader builds on it, and so does the engine, and neither
imports the other (tests/test_layering.py proves it).
"""
