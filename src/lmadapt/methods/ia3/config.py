from dataclasses import dataclass, field


@dataclass
class IA3MethodConfig:
    """(IA)³ (Liu et al., 2022): learned vectors rescale keys, values and the FFN's inner activations."""

    ia3_target_modules: tuple[str, ...] = field(default=(), metadata={
        "help": "module names to rescale (default: key, value and FFN second projection, per architecture)"})
    ia3_feedforward_modules: tuple[str, ...] = field(default=(), metadata={
        "help": "which targets are FFN layers (scaled on their input); default: the FFN second projection"})
    ia3_default_lr: float = field(default=3e-3, metadata={"help": "learning rate used when lr=0"})
