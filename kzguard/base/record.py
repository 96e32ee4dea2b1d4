"""Immutable value records: the subset of frozen dataclasses kzguard uses, without code generation.

``@dataclass`` compiles several methods per class when the module is imported, and importing
``dataclasses`` pulls in ``inspect`` (with ``ast``, ``dis`` and ``tokenize``). The package
managers run kzguard on a budget of a few tens of milliseconds, where that was a fifth of the
time, so facts and verdicts are :class:`Record` subclasses instead::

    class Reason(Record):
        code: str
        message: str
        details: dict = Factory(dict)
        _uncompared = frozenset({"details"})

Fields are the annotated names not starting with ``_``, in order (base classes first); a class
attribute of the same name is the default (:class:`Factory` for a fresh mutable one). Records
are immutable, compare and hash by type and compared fields, and have ``_replace`` and
``_asdict`` like named tuples.
"""

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar


class Factory:
    """A default made fresh for each record, like ``field(default_factory=...)``."""

    __slots__ = ("make",)

    def __init__(self, make: "Callable[[], Any]"):
        self.make = make


class Record:
    """Base class of kzguard's immutable value objects."""

    _fields: "ClassVar[tuple[str, ...]]" = ()
    _defaults: "ClassVar[dict[str, Any]]" = {}  # noqa: RUF012 - a ClassVar (quoted)
    _uncompared: "ClassVar[frozenset[str]]" = frozenset()

    def __init_subclass__(cls, **kwargs: "Any") -> None:
        super().__init_subclass__(**kwargs)
        fields: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, kind in vars(klass).get("__annotations__", {}).items():
                if name.startswith("_") or str(kind).startswith("ClassVar") or name in fields:
                    continue
                fields.append(name)
        defaults = {name: getattr(cls, name) for name in fields if hasattr(cls, name)}
        for before, name in zip(fields, fields[1:]):
            if before in defaults and name not in defaults:
                raise TypeError(f"{cls.__name__}: field {name!r} follows a default, needs one")
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args: "Any", **kwargs: "Any") -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes {len(fields)} fields, got {len(args)}")
        values = dict(zip(fields, args))
        for name, value in kwargs.items():
            if name not in fields or name in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated field {name!r}")
            values[name] = value
        for name in fields:
            if name not in values:
                if name not in self._defaults:
                    raise TypeError(f"{type(self).__name__}: missing field {name!r}")
                default = self._defaults[name]
                values[name] = default.make() if isinstance(default, Factory) else default
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: "Any") -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _key(self) -> "tuple[Any, ...]":
        return tuple(self.__dict__[n] for n in self._fields if n not in self._uncompared)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={self.__dict__[n]!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"

    def _replace(self, **changes: "Any") -> "Any":
        return type(self)(**{**self._asdict(), **changes})

    def _asdict(self) -> "dict[str, Any]":
        return {n: self.__dict__[n] for n in self._fields}
