"""THE training loop. Methods supply a loss (via TaskModel) and which parameters train.

Runs on `accelerate`: one process by default; `accelerate launch --num_processes N` gives DDP
(or FSDP / DeepSpeed, per the accelerate config) with the same global batch, so the loss curve
matches the single-process run. Each global batch of `batch_size` examples is cut into
`grad_accum` micro-batches, and each micro-batch into one slice per process.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm.auto import tqdm
from transformers import get_scheduler

from lmadapt.data.task import Example
from lmadapt.decoding.sources import unwrap
from lmadapt.errors import LmadaptError
from lmadapt.models.task_model import TaskModel
from lmadapt.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
)
from lmadapt.train.config import TrainConfig
from lmadapt.train.guard import DivergenceGuard, fix_hint
from lmadapt.train.trackers import log_epoch_eval, log_train_step
from lmadapt.utils import seed_everything


@dataclass
class TrainResult:
    steps: int = 0
    losses: list[float] = field(default_factory=list)  # mean loss of each optimizer step
    seconds: float = 0.0
    tokens: int = 0
    examples: int = 0
    epoch_evals: list[dict] = field(default_factory=list)
    best_epoch: int | None = None  # early stopping: the epoch whose weights were kept

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


# Called with (epoch, score) after each per-epoch evaluation while set (`epoch_scores`): a compare
# records validation curves through it and a search prunes trials (the hook may raise to stop).
_EPOCH_HOOK: ContextVar[Callable[[int, float], None] | None] = ContextVar("epoch_hook", default=None)


@contextlib.contextmanager
def epoch_scores(hook: Callable[[int, float], None] | None = None) -> Iterator[None]:
    """Within the block, every training run scores each epoch (the last included) on the task its
    method was given to watch (a validation set; the scores land in `TrainResult.epoch_evals`)
    and hands the score to `hook`, then to the hook of an enclosing block (a search's pruner
    around a run)."""
    outer = _EPOCH_HOOK.get()

    def chained(epoch: int, score: float) -> None:
        if hook is not None:
            hook(epoch, score)
        if outer is not None:
            outer(epoch, score)

    token = _EPOCH_HOOK.set(chained)
    try:
        yield
    finally:
        _EPOCH_HOOK.reset(token)


class EarlyStop:
    """Keeps the trainable weights of the best-scoring epoch; says stop after `patience` epochs
    without a better score (patience 0: never stops, still keeps the best)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.best_epoch, self.state = patience, -math.inf, None, None
        self.since = 0

    def update(self, epoch: int, score: float, model: torch.nn.Module) -> bool:
        if score > self.best:
            self.best, self.best_epoch, self.since = score, epoch, 0
            self.state = {n: t.clone() for n, t in trainable_state(model).items()}
        else:
            self.since += 1
        return self.patience > 0 and self.since >= self.patience

    def save(self, root: Path) -> None:
        """The best weights beside the checkpoints, so a resumed run can still return to them."""
        if self.state is not None:
            from safetensors.torch import save_file

            root.mkdir(parents=True, exist_ok=True)
            tmp = root / ".best.safetensors.tmp"
            save_file(self.state, tmp, metadata={"epoch": str(self.best_epoch), "score": repr(self.best)})
            tmp.replace(root / "best.safetensors")

    def resume(self, root: Path, epoch_evals: list[dict]) -> None:
        """Continue from an interrupted run's per-epoch scores and saved best weights."""
        from safetensors import safe_open

        best = root / "best.safetensors"
        for row in epoch_evals:
            if row["score"] > self.best:
                self.best, self.best_epoch, self.since = row["score"], row["epoch"], 0
            else:
                self.since += 1
        if best.is_file():
            with safe_open(str(best), "pt") as handle:
                if handle.metadata().get("epoch") == str(self.best_epoch):
                    self.state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118

    def restore(self, model: torch.nn.Module) -> int | None:
        """Put the best epoch's weights back; returns the epoch whose weights the model now holds
        (None: the last epoch's, when the best one's weights are not at hand)."""
        if self.state is None:
            return None
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in self.state.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        return self.best_epoch


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    use_cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=use_cpu, mixed_precision="bf16" if cfg.precision == "bf16" else "no")
    if use_cpu and accelerator.num_processes > 1 and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        _fsdp_on_cpu(accelerator)
    return accelerator


