from dataclasses import dataclass, field

from lmadapt.errors import LmadaptError

EXPERT_METHODS = ("lora", "full")


@dataclass
class ProxyConfig:
    """Proxy-tuning (Liu et al., 2024): tune a small expert, steer the large base at decoding time.

    The run's --model is the large base M; `proxy_small` is the small model M- (anti-expert),
    and the expert M+ is M- tuned on the task with the shared training loop (TrainConfig).
    """

    proxy_small: str = field(default="", metadata={"path": True,
        "help": "small model sharing the base's tokenizer: the anti-expert, tuned into the expert "
                "(empty = the run's model itself, i.e. base + alpha*(tuned - base))"})
    proxy_alpha: float = field(default=1.0, metadata={
        "help": "strength alpha in base + alpha*(expert - anti_expert); 0 = the base alone"})
    expert_method: str = field(default="lora", metadata={
        "help": "how the expert is tuned: lora (one model, LoRA on = expert, off = anti-expert) | full"})
    proxy_lora_r: int = field(default=8, metadata={"help": "LoRA rank of the expert (expert_method=lora)"})
    proxy_report_parts: bool = field(default=True, metadata={
        "help": "also score the base and the expert alone on the eval set (record.extra)"})

    def __post_init__(self) -> None:
        if self.expert_method not in EXPERT_METHODS:
            raise LmadaptError(f"expert_method must be one of {', '.join(EXPERT_METHODS)}, "
                               f"got {self.expert_method!r}")
        if self.proxy_lora_r < 1:
            raise LmadaptError(f"proxy_lora_r must be >= 1, got {self.proxy_lora_r}")
