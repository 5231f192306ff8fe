"""The bottom of nnstep: what a scenario *is*, with no parsing and no math.

* :mod:`.model`: the typed, validated scenario (records: value types cheap to define);
* :mod:`.catalog`: every layer, loss and optimizer type, with its options, defaults, parameter
  names and shape rules;
* :mod:`.formula`: formulas as structured clauses of typed references;
* :mod:`.plan`: one training step as the flat list of operations of docs/commands.md (names, stages, the
  tensors each reads and writes with their roles, and the formula), built from a scenario;
* :mod:`.stats`: the one module of summary statistics (overflow-safe), for breakpoints, the screen
  and the JSON outputs.

It imports nothing of nnstep's except :mod:`nnstep.errors`: the scenario loader builds on it, and so
does the engine, and neither imports the other (a test proves it).
"""