def deepspeed_settings(accelerator: Accelerator, cfg: TrainConfig, per_proc: int) -> None:
    """Fill a DeepSpeed config's "auto" batch, accumulation and clipping values from the train
    settings (`examples/deepspeed/`): the loop hands accelerate no dataloader to read them from."""
    plugin = accelerator.state.deepspeed_plugin
    values = {"train_micro_batch_size_per_gpu": per_proc, "gradient_accumulation_steps": cfg.grad_accum,
              "train_batch_size": cfg.batch_size, "gradient_clipping": cfg.max_grad_norm}
    for key, value in values.items():
        if plugin.is_auto(key):
            plugin.deepspeed_config[key] = value
    if plugin.deepspeed_config["gradient_accumulation_steps"] != cfg.grad_accum:
        raise LmadaptError(f"the DeepSpeed config's gradient_accumulation_steps "
                           f"({plugin.deepspeed_config['gradient_accumulation_steps']}) differs from "
                           f"grad_accum={cfg.grad_accum}; set it to \"auto\"")
    accelerator.gradient_accumulation_steps = cfg.grad_accum


def _fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Honour an FSDP accelerate config on CPU processes. accelerate (1.x) gives several CPU
    processes its MULTI_CPU type and enables FSDP only for accelerator devices, so the config
    would silently run DDP; torch's FSDP itself shards over gloo on CPU, so the state is switched
    to FSDP with the plugin the config describes (`examples/accelerate/fsdp_cpu.yaml`)."""
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
    if plugin.fsdp_version != 2:
        raise LmadaptError("FSDP on CPU processes needs fsdp_version: 2 in the accelerate config (accelerate "
                           "gives FSDP1 the device cpu:0, which torch's FSDP1 refuses); see "
                           "examples/accelerate/fsdp_cpu.yaml")
    state = accelerator.state
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does on GPUs


def plan_steps(n_examples: int, cfg: TrainConfig, world: int) -> tuple[int, int, int]:
    """(steps per epoch, total optimizer steps, per-process micro-batch size)."""
    per_micro = cfg.batch_size // cfg.grad_accum
    if per_micro % world:
        raise LmadaptError(f"batch_size/grad_accum = {per_micro} is not divisible by the {world} "
                           "processes; pick a batch size that splits evenly")
    if n_examples < cfg.batch_size:
        raise LmadaptError(f"only {n_examples} training examples for batch_size {cfg.batch_size}; "
                           "lower batch_size or add data")
    steps_per_epoch = n_examples // cfg.batch_size  # the incomplete last batch is dropped
    return steps_per_epoch, max(1, math.ceil(cfg.epochs * steps_per_epoch)), per_micro // world


GROUP_SPAN = 50  # group_by_length: examples are sorted by length within spans of this many batches


def epoch_order(examples: list[Example], epoch: int, cfg: TrainConfig) -> torch.Tensor:
    """The example order of one epoch: a seeded permutation; with `group_by_length`, the
    permutation is cut into spans of GROUP_SPAN batches, each span sorted by length (longest
    first) into batches, and the batches shuffled (seeded), so a batch holds examples of similar
    length and pads little while the epoch stays random."""
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(examples), generator=gen)
    if not cfg.group_by_length:
        return order
    size = cfg.batch_size
    length = [len(ex.text) + len(ex.target) for ex in examples]  # characters: a cheap proxy for tokens
    full = len(order) - len(order) % size  # the incomplete last batch is dropped, as without grouping
    spans = [sorted(order[i:min(i + GROUP_SPAN * size, full)].tolist(), key=lambda j: -length[j])
             for i in range(0, full, GROUP_SPAN * size)]
    batches = [span[i:i + size] for span in spans for i in range(0, len(span), size)]
    shuffled = torch.randperm(len(batches), generator=gen).tolist()
    return torch.tensor([j for b in shuffled for j in batches[b]] + order[full:].tolist(), dtype=torch.long)


def _micro_batches(examples: list[Example], step: int, steps_per_epoch: int, cfg: TrainConfig,
                   rank: int, per_proc: int, orders: dict[int, torch.Tensor] | None = None) -> list[list[Example]]:
    """This process's micro-batches of global step `step` (data order seeded per epoch; `orders`
    caches each epoch's order)."""
    epoch, within = divmod(step, steps_per_epoch)
    orders = {} if orders is None else orders
    if epoch not in orders:
        orders.clear()
        orders[epoch] = epoch_order(examples, epoch, cfg)
    order = orders[epoch][within * cfg.batch_size:(within + 1) * cfg.batch_size]
    world_micro = cfg.batch_size // cfg.grad_accum  # examples per micro-batch, all processes
    out = []
    for micro in range(cfg.grad_accum):
        ids = order[micro * world_micro:(micro + 1) * world_micro][rank * per_proc:(rank + 1) * per_proc]
        out.append([examples[i] for i in ids.tolist()])
    return out


