"""Services built on the API, beside the CLI: single-image ``predict``, the local web app ``serve`` and
``export`` for deployment. Each loads a run once and audits predictions with the audit's own step."""
