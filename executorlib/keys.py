"""The cache key of a call: what the call can read, and nothing else.

The key rule (documented in ``docs/cache.md``, "What makes a key")::

    key = <function name> + "_" + sha256(key_pickle(function, args, sorted kwargs))[:32]

``key_pickle`` is cloudpickle with its own rules for code, so that the key covers exactly what the
call can read:

* A function of the user's own code (a script or notebook ``__main__``, a module outside the
  standard library and site-packages, a lambda, a closure, a nested function) counts by value: its
  code with the code nested in it (bytecode, constants, names; never the file name, line numbers or
  cell ids), its qualified name, default arguments, closure values, attributes, and the values of
  the globals that its code (nested code included) *loads* (``LOAD_GLOBAL``/``LOAD_NAME``). Names
  that are only attribute names (``x.time``) or bound inside the function (``import time`` in its
  body) are not globals it loads. The values are followed transitively: a loaded global that is a
  function or class of the user's code counts by value in turn (cycles are fine), a user module
  (loaded as a global or imported inside the function) by its name and those of its attributes that
  the code names.
* A class of the user's code counts by its name, metaclass, bases and members (methods by value).
* A function, class or module of an installed package (standard library, site-packages, compiled
  built-ins) counts by its module, qualified name and the version of its distribution (no version
  for the standard library, whose bytecode already ties keys to the Python version).
* Arguments count by value; keyword arguments are sorted by name; sets are hashed in a sorted
  order, so that string hash randomisation cannot reorder them; large buffers (numpy arrays) are
  hashed in place, without a copy.
* A value that cannot be pickled (a lock, an open file) counts by its type only; the call's
  payload, pickled separately, reports it if the call really carries it.

Every Future argument is replaced by a :class:`executorlib.task.FutureRef` (its parent's key) before
hashing, so a chain of calls has stable keys too. Resources are not part of the key. In an Executor
with an ``init_function`` (block allocation), the init function is hashed with the call, since the
values it returns reach the function. Nothing per-process enters the hash (no ``id()``, no hash
order, no tracker ids), so a key is the same in every process on every path.

This is the key only: the payload that a job unpickles is plain cloudpickle
(:meth:`executorlib.store.TaskStore.pickle_call`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import re
import sys
import types
from typing import Any, Callable, Optional

import cloudpickle

__all__ = ["KEY_HASH_CHARS", "compute_key", "function_name"]

KEY_HASH_CHARS = 32

#: globals that name where the code lives, not what it does
_LOCATION_GLOBALS = frozenset({"__file__", "__cached__", "__loader__", "__spec__", "__builtins__"})
#: class members that are bookkeeping, not behaviour (``__slotnames__`` appears after the first
#: pickle of an instance, ``__firstlineno__`` is a line number)
_SKIPPED_MEMBERS = frozenset({"__dict__", "__weakref__", "__doc__", "__module__", "__slotnames__",
                              "_abc_impl", "__firstlineno__"})
_DESCRIPTOR_TYPES = (types.MemberDescriptorType, types.GetSetDescriptorType)
_STDLIB_NAMES = getattr(sys, "stdlib_module_names", frozenset())  # 3.10+; before, paths tell
_SMALL_BYTES = 1 << 16  # bytes up to this size are copied to make their identity irrelevant
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement or type(), not C code
_NATIVE_TYPES = frozenset({bytearray, pickle.PickleBuffer})
#: instructions that do nothing a user sees, or that only one of two equivalent call forms has
_DROPPED_OPS = frozenset({"NOP", "RESUME", "EXTENDED_ARG", "PUSH_NULL", "CACHE"})
_RENAMED_OPS = {"LOAD_METHOD": "LOAD_ATTR"}
_LOAD_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})


def function_name(fn: Callable) -> str:
    """A file-name-safe name for ``fn`` (``<lambda>`` becomes ``lambda``)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    name = re.sub(r"[^A-Za-z0-9_.-]", "", name) or "function"
    return name[:64]


def compute_key(fn: Callable, args: tuple, kwargs: dict, name: Optional[str] = None,
                extra: Any = None) -> str:
    """The cache key of ``fn(*args, **kwargs)``; Futures must already be FutureRefs.

    ``extra``: something else the result depends on, hashed like an argument (the
    ``init_function`` of a block allocation); ``None`` leaves the key as without it.
    """
    sink = _HashWriter()

    def hash_buffer(buffer: Any) -> bool:
        sink.hash.update(buffer.raw())
        return False  # keep the out-of-band buffer out of the stream, we hashed it already

    pickler = _KeyPickler(sink, protocol=5, buffer_callback=hash_buffer)
    if extra is None:
        pickler.dump((fn, args, sorted(kwargs.items())))
    else:
        pickler.dump((fn, args, sorted(kwargs.items()), extra))
    return f"{name or function_name(fn)}_{sink.hash.hexdigest()[:KEY_HASH_CHARS]}"


