"""Settings of Distilling Step-by-Step (Hsieh et al., 2023)."""

from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError


@dataclass
class DistillConfig:
    """Multi-task student: predict the label and generate the teacher's rationale (Eq. 3)."""

    distill_alpha: float = field(default=0.5, metadata={
        "help": "weight of the label task: L = alpha*L_label + (1-alpha)*L_rationale (1.0 = label-only baseline)"})
    distill_label_source: str = field(default="gt", metadata={
        "help": "label-task targets: gt (ground truth) | teacher (the teacher's answers)"})
    distill_student: str = field(default="lora", metadata={
        "help": "the student's parameterisation: full, or a peft method (lora | ia3 | prefix | prompt | ptuning)"})
    distill_student_args: tuple[str, ...] = field(default=(), metadata={
        "help": "settings of the student method, comma-separated key=value (e.g. lora_r=16,lora_alpha=32)"})
    distill_label_prefix: str = field(default="[label] ", metadata={"help": "task prefix of the label task"})
    distill_rationale_prefix: str = field(default="[rationale] ", metadata={
        "help": "task prefix of the rationale task"})
    distill_rationale_max_tokens: int = field(default=128, metadata={
        "help": "rationale targets are cut to this many tokens"})
    distill_default_lr: float = field(default=0.0, metadata={
        "help": "learning rate used when lr=0 (0 = the student method's default; full: 5e-5)"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise LmadaptError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if self.distill_label_source not in ("gt", "teacher"):
            raise LmadaptError(f"distill_label_source must be gt or teacher, got {self.distill_label_source!r}")
        students = ("full", *_peft_methods())  # full fine-tuning, or any peft method
        if self.distill_student not in students:
            raise LmadaptError(f"distill_student must be one of {', '.join(students)}, got {self.distill_student!r}")
        if self.distill_label_prefix == self.distill_rationale_prefix:
            raise LmadaptError("distill_label_prefix and distill_rationale_prefix must differ")
        if self.distill_rationale_max_tokens < 1:
            raise LmadaptError(f"distill_rationale_max_tokens must be >= 1, got {self.distill_rationale_max_tokens}")
        bad = [a for a in self.distill_student_args if "=" not in a]
        if bad:
            raise LmadaptError(f"distill_student_args entries must be key=value, got {bad[0]!r}")


def _peft_methods() -> list[str]:
    """The peft-backed methods' names; imported here, not at module level, so that reading
    these settings (the CLI's help) needs no torch."""
    from lmadapt.methods import REGISTRY
    from lmadapt.methods.peft_common.build import PEFT_METHODS

    return [name for name in REGISTRY if name in PEFT_METHODS]
