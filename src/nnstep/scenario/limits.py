"""Limits on what a scenario may ask for: refused before anything is allocated (docs/errors.md
states each one)."""
MAX_ELEMENTS = 50_000_000        # per tensor: 400 MB in float64
MAX_TOTAL_PARAMS = 50_000_000
MAX_ACTIVATIONS = 100_000_000    # all layers' outputs for one batch (the backward pass doubles it)
MAX_STEPS = 10_000_000
MAX_LAYERS = 1000
MAX_MERGE_INPUTS = 64             # inputs of one add / mul / concat (mul's backward names every other factor: k² refs)
MAX_RECURRENT_WORK = 1_000_000_000   # rnn/lstm: elements copied per batch filling (N, T, ·) one time step at a time
MAX_KERNEL = 4096                # elements of one conv kernel (the backward pass loops over them)
MAX_NDIM = 8                     # dimensions of an inline array
MAX_FILE_BYTES = 512 * 1024 * 1024   # a data or weights file
MAX_SCENARIO_BYTES = 16 * 1024 * 1024  # the TOML file itself (put big data in a .npz)
MAX_CSV_BYTES = 256 * 1024 * 1024
