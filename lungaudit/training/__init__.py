"""Training: the epoch loop and the two stages (U-Net segmenter, masked/unmasked classifier)."""

STAGES: tuple[str, ...] = ("all", "seg", "cls")  # what ``lungaudit train --stage`` accepts
