"""The compiled Hessian product saved for later processes: compiled ahead of time, then loaded.

A process that compiles the product (``products.compiled_product``) has Dynamo trace it again
even when Inductor's on-disk caches hold the compiled code (on an H200 a new process' first
ResNet-18 analysis spent about 8 s there). PyTorch's ahead-of-time compilation
(``torch.compile(..., fullgraph=True).aot_compile(example_inputs)``, experimental; switched on
by ``torch._dynamo.config.enable_aot_compile``, off by default in torch 2.11) packages the
traced and compiled product; ``SavedProduct`` saves it under ``locations.cache_root() / SAVED``,
one file per key, and a later process loads it instead of tracing (H200, ResNet-18: a later
process' first analysis 29.1 s with the file, ViT patch 4 22.5 s; 36.1 s when the ResNet-18's
product was traced again, an earlier round without cuDNN's autotuner in that analysis).

The key, like ``auto``'s saved choices: the GPU's name, the torch, CUDA and cuDNN versions,
the product's own key (model structure, tensor names, compile mode, autocast, TF32) and its
inputs' shapes, strides, dtypes and devices. The file is named by the part of the key that
stays the same between processes and holds the whole key, so a key whose structure differs
(an attribute whose repr names an address) only replaces its file. The guards torch cannot
serialize (object identities: the private model copy the product closes over, its functions)
are dropped: the key stands for them. The loaded function still checks the rest (its inputs'
shapes, strides and dtypes, grad mode).

The folder is kept to ``MAX_BYTES`` (a file is tens of MB: ResNet-18 64 MB, ViT patch 4 72 MB,
one per architecture, input shape, GPU model and torch version): after each save the least
recently used files go first (a load refreshes its file's time), never the one just written.

Whatever fails (a torch without the feature, a product it cannot serialize, an unreadable or
stale file) warns and falls back to ``torch.compile``: the same product, traced again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch._guards import CompileContext, TracingContext, compile_context, tracing
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_leaves

from ...locations import cache_root
from ...store.atomic import atomic_path

SAVED = "hvp-compiled"  # the folder under locations.cache_root()
FORMAT = 1              # part of the key: a new format compiles again
DEVICES = ("cuda",)     # where compiled products are saved and loaded (tests: the CPU too)
MAX_BYTES = 2 * 2**30   # the folder's size kept after a save (module docstring)
# Guards on object identities, which torch cannot serialize (its own list in later versions).
UNSERIALIZABLE = ("DICT_VERSION", "NN_MODULE", "ID_MATCH", "FUNCTION_MATCH", "CLASS_MATCH",
                  "MODULE_MATCH", "CLOSURE_MATCH", "WEAKREF_ALIVE")


def available() -> bool:
    """Whether this torch has ahead-of-time compilation and its loader."""
    return (hasattr(torch._dynamo.config, "enable_aot_compile")
            and hasattr(torch.compiler, "load_compiled_function"))


def keep_guard(entries) -> list[bool]:
    """The guard filter: no guard on a global or on an object's identity, nor one built on
    such a guard (torch 2.11 checks the keys of pytree's registry with DICT_VERSION)."""
    return [not (g.is_global or g.guard_type in UNSERIALIZABLE
                 or set(getattr(g, "derived_guard_types", ())) & set(UNSERIALIZABLE))
            for g in entries]


def signature(args) -> tuple:
    """What the compiled code is specialised on: each tensor's shape, strides, dtype, device
    and ``requires_grad`` (other values themselves)."""
    return tuple((tuple(t.shape), t.stride(), str(t.dtype), str(t.device), t.requires_grad)
                 if isinstance(t, Tensor) else repr(t) for t in tree_leaves(args))


def environment(device: torch.device) -> tuple:
    """The GPU's name and the versions whose kernels a compiled product holds."""
    cuda = device.type == "cuda"
    return (FORMAT, torch.cuda.get_device_name(device) if cuda else device.type,
            torch.__version__, torch.version.cuda,
            torch.backends.cudnn.version() if cuda else None)


def saved_path(stable: str) -> Path:
    return cache_root() / SAVED / f"{hashlib.sha256(stable.encode()).hexdigest()[:24]}.bin"


def forget() -> None:
    """Delete every saved compiled product (they are compiled and saved again when used)."""
    prune(limit=0)


def load_function(file, f_globals: dict | None, external: dict):
    """``torch.compiler.load_compiled_function`` of ``file`` (a binary file object) as this
    torch needs it: torch 2.11's loader of Inductor's code asks for the tracing context its
    compilation had ("TracingContext.get() must be called within an ongoing trace"), so it
    gets a fresh one."""
    with compile_context(CompileContext(None)), tracing(TracingContext(FakeTensorMode())):
        return torch.compiler.load_compiled_function(file, f_globals=f_globals,
                                                     external_data=external)


def prune(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Delete the least recently used saved products (oldest modification time first: a load
    refreshes it) until the folder holds at most ``limit`` bytes (default ``MAX_BYTES``);
    ``keep`` is never deleted; files other processes delete meanwhile, or that cannot be
    deleted, are skipped. The paths deleted."""
    limit = MAX_BYTES if limit is None else limit
    files = []
    for path in (cache_root() / SAVED).glob("*.bin"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        files.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total <= limit:
            break
        if keep is not None and path == keep:
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a file this user may not delete: the others still go
            continue
        total -= size
        deleted.append(path)
    return deleted


class SavedProduct:
    """``fn`` for each input signature: loaded from its saved file, else compiled ahead of time
    and saved, else ``fallback`` (``torch.compile`` of the same function). ``stable`` and
    ``detail`` are the product's key, the part that stays the same between processes and the
    rest; ``external`` names the objects ``fn`` closes over that are given again at loading
    (the model copy and loss it traces); ``compile_args`` are ``torch.compile``'s."""

    def __init__(self, fn, fallback, stable: tuple, detail: tuple, external: dict,
                 compile_args: dict):
        self.fn, self.fallback = fn, fallback
        self.stable, self.detail, self.external = stable, detail, external
        self.compile_args = compile_args
        self._by_signature: dict[tuple, object] = {}
        self.loaded = self.saved = 0  # signatures loaded from files / compiled and saved

    def __call__(self, *args):
        sig = signature(args)
        fn = self._by_signature.get(sig)
        if fn is None:
            fn = self._by_signature[sig] = self._prepare(args, sig)
        if fn is self.fallback:
            return fn(*args)
        try:
            return fn(*args)
        except RuntimeError as err:  # a guard of the saved code fails: never a wrong product
            if not str(err).startswith("GuardManager check failed"):
                raise  # (the operator would take any other error for a missing forward rule)
            warnings.warn(f"the saved compiled Hessian product does not fit these inputs "
                          f"({str(err)[:200]}); compiling it in this process", stacklevel=2)
            self._by_signature[sig] = self.fallback
            return self.fallback(*args)

    def _prepare(self, args, sig: tuple):
        tensors = [t for t in tree_leaves(args) if isinstance(t, Tensor)]
        device = tensors[0].device if tensors else torch.device("cpu")
        if device.type not in DEVICES or not available():
            return self.fallback
        stable = repr((environment(device), self.stable, sig))
        full = repr((stable, self.detail))
        path = saved_path(stable)
        try:
            loaded = self._load(path, full)
        except Exception as err:  # noqa: BLE001 - experimental: any failure compiles again
            warnings.warn(f"ignoring the saved compiled Hessian product {path} "
                          f"({type(err).__name__}: {str(err)[:200]}); compiling it again",
                          stacklevel=3)
            loaded = None
        if loaded is not None:
            self.loaded += 1
            return loaded
        try:
            compiled = self._compile(args)
        except Exception as err:  # noqa: BLE001 - experimental: torch.compile as before
            warnings.warn(f"the Hessian product could not be compiled ahead of time "
                          f"({type(err).__name__}: {str(err)[:200]}); compiling it in this "
                          "process only", stacklevel=3)
            return self.fallback
        self._save(compiled, path, full)
        return compiled

    def _load(self, path: Path, full: str):
        """The compiled product of the file when its key is ``full`` (None: no such file)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        head, _, body = data.partition(b"\n")
        if json.loads(head)["key"] != full:
            return None
        loaded = load_function(io.BytesIO(body), self.fn.__globals__, self.external)
        try:
            os.utime(path)  # recently used: kept by prune()
        except OSError:
            pass  # a read-only cache: the product is loaded all the same
        return loaded

    def _compile(self, args):
        with torch._dynamo.config.patch(enable_aot_compile=True):
            compiled = torch.compile(self.fn, fullgraph=True, dynamic=False,
                                     **self.compile_args)
            return compiled.aot_compile((args, {}))

    def _save(self, compiled, path: Path, full: str) -> None:
        """Write the file (its key, a line, then torch's bytes); one that cannot be written
        only warns: this process has its compiled product."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                compiled.save_compiled_function(str(tmp), external_data=self.external)
                body = tmp.read_bytes()
                tmp.write_bytes(json.dumps({"key": full}).encode() + b"\n" + body)
            self.saved += 1
            prune(keep=path)
        except Exception as err:  # noqa: BLE001 - experimental: the product is compiled anyway
            warnings.warn(f"could not save the compiled Hessian product to {path} "
                          f"({type(err).__name__}: {str(err)[:200]})", stacklevel=4)
