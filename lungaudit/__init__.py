"""lungaudit: catch chest X-ray classifiers that look outside the lungs."""

__version__ = "0.1.0"