class _HashWriter:
    """File-like sink that hashes instead of storing (no copy of large arguments)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


# -- markers named in key pickles (never called: key pickles are hashed, never unpickled) ----------

def _by_name(*fields: Any) -> None:  # pragma: no cover
    """An installed function, class or module: module, qualified name, version."""


def _stable_function(*fields: Any) -> None:  # pragma: no cover
    """A function of the user's code, by value."""


def _installed_closure(*fields: Any) -> None:  # pragma: no cover
    """A function of an installed package that is not importable by name (a closure)."""


def _stable_class(*fields: Any) -> None:  # pragma: no cover
    """A class of the user's code, by value."""


def _stable_code(*fields: Any) -> None:  # pragma: no cover
    """A code object, without file name and line numbers."""


def _stable_set(*fields: Any) -> None:  # pragma: no cover
    """A set, sorted."""


def _stable_wrapper(*fields: Any) -> None:  # pragma: no cover
    """A functools.lru_cache/cache wrapper: the function it wraps."""


def _unpicklable(*fields: Any) -> None:  # pragma: no cover
    """A value that cannot be pickled: its type."""


class _ModuleView(tuple):
    """A user module as a loaded global: (its name, the attributes the code names)."""

    __slots__ = ()


# -- the pickler -------------------------------------------------------------------------------------

class _KeyPickler(cloudpickle.CloudPickler):
    """cloudpickle's reducers for builtin kinds (methods, properties, cells...), with the key
    rule for functions, classes, modules and code (see the module docstring)."""

    def persistent_id(self, obj: Any) -> Any:
        # the C pickler never calls reducer_override for sets (nor dicts, lists, tuples, str),
        # but it asks persistent_id about every object, also inside containers
        kind = type(obj)
        if kind is str:
            # a fresh bytes object each time: the pickler memoizes strings, so one string object
            # met twice would be written once, two equal strings twice; whether two equal strings
            # are one object (interning) must not change the key
            return b"s" + obj.encode("utf-8", "surrogatepass")
        if kind is bytes and len(obj) <= _SMALL_BYTES:
            return b"b" + obj
        if kind in (set, frozenset):
            return _stable_set, kind.__name__, tuple(sorted(obj, key=_sort_key))
        return None

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.FunctionType:
            return _reduce_function(obj)
        if kind is types.CodeType:
            return _reduce_code(obj)
        if issubclass(kind, type):
            return _reduce_class(obj)
        if kind is types.ModuleType:
            return _by_name, ("module", obj.__name__, _version(obj.__name__))
        if kind is functools._lru_cache_wrapper:
            return _stable_wrapper, (obj.__wrapped__,)
        if kind in _NATIVE_TYPES:
            return NotImplemented  # pickled by the C pickler itself (buffers out of band)
        reducer = self.dispatch_table.get(kind)
        try:
            reduced = reducer(obj) if reducer is not None else obj.__reduce_ex__(5)
        except (TypeError, pickle.PicklingError) as error:  # a lock, an open file...
            return _unpicklable, (kind.__module__, kind.__qualname__, type(error).__name__)
        if isinstance(reduced, str):  # a global by name (a ufunc, a builtin): with its version
            module = getattr(obj, "__module__", None) or pickle.whichmodule(obj, reduced)
            return _by_name, ("global", module, reduced, _version(module))
        return reduced


def _sort_key(item: Any) -> bytes:
    buffer = io.BytesIO()
    _KeyPickler(buffer, protocol=5).dump(item)
    return buffer.getvalue()


# -- functions ---------------------------------------------------------------------------------------

def _reduce_function(fn: types.FunctionType) -> Any:
    module = fn.__module__ or ""
    if not _module_is_user_code(module):
        if _is_importable(fn):
            if module.partition(".")[0] == "executorlib":
                return NotImplemented  # by name (the markers of this module among them)
            return _by_name, ("function", module, fn.__qualname__, _version(module))
        closure = tuple(_cell_value(c) for c in fn.__closure__ or ())
        return _installed_closure, (module, fn.__qualname__, _version(module), fn.__defaults__,
                                    fn.__kwdefaults__, closure)
    # the state (saved after the function is memoized) may refer back to it: recursion is fine
    return _stable_function, (fn.__qualname__,), _function_state(fn)


