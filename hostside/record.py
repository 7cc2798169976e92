"""``dataclass`` and ``field`` for guestprep-host's own records, without the start-up cost.

Every conversion pays the interpreter's start-up before qemu-img runs (issue 17: fixed cost
<= 50 ms). The standard ``dataclasses`` module imports ``inspect`` (~13 ms here) and compiles
``__init__``/``__repr__``/``__eq__`` source with ``exec`` for every decorated class (~1 ms
each; about 25 classes load on the convert path). This module gives the same behaviour for
what guestprep-host uses — fields from the class annotations, defaults, ``default_factory``,
``repr=False``, ``__post_init__``, ``frozen=True``, inheritance, generated methods never
overriding ones the class defines — with ordinary functions shared by all classes, so
decorating a class costs a dictionary walk. (The semantics follow the ``dataclasses``
documentation: https://docs.python.org/3.11/library/dataclasses.html.)
"""

from __future__ import annotations

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a ``frozen=True`` record (as ``dataclasses.FrozenInstanceError``)."""


class Field:
    __slots__ = ("name", "default", "default_factory", "repr")

    def __init__(self, default=_MISSING, default_factory=_MISSING, repr: bool = True):
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name, self.default, self.default_factory, self.repr = "", default, default_factory, repr


def field(*, default=_MISSING, default_factory=_MISSING, repr: bool = True):  # noqa: A002 (dataclasses' name)
    return Field(default, default_factory, repr)


def fields(obj_or_cls) -> tuple[Field, ...]:
    return obj_or_cls.__record_fields__


def _is_classvar(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _init(self, *args, **kwargs) -> None:
    cls = type(self)
    fs = cls.__record_fields__
    if len(args) > len(fs):
        raise TypeError(f"{cls.__name__}() takes {len(fs)} arguments but {len(args)} were given")
    values = {}
    for f, value in zip(fs, args):
        values[f.name] = value
    for name, value in kwargs.items():
        if name not in cls.__record_names__:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        if name in values:
            raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
        values[name] = value
    missing = []
    setter = object.__setattr__
    for f in fs:
        if f.name in values:
            value = values[f.name]
        elif f.default_factory is not _MISSING:
            value = f.default_factory()
        elif f.default is not _MISSING:
            value = f.default
        else:
            missing.append(f.name)
            continue
        setter(self, f.name, value)
    if missing:
        raise TypeError(f"{cls.__name__}() missing {len(missing)} required argument(s): "
                        + ", ".join(repr(m) for m in missing))
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _repr(self) -> str:
    cls = type(self)
    inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in cls.__record_fields__ if f.repr)
    return f"{cls.__qualname__}({inner})"


def _astuple(self) -> tuple:
    return tuple(getattr(self, f.name) for f in type(self).__record_fields__)


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _astuple(self) == _astuple(other)


def _hash(self) -> int:
    return hash(_astuple(self))


def _frozen_setattr(self, name, value):
    if name in type(self).__record_names__:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _frozen_delattr(self, name):
    if name in type(self).__record_names__:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
    object.__delattr__(self, name)


def dataclass(cls=None, /, *, frozen: bool = False):
    """``@dataclass`` or ``@dataclass(frozen=True)``: see the module's docstring."""

    def wrap(cls):
        inherited: dict[str, Field] = {}
        for base in reversed(cls.__mro__[1:]):
            for f in getattr(base, "__record_fields__", ()):
                inherited[f.name] = f
        own: dict[str, Field] = {}
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if _is_classvar(annotation):
                continue
            value = cls.__dict__.get(name, _MISSING)
            f = value if isinstance(value, Field) else Field(default=value)
            f.name = name
            if isinstance(value, Field):
                if f.default is _MISSING:
                    delattr(cls, name)        # no class attribute shadows a factory or required field
                else:
                    setattr(cls, name, f.default)
            elif isinstance(f.default, (list, dict, set)):
                raise ValueError(f"mutable default {type(f.default).__name__} for field {name} is not allowed: "
                                 "use default_factory")
            own[name] = f
        merged = {**inherited, **own}
        seen_default = False
        for f in merged.values():
            has_default = f.default is not _MISSING or f.default_factory is not _MISSING
            if seen_default and not has_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            seen_default = seen_default or has_default
        cls.__record_fields__ = tuple(merged.values())
        cls.__record_names__ = frozenset(merged)
        for name, fn in (("__init__", _init), ("__repr__", _repr), ("__eq__", _eq)):
            if name not in cls.__dict__:
                setattr(cls, name, fn)
        if frozen:
            cls.__setattr__, cls.__delattr__ = _frozen_setattr, _frozen_delattr
            if "__hash__" not in cls.__dict__:
                cls.__hash__ = _hash
        elif "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
            cls.__hash__ = None               # mutable and compared by value: unhashable, as dataclasses does
        return cls

    return wrap if cls is None else wrap(cls)