def batch_maker(tm: TaskModel, cfg: TrainConfig) -> Callable[[list[Example]], dict[str, torch.Tensor]]:
    """How the loop turns a micro-batch's examples into tensors: the objective's padded `collate`,
    or with `packing` its `collate_packed` (causal LMs; models/packing.py). An objective that
    cannot pack (an encoder, seq2seq, prompt learning, a method's own loss) pads, with a warning."""
    packed = getattr(tm, "collate_packed", None) if cfg.packing else None
    warned = False

    def collate(examples: list[Example]) -> dict[str, torch.Tensor]:
        nonlocal warned
        batch = packed(examples) if packed is not None else None
        if batch is not None:
            return batch
        if cfg.packing and not warned:
            warnings.warn("packing=true applies to a causal LM's own training loss; this run pads its "
                          "batches instead", stacklevel=2)
            warned = True
        return tm.collate(examples)

    return collate


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LmadaptError("the method left no trainable parameters; check its target modules")
    return params


def _param_groups(model: torch.nn.Module, lr: float,
                  lr_overrides: dict[int, float] | None) -> list[dict]:
    """AdamW groups: every trainable parameter at `lr`, except those whose id() is in
    `lr_overrides` (id -> lr), grouped by their own lr. The scheduler scales every group alike."""
    params = _trainable(model)
    overrides = lr_overrides or {}
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for p in params:
        groups.setdefault(overrides.get(id(p), lr), []).append(p)
    return [{"params": ps, "lr": group_lr} for group_lr, ps in groups.items()]


FUSED_DEVICES = ("cpu", "cuda")  # where torch's AdamW has a fused kernel we rely on