def _function_state(fn: types.FunctionType) -> tuple:
    code = fn.__code__
    globals_loaded, imports, names = _code_facts(code)
    namespace = fn.__globals__
    loaded = tuple(
        (name, _global_value(namespace[name], names, ()))
        for name in globals_loaded
        if name in namespace and name not in _LOCATION_GLOBALS
    )
    package = namespace.get("__package__") or ""
    imported = tuple(
        (name, level, _imported_module(name, level, package, names)) for name, level in imports
    )
    closure = tuple(_cell_value(c) for c in fn.__closure__ or ())
    attributes = tuple(sorted(vars(fn).items())) if vars(fn) else ()
    return code, fn.__defaults__, fn.__kwdefaults__, closure, loaded, imported, attributes


def _cell_value(cell: types.CellType) -> tuple:
    try:
        return (cell.cell_contents,)
    except ValueError:  # an empty cell: a name bound later in the enclosing function
        return ()


def _global_value(value: Any, names: frozenset, seen: tuple) -> Any:
    """A loaded global as it enters the key: a user module by the members the code names."""
    if type(value) is not types.ModuleType or not _module_is_user_code(value.__name__):
        return value
    return _module_view(value, names, seen)


def _module_view(module: types.ModuleType, names: frozenset, seen: tuple) -> _ModuleView:
    if module.__name__ in seen:
        return _ModuleView((module.__name__, ()))
    seen = (*seen, module.__name__)
    members = vars(module)
    return _ModuleView((module.__name__, tuple(
        (name, _global_value(members[name], names, seen))
        for name in sorted(names)
        if name in members and name not in _LOCATION_GLOBALS
    )))


def _imported_module(name: str, level: int, package: str, names: frozenset) -> Any:
    """A module imported inside the function: by name and version, a user module also by the
    members the code names (imported now, as the job will, if not imported yet)."""
    if level:
        from importlib.util import resolve_name

        try:
            name = resolve_name("." * level + name, package)
        except (ImportError, ValueError):
            return None
    module = sys.modules.get(name)
    if module is None:
        module = _import_user_module(name)
        if module is None:
            return _version(name)
    if not _module_is_user_code(module.__name__):
        return _version(name)
    views = [_module_view(module, names, ())]
    top = sys.modules.get(name.partition(".")[0])
    if "." in name and top is not None and _module_is_user_code(top.__name__):
        views.append(_module_view(top, names, ()))  # ``import pkg.mod`` binds ``pkg``
    return tuple(views)


def _import_user_module(name: str) -> Optional[types.ModuleType]:
    """Import ``name`` if it is the user's own code (never an installed package: importing a
    heavy library inside the function, to keep the client light, stays the function's business)."""
    import importlib
    import importlib.util

    top = name.partition(".")[0]
    if top in _STDLIB_NAMES:
        return None
    try:
        if top in sys.modules:
            if not _module_is_user_code(top):
                return None
        else:
            spec = importlib.util.find_spec(top)  # imports nothing for a top-level name
            if spec is None or not _path_is_user_code(spec.origin):
                return None
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a module that fails to import counts by name only
        return None


def _per_code(compute: Callable[[types.CodeType], Any]) -> Callable[[types.CodeType], Any]:
    """Cache ``compute(code)`` by the code object's identity (not by equality: two equal code
    objects of two modules each keep their own strings, so a key never depends on which of them
    was met first); holds up to 4096 code objects, so an id is not reused while cached."""
    cache: dict[int, tuple[types.CodeType, Any]] = {}

    @functools.wraps(compute)
    def cached(code: types.CodeType) -> Any:
        entry = cache.get(id(code))
        if entry is not None and entry[0] is code:
            return entry[1]
        value = compute(code)
        if len(cache) >= 4096:
            cache.clear()
        cache[id(code)] = (code, value)
        return value

    return cached


@_per_code
def _code_facts(code: types.CodeType) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...], frozenset]:
    """What a code object, with its nested code, can read: the names it loads as globals
    (``LOAD_GLOBAL``/``LOAD_NAME``), the modules it imports (name, relative level), and every name
    of its ``co_names`` (the attributes it may read from a module)."""
    import dis

    loaded: set[str] = set()
    imports: set[tuple[str, int]] = set()
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        consts: list[Any] = []
        for instruction in dis.get_instructions(current):
            if instruction.opname in _LOAD_OPS:
                loaded.add(instruction.argval)
            elif instruction.opname == "IMPORT_NAME":
                level = consts[-2] if len(consts) >= 2 and isinstance(consts[-2], int) else 0
                imports.add((instruction.argval, level))
            consts = consts[-1:] + [instruction.argval] if instruction.opname == "LOAD_CONST" else []
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return tuple(sorted(loaded)), tuple(sorted(imports)), frozenset(names)


def _reduce_code(code: types.CodeType) -> Any:
    return _stable_code, _code_form(code)


