from dataclasses import dataclass


@dataclass
class ZeroShotConfig:
    """Zero-shot prompting has no knobs of its own: the task's prompt template is the method."""
