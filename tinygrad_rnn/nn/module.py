"""`Parameter`, `Module` and `ModuleList`: PyTorch's bookkeeping for learnable tensors.

A Module finds its parameters by watching attribute assignment: `self.weight = Parameter(...)`
records the name, `self.cell = LSTMCell(...)` records a child. The dotted paths through that
tree ("cell.weight_ih") are the `state_dict` keys, so a model built with the same attribute
names as its PyTorch twin loads the twin's weights.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as learnable; it requires grad unless told otherwise.

    Ops on a Parameter return plain Tensors, so only the leaves a user made are Parameters.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        super().__init__(np.empty(0, np.float32) if data is None else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer: override `forward`; assign Parameters and Modules in `__init__`."""

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these two dicts to exist already
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(f"cannot assign {type(value).__name__} '{name}' before "
                                     f"Module.__init__() call")
        else:
            modules = self._modules
            if isinstance(value, Parameter):
                modules.pop(name, None)
                params[name] = value  # re-assignment keeps the key's place in state_dict
                if value.name is None:
                    value.name = name  # error messages can then say which weight they mean
            elif isinstance(value, Module):
                params.pop(name, None)
                modules[name] = value
            elif name in params:
                if value is not None:
                    # a plain Tensor here is nearly always a bug: it would silently stop training
                    raise TypeError(f"cannot assign {type(value).__name__} as parameter '{name}' "
                                    f"(Parameter or None expected)")
                del params[name]
            else:
                modules.pop(name, None)
        # kept in __dict__ too, so reading `self.weight` in a hot loop is a plain attribute lookup
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        setattr(self, name, param)

    def add_module(self, name: str, module: Module | None) -> None:
        setattr(self, name, module)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ the tree
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(dotted name, Parameter) pairs; a parameter shared by two modules is listed once."""
        seen = set()
        tree = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for path, mod in tree:
            for name, p in mod._parameters.items():
                if remove_duplicate:
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                yield (f"{path}.{name}" if path else name), p

    def parameters(self, recurse: bool = True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def apply(self, fn) -> Module:
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and dtypes
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def to(self, dtype) -> Module:
        """Convert every floating parameter in place (the Parameter objects stay the same, so
        do it before building the optimizer, whose state arrays keep their dtype)."""
        dtype = np.dtype(dtype)
        for p in self.parameters():
            if p.data.dtype.kind == "f" and p.data.dtype != dtype:
                p.data = p.data.astype(dtype)
                if p.grad is not None:
                    p.grad.data = p.grad.data.astype(dtype)
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """{dotted name: numpy copy}: a snapshot, so training on does not change a saved dict.
        Shared parameters appear under every name, as in PyTorch."""
        return {name: p.data.copy() for name, p in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state_dict: dict, strict: bool = True):
        """Copy arrays (or Tensors, or anything `np.asarray` reads) into the parameters in place.

        Every problem is collected first and reported in one error, and nothing is written
        unless all checks pass: missing and unexpected keys (when `strict`), shape and dtype
        mismatches (always). Returns (missing_keys, unexpected_keys) like PyTorch.
        """
        own = dict(self.named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors, values = [], {}
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        for name, p in own.items():
            if name not in state_dict:
                continue
            v = state_dict[name]
            v = v.data if isinstance(v, Tensor) else np.asarray(v)
            if v.shape != p.shape:
                errors.append(f"size mismatch for {name}: copying a param with shape {v.shape} from "
                              f"checkpoint, the shape in current model is {p.shape}.")
            elif v.dtype != p.dtype:
                errors.append(f"dtype mismatch for {name}: checkpoint has {v.dtype}, the model has "
                              f"{p.dtype} (convert with .float()/.double() or astype first).")
            else:
                values[name] = v
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for name, v in values.items():
            np.copyto(own[name].data, v)  # in place: optimizers keep pointing at the same arrays
            own[name]._mark_modified()
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        lines = extra.split("\n") if extra else []
        lines += [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules whose parameters the parent sees (a plain list would hide them)."""

    def __init__(self, modules=None):
        super().__init__()
        self.extend(modules or ())

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, index):
        items = list(self._modules.values())
        return ModuleList(items[index]) if isinstance(index, slice) else items[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