@functools.lru_cache(maxsize=1)
def _jump_opcodes() -> frozenset:
    import dis

    return frozenset((*dis.hasjrel, *dis.hasjabs))


@_per_code
def _code_form(code: types.CodeType) -> tuple:
    """A code object as what it does: its signature, names and instructions (with their
    arguments resolved, jumps as instruction indices), never its file name or line numbers.

    The instructions are normalised where the compiler emits two forms of the same call: CPython
    compiles ``mod.f()`` with ``LOAD_METHOD`` (or 3.12's method flag) unless the *module* imports a
    name ``mod`` at top level, then with ``PUSH_NULL`` and ``LOAD_ATTR``. An import elsewhere in
    the file must not change the key of a function that does not use it.
    """
    import dis

    instructions = [i for i in dis.get_instructions(code) if i.opname != "CACHE"]
    kept: list[Any] = []
    index_at: dict[int, int] = {}  # offset -> index of the first kept instruction from there
    for instruction in instructions:
        index_at[instruction.offset] = len(kept)
        if instruction.opname not in _DROPPED_OPS:
            kept.append(instruction)
    jumps = _jump_opcodes()
    form = []
    for instruction in kept:
        opname = _RENAMED_OPS.get(instruction.opname, instruction.opname)
        if instruction.opcode in jumps:
            argument: Any = ("->", index_at.get(instruction.argval, -1))
        elif opname == "KW_NAMES":  # 3.11's dis does not resolve it
            argument = code.co_consts[instruction.arg]
        else:
            argument = instruction.argval
        form.append((opname, argument))
    try:
        table = tuple((index_at.get(e.start, -1), index_at.get(e.end, len(kept)), index_at.get(e.target, -1),
                       e.depth, e.lasti) for e in dis._parse_exception_table(code))  # type: ignore[attr-defined]
    except AttributeError:  # an interpreter without exception tables (3.10) or another layout
        table = getattr(code, "co_exceptiontable", b"")
    return (
        code.co_name,
        getattr(code, "co_qualname", code.co_name),
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        tuple(form),
        table,
    )


# -- classes -----------------------------------------------------------------------------------------

def _reduce_class(cls: type) -> Any:
    module = getattr(cls, "__module__", None) or ""
    if not (cls.__flags__ & _HEAPTYPE) or not _module_is_user_code(module):
        return _by_name, ("class", module, cls.__qualname__, _version(module))
    members = tuple(
        (name, value)
        for name, value in sorted(vars(cls).items())
        if name not in _SKIPPED_MEMBERS and not isinstance(value, _DESCRIPTOR_TYPES)
    )
    return _stable_class, (cls.__qualname__,), (type(cls), cls.__bases__, members)


# -- user code or installed --------------------------------------------------------------------------

def _is_importable(obj: Any) -> bool:
    """True when ``obj`` can be found again by its module and qualified name."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None:
        return False
    target: Any = module
    for part in getattr(obj, "__qualname__", "").split("."):
        if part == "<locals>":
            return False
        target = getattr(target, part, None)
    return target is obj


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    """Folders holding the standard library and installed packages."""
    import sysconfig

    roots = {sysconfig.get_paths().get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


def _path_is_user_code(path: Optional[str]) -> bool:
    if not path or path in ("built-in", "frozen"):
        return False
    return not os.path.realpath(path).startswith(_installed_roots())


@functools.lru_cache(maxsize=4096)
def _module_is_user_code(module_name: str) -> bool:
    """True for the user's code: ``__main__`` (a script or a notebook), modules outside the
    standard library and site-packages, and code made at run time (no module to import it from)."""
    if module_name == "__main__":
        return True
    top = module_name.partition(".")[0]
    if top == "executorlib" or top in _STDLIB_NAMES or module_name in sys.builtin_module_names:
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return True  # e.g. the namespace of a namedtuple's __new__, code made with exec()
    return _path_is_user_code(getattr(module, "__file__", None))


@functools.lru_cache(maxsize=1024)
def _version(module_name: str) -> str:
    """The version of the distribution that holds ``module_name`` ("" for the standard library,
    executorlib itself and the user's code)."""
    top = module_name.partition(".")[0]
    if not top or top == "executorlib" or top in _STDLIB_NAMES or _module_is_user_code(top):
        return ""
    from importlib import metadata

    try:
        return metadata.version(top)
    except (metadata.PackageNotFoundError, ValueError):
        pass
    for distribution in _distributions().get(top, ()):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    version = getattr(sys.modules.get(top), "__version__", "")
    return version if isinstance(version, str) else repr(version)


@functools.lru_cache(maxsize=1)
def _distributions() -> dict:
    from importlib import metadata

    return metadata.packages_distributions()

