"""The data kodestore persists, in the TypeScript KODE SDK's JSON shape.

Every model converts losslessly: ``Model.from_dict(d).to_dict() == d`` for any valid ``d``. Optional
keys (``?:`` in the SDK's types) are omitted when ``None``; keys this version does not know are kept in
``extra`` so a newer runtime's data survives a round trip through an older store.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

JSONDict = dict[str, Any]


class ToolCallState(StrEnum):
    PENDING = "PENDING"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    APPROVED = "APPROVED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DENIED = "DENIED"
    SEALED = "SEALED"


EVENT_CHANNELS = ("progress", "control", "monitor")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class _FieldCodec:
    attr: str
    key: str
    optional: bool  # omitted from to_dict when None
    has_default: bool
    nested: type[_Model] | None
    nested_list: bool


class _Model:
    """Shared ``from_dict`` / ``to_dict`` for the dataclass models below."""

    __slots__ = ()
    # attr -> model class (or "list:" marker via _NESTED_LISTS) for nested values
    _NESTED: ClassVar[dict[str, type[_Model]]] = {}
    _NESTED_LISTS: ClassVar[dict[str, type[_Model]]] = {}
    _KEYS: ClassVar[dict[str, str]] = {}  # attrs whose JSON key is not plain camelCase
    _codecs_cache: ClassVar[dict[type, tuple[_FieldCodec, ...]]] = {}

    @classmethod
    def _codecs(cls) -> tuple[_FieldCodec, ...]:
        cached = _Model._codecs_cache.get(cls)
        if cached is not None:
            return cached
        hints = typing.get_type_hints(cls)
        codecs = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            optional = f.default is None or type(None) in typing.get_args(hints[f.name])
            has_default = not (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            nested = cls._NESTED.get(f.name) or cls._NESTED_LISTS.get(f.name)
            codecs.append(
                _FieldCodec(
                    attr=f.name,
                    key=cls._KEYS.get(f.name, _camel(f.name)),
                    optional=optional,
                    has_default=has_default,
                    nested=nested,
                    nested_list=f.name in cls._NESTED_LISTS,
                )
            )
        result = tuple(codecs)
        _Model._codecs_cache[cls] = result
        return result

    @classmethod
    def from_dict(cls, data: JSONDict) -> Self:
        """Build from the SDK's camelCase JSON shape; a missing required key raises ``ValueError``.

        The first call compiles a ``from_dict`` for the model's class (``_compile_from_dict``) and
        installs it there, as ``to_dict`` does: every load converts each row it reads, and a runtime
        that hands over dicts has each of them converted on every save."""
        return _install_from_dict(cls, data)  # type: ignore[no-any-return]

    def to_dict(self) -> JSONDict:
        """The SDK's JSON shape; ``None`` optional values are left out.

        The first call compiles a ``to_dict`` for the model's class (``_compile_to_dict``) and
        installs it there: a runtime converts several models per turn, and the generic walk over
        the fields cost about four times the compiled one."""
        return _install_to_dict(self)


def _compile_to_dict(cls: type[_Model]) -> typing.Callable[[Any], JSONDict]:
    """``to_dict`` for ``cls`` as straight-line code, the way ``dataclasses`` writes ``__init__``:
    the leading always-present fields in one dict display, optional ones tested for ``None``,
    nested models converted. Names and keys come from the class definition, never from data."""
    present: list[str] = []
    steps: list[str] = []
    for codec in cls._codecs():
        value = f"self.{codec.attr}"
        if codec.nested is None and not codec.optional:
            if steps:
                steps.append(f"out[{codec.key!r}] = {value}")
            else:
                present.append(f"{codec.key!r}: {value}")
            continue
        converted = "v"
        if codec.nested is not None:
            converted = "[m.to_dict() for m in v]" if codec.nested_list else "v.to_dict()"
        store = f"out[{codec.key!r}] = {converted}"
        if codec.optional:
            steps += [f"v = {value}", f"if v is not None:\n        {store}"]
        else:
            steps += [f"v = {value}", f"out[{codec.key!r}] = None if v is None else {converted}"]
    if "extra" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
        steps.append("if self.extra:\n        out.update(self.extra)")
    lines = [
        # a subclass inherits this function: it must compile its own, which may have more fields
        "if type(self) is not cls:",
        "    return install_own(self)",
        f"out = {{{', '.join(present)}}}",
        *steps,
        "return out",
    ]
    namespace: dict[str, Any] = {"cls": cls, "install_own": _install_to_dict}
    return _define(cls, "to_dict", "self", lines, namespace, _Model.to_dict.__doc__)


def _install_to_dict(model: _Model) -> JSONDict:
    """Compile ``to_dict`` for the model's class, install it there, and convert ``model`` with it."""
    cls = type(model)
    compiled = _compile_to_dict(cls)
    cls.to_dict = compiled  # type: ignore[method-assign,assignment]
    return compiled(model)


