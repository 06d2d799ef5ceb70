"""One pass of a sample batch through a task, recording for every module the shapes it saw,
the keyword arguments it was called with (masks, `is_causal`), the order of first calls and
its forward FLOPs. `tsuite inspect`'s table and its diagram are both read from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from modules.attention import MultiHeadAttention


@dataclass
class Trace:
    inputs: dict[nn.Module, tuple] = field(default_factory=dict)  # first positional input
    outputs: dict[nn.Module, tuple] = field(default_factory=dict)
    calls: dict[nn.Module, dict[str, Any]] = field(default_factory=dict)  # keyword arguments
    order: list[nn.Module] = field(default_factory=list)  # in the order they were entered
    flops: dict[nn.Module, int] = field(default_factory=dict)  # inside the module, children too
    total_flops: int = 0

    def ran(self, module: nn.Module) -> bool:
        return module in self.outputs


def trace(task: nn.Module, batch: dict[str, Tensor]) -> Trace:
    """Run `task.step(batch)` once without gradients (the first call of each module counts)."""
    result = Trace()

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if module not in result.outputs:
            first = args[0] if args else next(iter(kwargs.values()), None)
            result.inputs[module] = shape(first)
            result.outputs[module] = shape(output)
            result.calls[module] = kwargs

    def enter(module: nn.Module, args: tuple) -> None:
        if module not in result.order:
            result.order.append(module)

    hooks = [m.register_forward_hook(hook, with_kwargs=True) for m in task.modules()]
    hooks += [m.register_forward_pre_hook(enter) for m in task.modules()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            task.step(batch)
    finally:
        for handle in hooks:
            handle.remove()
    _count_flops(task, counter, result)
    return result


def _count_flops(task: nn.Module, counter: FlopCounterMode, result: Trace) -> None:
    """The counter's FLOPs per module name, resolved to the modules. It has no formula for
    PyTorch's fused CPU attention kernel: where an attention's kernel was not counted, its
    QK^T and AV are added to the attention and to every module around it."""
    counts = {k: v for k, v in counter.get_flop_counts().items() if k != "Global"}
    roots = {type(task).__name__: task}
    model = getattr(task, "model", None)
    if isinstance(model, nn.Module):
        roots[type(model).__name__] = model
    modules: dict[str, nn.Module] = {}
    for name in counts:
        root, _, path = name.partition(".")
        if root in roots:
            modules[name] = roots[root].get_submodule(path)
    per_name = {name: int(sum(ops.values())) for name, ops in counts.items()}
    result.total_flops = int(counter.get_total_flops())
    for name, module in modules.items():
        counted = any("scaled_dot_product" in str(op) for op in counts[name])
        if isinstance(module, MultiHeadAttention) and module in result.calls and not counted:
            extra = attention_kernel_flops(module, result.calls[module], result.inputs[module])
            result.total_flops += extra
            for outer in per_name:
                if name == outer or name.startswith(outer + "."):
                    per_name[outer] += extra
    result.flops = {module: per_name[name] for name, module in modules.items()}


def attention_kernel_flops(module: MultiHeadAttention, call: dict[str, Any], queries: tuple) -> int:
    """QK^T and AV of one call: 2 x batch x heads x queries x keys x (d_k + d_v)."""
    if len(queries) != 3:
        return 0
    batch, lq = queries[0], queries[1]
    memory = call.get("memory")
    lk = memory.size(1) if isinstance(memory, Tensor) else lq
    return 2 * batch * module.n_heads * lq * lk * (module.key_dim + module.value_dim)


def shape(value: Any) -> tuple:
    return tuple(value.shape) if isinstance(value, Tensor) else ()
