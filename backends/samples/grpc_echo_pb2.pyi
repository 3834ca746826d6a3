from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorSpec(_message.Message):
    __slots__ = ("code", "message", "trailers", "after")
    class TrailersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    trailers: _containers.ScalarMap[str, str]
    after: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., trailers: _Optional[_Mapping[str, str]] = ..., after: _Optional[int] = ...) -> None: ...

class EchoRequest(_message.Message):
    __slots__ = ("message", "repeat", "delay_s", "response_size", "payload", "error")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    DELAY_S_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    message: str
    repeat: int
    delay_s: float
    response_size: int
    payload: bytes
    error: ErrorSpec
    def __init__(self, message: _Optional[str] = ..., repeat: _Optional[int] = ..., delay_s: _Optional[float] = ..., response_size: _Optional[int] = ..., payload: _Optional[bytes] = ..., error: _Optional[_Union[ErrorSpec, _Mapping]] = ...) -> None: ...

class EchoReply(_message.Message):
    __slots__ = ("message", "index", "payload", "metadata", "impl")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMPL_FIELD_NUMBER: _ClassVar[int]
    message: str
    index: int
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    impl: str
    def __init__(self, message: _Optional[str] = ..., index: _Optional[int] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., impl: _Optional[str] = ...) -> None: ...

class EchoSummary(_message.Message):
    __slots__ = ("count", "total_bytes", "messages", "impl")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    IMPL_FIELD_NUMBER: _ClassVar[int]
    count: int
    total_bytes: int
    messages: _containers.RepeatedScalarFieldContainer[str]
    impl: str
    def __init__(self, count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., messages: _Optional[_Iterable[str]] = ..., impl: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("started", "completed", "cancelled", "active")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    started: int
    completed: int
    cancelled: int
    active: int
    def __init__(self, started: _Optional[int] = ..., completed: _Optional[int] = ..., cancelled: _Optional[int] = ..., active: _Optional[int] = ...) -> None: ...