def _install_from_dict(cls: type[_Model], data: JSONDict) -> Any:
    """Compile ``from_dict`` for ``cls``, install it on the class, and convert ``data`` with it."""
    compiled = _compile_from_dict(cls)
    cls.from_dict = classmethod(compiled)  # type: ignore[method-assign,assignment]
    return compiled(cls, data)


def _define(
    cls: type, name: str, params: str, lines: list[str], namespace: dict[str, Any], doc: str | None
) -> typing.Callable[..., Any]:
    """The function ``name(params)`` whose body is ``lines``, named and documented as a method of
    ``cls``. The source is built from the class definition alone, never from data."""
    body = "\n    ".join(lines)
    exec(f"def {name}({params}):\n    {body}\n", namespace)  # noqa: S102
    function: typing.Callable[..., Any] = namespace[name]
    function.__qualname__ = f"{cls.__name__}.{name}"
    function.__doc__ = doc
    return function


def _compile_from_dict(cls: type[_Model]) -> typing.Callable[[Any, JSONDict], Any]:
    """``from_dict`` for ``cls`` as straight-line code: each key looked up once, a missing required
    one reported by name, nested models converted, and the unknown keys (kept in ``extra``)
    collected only when the dict holds more keys than were found."""
    name = cls.__name__
    lines = [
        "if cls is not own:",  # a subclass inherits this function: it must compile its own
        "    return install_own(cls, data)",
        "if not isinstance(data, dict):",
        f"    raise ValueError(f'{name}: expected an object, got {{type(data).__name__}}')",
        "found = 0",
        "kw = {}",
    ]
    namespace: dict[str, Any] = {"own": cls, "install_own": _install_from_dict, "MISSING": _MISSING}
    codecs = cls._codecs()
    for index, codec in enumerate(codecs):
        lines.append(f"v = data.get({codec.key!r}, MISSING)")
        if codec.has_default:
            lines.append("if v is not MISSING:")
            indent = "    "
        else:
            missing = f"{name}: missing required key {codec.key!r}"
            lines += ["if v is MISSING:", f"    raise ValueError({missing!r})"]
            indent = ""
        lines.append(f"{indent}found += 1")
        if codec.nested is not None:
            namespace[f"N{index}"] = codec.nested
            if codec.nested_list:
                convert = f"[x if isinstance(x, N{index}) else N{index}.from_dict(x) for x in v]"
                lines.append(f"{indent}if v is not None: v = {convert}")
            else:
                lines.append(f"{indent}if v is not None and not isinstance(v, N{index}):")
                lines.append(f"{indent}    v = N{index}.from_dict(v)")
        lines.append(f"{indent}kw[{codec.attr!r}] = v")
    namespace["known"] = frozenset(codec.key for codec in codecs)
    lines += [
        "if len(data) != found:",
        "    extra = {k: x for k, x in data.items() if k not in known}",
        "    if extra:",
        "        kw['extra'] = extra",
        "return cls(**kw)",
    ]
    return _define(cls, "from_dict", "cls, data", lines, namespace, _Model.from_dict.__doc__)


_MISSING = object()


@dataclass(slots=True)
class Bookmark(_Model):
    seq: int
    timestamp: int
    extra: JSONDict = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class Message(_Model):
    role: str
    content: list[JSONDict]
    metadata: JSONDict | None = None
    extra: JSONDict = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class Timeline(_Model):
    cursor: int
    bookmark: Bookmark
    event: JSONDict
    extra: JSONDict = field(default_factory=dict, repr=False)
    _NESTED: ClassVar[dict[str, type[_Model]]] = {"bookmark": Bookmark}

    @property
    def channel(self) -> str:
        return str(self.event.get("channel", ""))


@dataclass(slots=True)
class AgentInfo(_Model):
    agent_id: str
    template_id: str
    created_at: str
    lineage: list[str] = field(default_factory=list)
    config_version: str = ""
    message_count: int = 0
    last_sfp_index: int = -1
    last_bookmark: Bookmark | None = None
    breakpoint: str | None = None
    metadata: JSONDict | None = None
    extra: JSONDict = field(default_factory=dict, repr=False)
    _NESTED: ClassVar[dict[str, type[_Model]]] = {"last_bookmark": Bookmark}


