"""lungaudit: catch chest X-ray classifiers that look outside the lungs.

The public API (see ``lungaudit.api`` and the README)::

    import lungaudit as la
    run = la.train("data/synth")
    result = la.audit(run=run.run_dir, split="test")
    la.gate(result.out_dir, max_flag_rate=0.25).passed
    la.explain("data/synth/COVID/images", run=run.run_dir)   # panels: several methods side by side
    la.sanity(run.run_dir)                                     # Adebayo sanity checks per method
    la.features(run=run.run_dir)                               # embeddings + source-leakage probe
"""

__version__ = "0.2.0"

# The stage packages ``audit``, ``report`` (and ``explain``) share names with public functions. Import
# the packages first: Python binds a subpackage as an attribute of its parent only when it is first
# imported, so the functions bound below stay what ``lungaudit.audit`` means from then on.
import lungaudit.audit  # noqa: E402,F401
import lungaudit.explain  # noqa: E402,F401
import lungaudit.report  # noqa: E402,F401
from lungaudit.api import (  # noqa: E402
    DemoResult,
    apply_review,
    audit,
    compare,
    demo,
    explain,
    export,
    features,
    gate,
    inspect,
    load_config,
    load_dataset,
    load_run,
    plant,
    predict,
    report,
    sanity,
    serve,
    synth,
    train,
)

__all__ = [
    "DemoResult",
    "__version__",
    "apply_review",
    "audit",
    "compare",
    "demo",
    "explain",
    "features",
    "export",
    "gate",
    "inspect",
    "load_config",
    "load_dataset",
    "load_run",
    "plant",
    "predict",
    "report",
    "serve",
    "sanity",
    "synth",
    "train",
]
