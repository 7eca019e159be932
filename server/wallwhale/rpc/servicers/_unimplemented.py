"""Fills the RPCs a servicer does not implement yet with an honest UNIMPLEMENTED answer.

The generated base classes raise NotImplementedError, which would surface as INTERNAL; these
raise NotImplementedYet, which says plainly that this version of the server lacks the RPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from wallwhale.core.errors import NotImplementedYet

T = TypeVar("T", bound=type)


def _raiser(service: ServiceDescriptor, method: MethodDescriptor) -> Callable[..., Any]:
    message = f"{service.name}.{method.name} is not implemented in this version of WallWhale"

    if method.server_streaming:

        async def stream(self: object, request: object, context: object) -> AsyncIterator[Any]:
            raise NotImplementedYet(message)
            yield  # pragma: no cover - makes this an async generator like real streaming handlers

        return stream

    async def unary(self: object, request: object, context: object) -> Any:
        raise NotImplementedYet(message)

    return unary


def fill_unimplemented(service: ServiceDescriptor) -> Callable[[T], T]:
    """Class decorator: every method of `service` that neither the class nor a mixin of it defines
    (only the generated base class) answers UNIMPLEMENTED (ErrorInfo reason NOT_IMPLEMENTED)."""

    def decorate(cls: T) -> T:
        own = [klass for klass in cls.__mro__ if not klass.__module__.endswith("_pb2_grpc")]
        for method in service.methods:
            if not any(method.name in vars(klass) for klass in own):
                setattr(cls, method.name, _raiser(service, method))
        return cls

    return decorate
