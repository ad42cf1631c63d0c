"""A callable that pickles itself with cloudpickle (by value for closures and lambdas)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import cloudpickle


class CloudWrapper:
    def __init__(
        self,
        fn: Callable[..., Any] | None,
        pickled_fn: bytes | None = None,
        cache: bool = True,
        protocol: int = cloudpickle.DEFAULT_PROTOCOL,
    ) -> None:
        if fn is None:
            if pickled_fn is None:
                raise ValueError("Pass at least one of `fn` and `pickled_fn`")
            fn = cloudpickle.loads(pickled_fn)
        assert callable(fn)
        if pickled_fn is not None and not cache:
            pickled_fn = None
        if inspect.isasyncgen(fn):
            raise TypeError("async functions not supported")
        self.fn = fn
        self.pickled_fn = pickled_fn
        self.cache = cache
        self.protocol = protocol
        self.__doc__ = f"CloudWrapper for {self.fn!r}. Original doc:\n\n{self.fn.__doc__}"
        if hasattr(self.fn, "__name__"):
            self.__name__ = self.fn.__name__
        try:
            self.__signature__ = inspect.signature(self.fn)
        except (ValueError, TypeError):
            pass  # builtins may have no signature

    def is_generator_function(self) -> bool:
        return inspect.isgeneratorfunction(self.fn)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}({self.fn!r})>"

    def _get_pickled_fn(self) -> bytes:
        if self.pickled_fn is not None:
            return self.pickled_fn
        pickled: bytes = cloudpickle.dumps(self.fn, protocol=self.protocol)
        if self.cache:
            # One function submitted as many tasks is pickled once.
            self.pickled_fn = pickled
        return pickled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        logging.debug(f"Running function {self.fn} using args {args} and kwargs {kwargs}")
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (None, self._get_pickled_fn(), self.cache, self.protocol))
