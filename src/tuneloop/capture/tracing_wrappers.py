"""The four wrappers behind ``@trace``: sync and async functions, sync and async generators.

Each one starts a span, makes it current while the traced code runs, and ends it with the
result or the exception (re-raised unchanged). Generators are driven step by step: the
span is current only while the generator's own code runs, never while the consumer's code
runs between two items (a plain ``with`` around ``yield`` would leak the span into the
consumer, and reset the context variable from the wrong context). ``send``, ``throw`` and
``close`` reach the traced generator as if it were not wrapped; closing early (a consumer
that stops iterating) ends the span as ``ok`` with ``meta["closed_early"]``.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from tuneloop.capture.spans import _UNSET, Span, _current, _restore, _state
from tuneloop.capture.tracing import _Binder

__all__ = ["wrap"]


class _Items:
    """Items a traced generator yielded, kept up to ``max_items``; strings are joined."""

    __slots__ = ("items", "count", "limit")

    def __init__(self, span: Span) -> None:
        self.items: list[Any] = []
        self.count, self.limit = 0, span.config.max_items if span.capture_output else 0

    def add(self, item: Any) -> None:
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(item)

    def output(self) -> Any:
        items = self.items
        if items and all(i.__class__ is str for i in items) and self.count == len(items):
            return "".join(items)  # a token stream: the text it spelled
        if self.count > len(items):
            return [*items, f"…[+{self.count - len(items)} items]"]
        return items


def _end_generator(span: Span, items: _Items, exc: BaseException | None = None, closed: bool = False) -> None:
    try:
        if closed:
            span.metadata = {**(span.metadata or {}), "closed_early": True}
        if span.capture_output and span.output is _UNSET:
            span.output = span._snapshot(items.output())
    except Exception:
        pass
    span.end(exc)


def wrap(spec: Any, func: Callable[..., Any], name: str, binder: _Binder) -> Callable[..., Any]:
    """``func`` traced by ``spec`` (a ``trace(...)`` object) as span ``name``."""
    if inspect.isasyncgenfunction(func):
        return _async_generator(spec, func, name, binder)
    if inspect.isgeneratorfunction(func):
        return _generator(spec, func, name, binder)
    if inspect.iscoroutinefunction(func):
        return _coroutine(spec, func, name, binder)
    return _function(spec, func, name, binder)


def _function(spec: Any, func: Callable[..., Any], name: str, binder: _Binder) -> Callable[..., Any]:
    @functools.wraps(func)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if not _state.config.enabled:
            return func(*args, **kwargs)
        span = spec.begin(name, binder, args, kwargs, True)
        if span is None:
            return func(*args, **kwargs)
        token = _current.set(span)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _restore(token)
            span.end(exc)
            raise
        _restore(token)
        span.end(None, result)
        return result

    return traced


def _coroutine(spec: Any, func: Callable[..., Any], name: str, binder: _Binder) -> Callable[..., Any]:
    @functools.wraps(func)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        if not _state.config.enabled:
            return await func(*args, **kwargs)
        span = spec.begin(name, binder, args, kwargs, True)
        if span is None:
            return await func(*args, **kwargs)
        token = _current.set(span)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            _restore(token)
            span.end(exc)
            raise
        _restore(token)
        span.end(None, result)
        return result

    return traced


def _generator(spec: Any, func: Callable[..., Any], name: str, binder: _Binder) -> Callable[..., Any]:
    @functools.wraps(func)
    def traced(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        if not _state.config.enabled:
            return (yield from func(*args, **kwargs))
        span = spec.begin(name, binder, args, kwargs, False)
        if span is None:
            return (yield from func(*args, **kwargs))
        items = _Items(span)
        gen = None
        sent: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                token = _current.set(span)
                try:
                    if gen is None:
                        gen = func(*args, **kwargs)
                    if thrown is not None:
                        exc, thrown = thrown, None
                        item = gen.throw(exc)
                    else:
                        item = gen.send(sent)
                except StopIteration as stop:
                    _end_generator(span, items)
                    return stop.value
                finally:
                    _restore(token)
                items.add(item)
                try:
                    sent = yield item
                except GeneratorExit:
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    thrown, sent = exc, None
        except GeneratorExit:
            token = _current.set(span)
            try:
                if gen is not None:
                    gen.close()
            finally:
                _restore(token)
                _end_generator(span, items, closed=True)
            raise
        except BaseException as exc:
            _end_generator(span, items, exc)
            raise

    return traced


def _async_generator(spec: Any, func: Callable[..., Any], name: str, binder: _Binder) -> Callable[..., Any]:
    @functools.wraps(func)
    async def traced(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        span = spec.begin(name, binder, args, kwargs, False) if _state.config.enabled else None
        items = _Items(span) if span is not None else None
        agen = None
        sent: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                token = _current.set(span) if span is not None else None
                try:
                    if agen is None:
                        agen = func(*args, **kwargs)
                    if thrown is not None:
                        exc, thrown = thrown, None
                        item = await agen.athrow(exc)
                    else:
                        item = await agen.asend(sent)
                except StopAsyncIteration:
                    if span is not None:
                        _end_generator(span, items)  # type: ignore[arg-type]
                    return
                finally:
                    if token is not None:
                        _restore(token)
                if items is not None:
                    items.add(item)
                try:
                    sent = yield item
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    thrown, sent = exc, None
        except GeneratorExit:
            token = _current.set(span) if span is not None else None
            try:
                if agen is not None:
                    await agen.aclose()
            finally:
                if token is not None:
                    _restore(token)
                if span is not None:
                    _end_generator(span, items, closed=True)  # type: ignore[arg-type]
            raise
        except BaseException as exc:
            if span is not None:
                _end_generator(span, items, exc)  # type: ignore[arg-type]
            raise

    return traced
