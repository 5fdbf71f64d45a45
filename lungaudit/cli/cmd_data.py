"""Commands: (filled in by the stage that owns them)."""
