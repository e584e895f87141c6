"""Training settings shared by every method that trains."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError
from lmadapt.train.trackers import parse_report_to


@dataclass
class TrainConfig:
    """Settings of the one training loop (AdamW + warmup + linear/cosine decay)."""

    epochs: float = field(default=3.0, metadata={"help": "passes over the training set (fractions allowed)"})
    lr: float = field(default=0.0, metadata={"help": "peak learning rate (0 = the method's default)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=16, metadata={"help": "global batch size (all processes, all accumulation steps)"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps per optimizer step"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "fraction of steps with linear warmup"})
    schedule: str = field(default="linear", metadata={"help": "learning-rate decay: linear | cosine | constant"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    precision: str = field(default="fp32", metadata={"help": "fp32 | bf16 (autocast on supported devices)"})
    seed: int = field(default=0, metadata={"help": "seed for data order, initialisation and dropout"})
    max_length: int = field(default=256, metadata={"help": "longest input in tokens (prompt + target)"})
    eval_batch_size: int = field(default=32, metadata={"help": "batch size for scoring / prediction"})
    save_every: int = field(default=0, metadata={"help": "write a resumable checkpoint every N optimizer steps (0 = off)"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in the output folder"})
    eval_each_epoch: bool = field(default=True, metadata={"help": "score the eval set after each epoch"})
    val_split: float = field(default=-1.0, metadata={
        "help": "fraction of the training data held out as a validation set for every choice (epochs, "
                "early stopping, search); -1 = auto: 0.15 in compare and with early stopping, else 0"})
    early_stop_patience: int = field(default=0, metadata={
        "help": "stop after N epochs without a better validation score and keep the best epoch's "
                "weights (0 = off; needs a validation set)"})
    max_train_examples: int = field(default=0, metadata={"help": "use at most N training examples (0 = all)"})
    max_eval_examples: int = field(default=0, metadata={"help": "score at most N eval examples (0 = all)"})
    max_new_tokens: int = field(default=32, metadata={"help": "generation length for generation tasks"})
    normalize_scores: bool = field(default=False, metadata={"help": "length-normalise label log-likelihoods"})
    group_by_length: bool = field(default=False, metadata={
        "help": "batch examples of similar length together (seeded; less padding, same epochs)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each layer's activations in the backward pass (non-reentrant): less memory, more time"})
    packing: bool = field(default=False, metadata={
        "help": "causal LMs: pack each micro-batch's examples into rows of max_length (positions restart "
                "per example, attention stays within it): no padding, the same loss"})
    loss_chunk: int = field(default=0, metadata={
        "help": "causal LMs: run the LM head and cross-entropy on this many target tokens at a time, "
                "recomputed in the backward pass (bounds the logits' memory; 0 = all at once)"})
    report_to: str = field(default="", metadata={
        "help": "experiment trackers, a comma list of tensorboard | wandb | mlflow | trackio (through "
                "accelerate; tensorboard writes RUN/trackers/): step loss, lr, tokens/s, per-epoch "
                "scores, the record (empty = none)"})

    def __post_init__(self) -> None:
        checks = [
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.lr >= 0, f"lr must be > 0 (or 0 for the method's default), got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.batch_size % self.grad_accum == 0,
             f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.schedule in ("linear", "cosine", "constant"),
             f"schedule must be linear, cosine or constant, got {self.schedule!r}"),
            (self.precision in ("fp32", "bf16"), f"precision must be fp32 or bf16, got {self.precision!r}"),
            (self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}"),
            (self.val_split == -1 or 0 <= self.val_split < 1,
             f"val_split must be in [0, 1) (or -1 for auto), got {self.val_split}"),
            (self.early_stop_patience >= 0, f"early_stop_patience must be >= 0, got {self.early_stop_patience}"),
            (self.loss_chunk >= 0, f"loss_chunk must be >= 0 (0 = all at once), got {self.loss_chunk}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LmadaptError(message)
        parse_report_to(self.report_to)  # known names only; whether installed is checked when a run starts

    def validation_fraction(self, selecting: bool) -> float:
        """The val_split in force: as set, or with -1 (auto) 0.15 when something is selected on
        it (a compare, early stopping) and 0 otherwise."""
        if self.val_split >= 0:
            return self.val_split
        return 0.15 if selecting or self.early_stop_patience > 0 else 0.0