@dataclass(slots=True)
class ToolCallRecord(_Model):
    id: str
    name: str
    input: Any
    state: str
    approval: JSONDict
    result: Any = None
    error: str | None = None
    is_error: bool | None = None
    started_at: int | None = None
    completed_at: int | None = None
    duration_ms: int | None = None
    created_at: int = 0
    updated_at: int = 0
    audit_trail: list[JSONDict] = field(default_factory=list)
    agent_id: str | None = None  # set on query results only
    extra: JSONDict = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class Snapshot(_Model):
    id: str
    messages: list[Message]
    last_sfp_index: int
    last_bookmark: Bookmark
    created_at: str
    metadata: JSONDict | None = None
    extra: JSONDict = field(default_factory=dict, repr=False)
    _NESTED: ClassVar[dict[str, type[_Model]]] = {"last_bookmark": Bookmark}
    _NESTED_LISTS: ClassVar[dict[str, type[_Model]]] = {"messages": Message}


@dataclass(slots=True)
class TodoSnapshot(_Model):
    todos: list[JSONDict]
    version: int
    updated_at: int
    extra: JSONDict = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class HistoryWindow(_Model):
    id: str
    messages: list[Message]
    events: list[Timeline]
    stats: JSONDict
    timestamp: int
    extra: JSONDict = field(default_factory=dict, repr=False)
    _NESTED_LISTS: ClassVar[dict[str, type[_Model]]] = {"messages": Message, "events": Timeline}


@dataclass(slots=True)
class CompressionRecord(_Model):
    id: str
    window_id: str
    config: JSONDict
    summary: str
    ratio: float
    recovered_files: list[str]
    timestamp: int
    extra: JSONDict = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class RecoveredFile(_Model):
    path: str
    content: str
    mtime: int
    timestamp: int
    extra: JSONDict = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class MediaCacheRecord(_Model):
    key: str
    provider: str
    mime_type: str
    size_bytes: int
    file_id: str | None = None
    file_uri: str | None = None
    created_at: int = 0
    extra: JSONDict = field(default_factory=dict, repr=False)


# ---- query results -------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionInfo(_Model):
    agent_id: str
    template_id: str
    created_at: str
    message_count: int
    last_sfp_index: int
    breakpoint: str | None = None
    metadata: JSONDict | None = None
    updated_at: int = 0  # epoch ms of the agent's last save


@dataclass(slots=True)
class MessageRecord(_Model):
    agent_id: str
    seq: int
    role: str
    content: list[JSONDict]
    metadata: JSONDict | None = None
    created_at: int = 0  # epoch ms when the message was first saved


@dataclass(slots=True)
class AgentStats(_Model):
    total_messages: int
    total_tool_calls: int
    total_snapshots: int
    avg_messages_per_session: float
    tool_calls_by_name: dict[str, int]
    tool_calls_by_state: dict[str, int]
    total_sessions: int = 0
    feedback_count: int = 0
    mean_rating: float | None = None


# ---- human in the loop ---------------------------------------------------------------------------


@dataclass(slots=True)
class SuspendedState(_Model):
    """A suspended run's state, readable until ``expires_at`` (epoch ms); ``created_at`` is when it
    was last saved."""

    agent_id: str
    state_id: str
    payload: JSONDict
    created_at: int
    expires_at: int


@dataclass(slots=True)
class Feedback(_Model):
    """One rating (1..5) of an agent's work; ``message_seq`` points at the rated message."""

    id: str
    agent_id: str
    rating: int
    created_at: int  # epoch ms
    comment: str | None = None
    message_seq: int | None = None
    correction: str | JSONDict | None = None
    metadata: JSONDict | None = None


# ---- ExtendedStore results -----------------------------------------------------------------------


class _Readable:
    """Lets a result be read by key too (``status.database["connected"]``), like the SDK's objects."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def to_dict(self) -> JSONDict:
        return {
            f.name: (v.to_dict() if isinstance(v, _Readable) else v)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            for v in [getattr(self, f.name)]
        }


@dataclass(frozen=True, slots=True)
class DatabaseHealth(_Readable):
    connected: bool
    latency_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FileSystemHealth(_Readable):
    writable: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StoreHealthStatus(_Readable):
    healthy: bool
    database: DatabaseHealth
    file_system: FileSystemHealth
    checked_at: int  # epoch ms


@dataclass(frozen=True, slots=True)
class ConsistencyCheckResult(_Readable):
    consistent: bool
    issues: list[str]
    checked_at: int


@dataclass(frozen=True, slots=True)
class OperationCounts(_Readable):
    saves: int
    loads: int
    queries: int
    deletes: int


@dataclass(frozen=True, slots=True)
class LatencyStats(_Readable):
    avg_latency_ms: float
    min_latency_ms: float
    max_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float


@dataclass(frozen=True, slots=True)
class StorageStats(_Readable):
    total_agents: int
    total_messages: int
    total_tool_calls: int
    db_size_bytes: int
    file_store_bytes: int


@dataclass(frozen=True, slots=True)
class StoreMetrics(_Readable):
    operations: OperationCounts
    performance: LatencyStats
    storage: StorageStats
    collected_at: int
