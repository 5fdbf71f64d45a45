"""Studies of a trained run beside the audit: explanation panels, sanity checks, feature-space views.

* :mod:`.explain` -- several explanation methods side by side for chosen images, with their lung energy;
* :mod:`.sanity` -- Adebayo et al.'s model- and data-randomisation tests for each method;
* :mod:`.features` -- embeddings, filters, most/least activating images and the source-leakage probe.

Each writes one folder (``runs/explain/<name>``, ``runs/sanity/<name>``, ``runs/features/<name>``).
They read runs through the run layer and reuse the audit's lung masks and energy metrics, so their
numbers are the audit's; ``lungaudit.api`` and the CLI are thin layers over them.
"""
