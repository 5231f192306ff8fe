"""Run several exported PyTorch scripts in one process (torch is imported once) and print
{script: its stdout, or "ERROR: <traceback>"} as one JSON document. Used by test_export_torch.py."""
import contextlib
import io
import json
import runpy
import sys
import traceback

out = {}
for path in sys.argv[1:]:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
        out[path] = buf.getvalue()
    except BaseException:  # noqa: BLE001 - report every script, whatever it raised
        out[path] = "ERROR: " + traceback.format_exc()
sys.stdout.write(json.dumps(out))
