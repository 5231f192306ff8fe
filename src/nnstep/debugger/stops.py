"""Why the cursor stopped. :class:`Stop` and the rules that produce it live with the one op runner
(:mod:`nnstep.engine.runner`), which every front end shares; this name is kept for importers."""
from ..engine.runner import REASONS, Stop  # noqa: F401
