"""A blocking SSE client for scripts without an event loop.

The same :class:`~sse_fast.eventsource.EventSourceMachine` as the async
:class:`~sse_fast.client.Client` decides everything; this module only reads a
plain ``httpx.Client`` stream, calls listeners and waits.  :meth:`SyncClient.close`
may be called from any thread (or a callback): it shuts the socket down so a
read blocked in another thread returns at once.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping
from types import TracebackType

import httpx

from ._core import ServerSentEvent
from .base_client import (
    CONNECTION_ERRORS,
    BaseClient,
    SyncTokenProvider,
    Verify,
    checked_token,
    connection_error,
    request_headers,
    token_failed,
)
from .errors import ClientStoppedError
from .eventsource import ERROR_BODY_LIMIT, ERROR_BODY_SECONDS, Decision, EventCallback, ListenerCall, Stop
from .reconnect import DEFAULT_MAX_EVENT_SIZE

__all__ = ["SyncClient"]


class SyncClient(BaseClient):
    """Iterate (``for event in SyncClient(url)``) or register callbacks and :meth:`run`.

    Arguments and reconnect behaviour are those of :class:`~sse_fast.client.Client`;
    callbacks and the token provider must be plain functions.  Iteration ends quietly after :meth:`close`
    or a 204 and raises the :class:`~sse_fast.errors.ClientStoppedError` otherwise.
    A client runs once: iterate it or run it, not both, and not twice.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        token: str | SyncTokenProvider | None = None,
        last_event_id: str = "",
        retry: float = 3.0,
        max_retry: float = 30.0,
        max_attempts: int | None = None,
        timeout: float | None = 10.0,
        read_timeout: float | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        http_client: httpx.Client | None = None,
        verify: Verify = True,
    ) -> None:
        super().__init__(
            url,
            headers=headers,
            last_event_id=last_event_id,
            retry=retry,
            max_retry=max_retry,
            max_attempts=max_attempts,
            timeout=timeout,
            read_timeout=read_timeout,
            max_event_size=max_event_size,
            verify=verify,
            token=token,
        )
        if inspect.iscoroutinefunction(token):
            raise TypeError("token: SyncClient needs a plain function; sse_fast.Client takes async ones")
        self._http = http_client
        self._owns_http = http_client is None
        self._token = token
        self._closing = threading.Event()  # wakes a reconnect wait; the machine knows it was closed
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._started = False

    def on(self, event_type: str, callback: EventCallback) -> EventCallback:
        """As :meth:`Client.on`, but coroutine functions are refused: nothing would await them."""
        if inspect.iscoroutinefunction(callback):
            raise TypeError("SyncClient callbacks must be plain functions; sse_fast.Client takes async ones")
        return super().on(event_type, callback)

    def run(self) -> None:
        """Dispatch events to the callbacks until the client stops; raise why, unless closed or 204."""
        for _ in self:
            pass

    #: Same as :meth:`run`: it already runs until the client stops for good.
    run_forever = run

    def close(self) -> None:
        """Stop for good, from any thread: wakes a blocked read and a reconnect wait."""
        self._machine.close()
        self._closing.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown_socket(response)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[ServerSentEvent]:
        if self._started:
            raise ClientStoppedError("a SyncClient runs once; create a new one")
        self._started = True
        return self._events()

    # -- the loop -----------------------------------------------------------

    def _events(self) -> Iterator[ServerSentEvent]:
        """Connect, and again after each connection for as long as the machine says; yield every event."""
        try:
            while not self._closing.is_set():
                decision = yield from self._connect_once()
                self._call(self._machine.decision_calls(decision))
                if isinstance(decision, Stop):
                    break
                self._closing.wait(decision.delay)
        finally:
            error = self._machine.finish()
            self._closing.set()
            if self._owns_http and self._http is not None:
                self._http.close()
                self._http = None
        if error is not None:
            raise error

    def _connect_once(self) -> Generator[ServerSentEvent, None, Decision]:
        """One connection, yielding its events; returns what the machine decided next."""
        machine = self._machine
        sent = machine.begin_attempt()
        try:
            token = self._fresh_token()
        except Exception as exc:
            return machine.connection_closed(token_failed(exc))
        if self._http is None:
            self._http = httpx.Client(verify=self._verify)
        try:
            with self._http.stream(
                "GET",
                self.url,
                headers=request_headers(sent, token),
                timeout=self._timeout,
                follow_redirects=True,
            ) as response:
                with self._lock:
                    self._response = response  # for close() from another thread
                try:
                    yield from self._read(response)
                finally:
                    with self._lock:
                        self._response = None
        except CONNECTION_ERRORS as exc:
            return machine.connection_closed(connection_error(exc))
        return machine.connection_closed()

    def _fresh_token(self) -> str | None:
        """The token for this attempt: the string given, or the provider's answer now."""
        token = self._token
        if token is None or isinstance(token, str):
            return token
        return checked_token(token())

    def _read(self, response: httpx.Response) -> Iterator[ServerSentEvent]:
        machine = self._machine
        if machine.closed_by_caller:  # close() came before the response was registered
            return
        body = _read_error_body(response) if response.status_code != 200 else b""
        if not machine.receive_response(response.status_code, response.headers, body):
            return
        self._call(machine.open_calls())
        for chunk in response.iter_bytes():
            for event in machine.receive_data(chunk):
                self._call(machine.event_calls(event))
                yield event
                if machine.closed_by_caller:
                    return
            if machine.should_drop:
                return

    def _call(self, calls: Iterable[ListenerCall]) -> None:
        """Call listeners in order; a failing one is logged."""
        for call in calls:
            try:
                call.callback(*call.args)
            except Exception:
                call.log_failure()


def _read_error_body(response: httpx.Response) -> bytes:
    """The start of an error body, for the message; a server that never ends it gets cut off."""
    body = b""
    timer = threading.Timer(ERROR_BODY_SECONDS, _shutdown_socket, (response,))
    timer.daemon = True
    timer.start()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    finally:
        timer.cancel()
    return body


def _shutdown_socket(response: httpx.Response) -> None:
    """Wake a thread blocked reading this response: closing the fd alone does not, shutdown does."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