def adamw(groups: list[dict], lr: float, weight_decay: float = 0.0,
          accelerator: Accelerator | None = None) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel (one pass per tensor) where it applies: every parameter a
    floating-point tensor on CPU or CUDA, and no engine that swaps the parameters afterwards
    (FSDP's DTensors, DeepSpeed's own optimizer). On CPU the default per-tensor loop took 0.68 s a
    step for SmolLM2-135M's 135M weights against 0.09 s fused (2 threads; docs/train_speed.md)."""
    engine = accelerator is not None and accelerator.distributed_type in (DistributedType.FSDP,
                                                                          DistributedType.DEEPSPEED)
    fused = not engine and all(p.is_floating_point() and p.device.type in FUSED_DEVICES
                               for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing on a transformers model (peft-wrapped or not, with
    our adapters inside its layers); one line when the architecture has none."""
    base = unwrap(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise LmadaptError(f"gradient_checkpointing=true: {type(base).__name__} does not support it; "
                           "leave it off for this model")
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x (the old name warns)
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def divergence_guard(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> DivergenceGuard:
    """The loop's divergence checks (train/guard.py), watching `params` from their current values."""
    fix = fix_hint(cfg.lr, cfg.max_grad_norm)
    if cfg.precision == "bf16":
        fix += " or use precision=fp32"
    guard = DivergenceGuard(fix)
    guard.watch(params)
    return guard


def train(tm: TaskModel, examples: list[Example], cfg: TrainConfig, out_dir: Path | None = None,
          eval_fn: Callable[[int], dict] | None = None, stop_at_step: int | None = None,
          lr_overrides: dict[int, float] | None = None) -> TrainResult:
    """Train tm.model's trainable parameters on examples with tm's loss; returns the curve.

    lr_overrides maps id(parameter) to its own learning rate (e.g. a fresh head trained faster
    than a pretrained body); every other trainable parameter uses cfg.lr.

    stop_at_step ends the run early after that many steps (used to test exact resume).

    eval_fn(epoch) scores the task the method watches after each epoch (but the last, which the
    final eval scores) when cfg.eval_each_epoch. Under `epoch_scores` or with
    cfg.early_stop_patience, every epoch is scored (the last too), the best epoch's weights are
    kept, and the run stops after `early_stop_patience` epochs without improvement.
    """
    accelerator = make_accelerator(cfg)
    seed_everything(cfg.seed)
    steps_per_epoch, total_steps, per_proc = plan_steps(len(examples), cfg, accelerator.num_processes)
    groups = _param_groups(tm.model, cfg.lr, lr_overrides)
    params = [p for group in groups for p in group["params"]]
    optimizer = adamw(groups, cfg.lr, cfg.weight_decay, accelerator)
    scheduler = get_scheduler("constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule,
                              optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    if cfg.gradient_checkpointing:
        enable_checkpointing(tm.model)
    if isinstance(tm, TaskModel):
        tm.loss_chunk = cfg.loss_chunk
    collate = batch_maker(tm, cfg)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if deepspeed:
        deepspeed_settings(accelerator, cfg, per_proc)
    model, optimizer = accelerator.prepare(tm.model, optimizer)
    # The weights in training: FSDP2 replaces them with sharded DTensors (in the optimizer too).
    params = [p for group in optimizer.param_groups for p in group["params"]]
    every = list(model.parameters())  # clipping sees them all, so FSDP takes its own (sharded) path
    result, start = TrainResult(), 0
    ckpt_root = out_dir / "checkpoints" if out_dir else None
    if cfg.resume and ckpt_root and (ckpt := latest_checkpoint(ckpt_root)) is not None:
        start, result.losses, result.epoch_evals = load_checkpoint(
            ckpt, accelerator.unwrap_model(model), optimizer, scheduler)
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step",
               disable=not accelerator.is_main_process, dynamic_ncols=True)
    guard = divergence_guard(cfg, params)
    guard.before_fail = bar.close
    hook = _EPOCH_HOOK.get()
    selecting = eval_fn is not None and (hook is not None or cfg.early_stop_patience > 0)
    stopper = EarlyStop(cfg.early_stop_patience) if selecting and cfg.early_stop_patience > 0 else None
    if stopper is not None and ckpt_root is not None and start > 0:
        stopper.resume(ckpt_root, result.epoch_evals)
    model.train()
    orders: dict[int, torch.Tensor] = {}
    began = time.perf_counter()
    for step in range(start, total_steps):
        micro = _micro_batches(examples, step, steps_per_epoch, cfg, accelerator.process_index, per_proc, orders)
        step_loss = torch.zeros((), device=accelerator.device)
        for i, batch_examples in enumerate(micro):
            batch = {k: v.to(accelerator.device) for k, v in collate(batch_examples).items()}
            sync = contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                loss = tm.loss(model, batch)
                if deepspeed:  # its engine divides by grad_accum and steps at the last micro-batch
                    accelerator.sync_gradients = i == len(micro) - 1
                    accelerator.backward(loss)
                else:
                    accelerator.backward(loss / cfg.grad_accum)
            step_loss += loss.detach() / cfg.grad_accum
            result.tokens += tm.count_tokens(batch) * accelerator.num_processes
        mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
        # the pre-clipping norm; an infinite limit measures it without clipping when clipping is off
        grad_norm = accelerator.clip_grad_norm_(every, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
        guard.update(step + 1, mean_loss, None if grad_norm is None else float(grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        guard.check_weights(step + 1, params)
        result.losses.append(mean_loss)
        result.examples += cfg.batch_size
        elapsed = time.perf_counter() - began
        bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{result.tokens / max(elapsed, 1e-9):.0f}")
        bar.update(1)
        done = step + 1
        log_train_step(done, mean_loss, scheduler.get_last_lr()[0], result.tokens / max(elapsed, 1e-9))
        epoch_end = done % steps_per_epoch == 0 or done == total_steps
        if eval_fn and epoch_end and (selecting or (cfg.eval_each_epoch and done < total_steps)):
            epoch = math.ceil(done / steps_per_epoch)
            model.eval()
            result.epoch_evals.append({"epoch": epoch, **eval_fn(epoch)})
            log_epoch_eval(done, result.epoch_evals[-1])
            model.train()
            if hook is not None:
                hook(epoch, result.epoch_evals[-1]["score"])
            if stopper is not None and stopper.update(epoch, result.epoch_evals[-1]["score"],
                                                      accelerator.unwrap_model(model)):
                bar.write(f"early stop after epoch {epoch}: no better validation score for "
                          f"{cfg.early_stop_patience} epochs (best: epoch {stopper.best_epoch})")
                break
        if cfg.save_every and ckpt_root and done % cfg.save_every == 0 and accelerator.is_main_process:
            if stopper is not None:
                stopper.save(ckpt_root)
            save_checkpoint(ckpt_root, done, accelerator.unwrap_model(model), optimizer, scheduler, result.losses,
                            result.epoch_evals)
        if stop_at_step is not None and done >= stop_at_step:
            break
    bar.close()
    accelerator.wait_for_everyone()
    tm.model = accelerator.unwrap_model(model)
    if stopper is not None:
        kept = stopper.restore(tm.model)
        result.best_epoch = kept if kept is not None else (result.epoch_evals[-1]["epoch"] if result.epoch_evals else None)
    tm.model.eval()
    result.steps = len(result.losses)
    result.seconds = time.perf_counter() - began
    return result
