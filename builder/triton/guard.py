"""A front for tritonserver that refuses oversized requests before the server reads them (``serve``'s default).

Triton 2.51 reads a whole request, and copies it into the Python backend's shared memory, before any model code
runs, and has no request-size limit of its own (gRPC or HTTP). A 200 MB tensor was refused by the model's own
checks, but tritonserver's memory grew by about 500 MB and never came back (docs/SERVING.md). What clients are
meant to send is small: an ensemble takes a video ID and a selection string, ``decode`` an ID and a frame list.
So ``serve`` puts this guard on the public ports and tritonserver on private ones (127.0.0.1):

- **gRPC**: a pass-through server (grpcio, messages forwarded as bytes, any method, metadata included, so the
  admin header still unlocks the restricted APIs) whose ``max_receive_message_length`` is the limit. gRPC reads a
  message's length before its body, so an oversized request is refused with ``RESOURCE_EXHAUSTED`` without being
  read, and tritonserver never sees it.
- **HTTP**: a reverse proxy (aiohttp) whose body limit answers ``413`` once a request passes it.

Responses pass unlimited (``decode`` answers frames). The metrics port is forwarded the same way, so that with
tritonserver on 127.0.0.1 a scraper elsewhere still reaches it.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from typing import Any

__all__ = ["DEFAULT_MAX_BODY_MB", "RequestGuard"]

DEFAULT_MAX_BODY_MB = 4  # 64 frame indices, an ID and a selection are under a kB; step models take more
_HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                "transfer-encoding", "upgrade", "host", "content-length"}


class RequestGuard:
    """Forward ``host:grpc_port`` to ``upstream_grpc`` and ``host:http_port`` to ``upstream_http`` (None: no HTTP),
    refusing any request over ``max_bytes``. Ports of 0 are picked free (see :attr:`grpc_port`, :attr:`http_port`).
    A context manager: start on enter, stop on exit."""

    def __init__(self, upstream_grpc: str, upstream_http: str | None, *, host: str = "127.0.0.1",
                 grpc_port: int = 0, http_port: int | None = 0, upstream_metrics: str | None = None,
                 metrics_port: int | None = 0, max_bytes: int = DEFAULT_MAX_BODY_MB * 2**20,
                 workers: int = 16) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.upstream_grpc = upstream_grpc
        self.host, self.max_bytes, self.workers = host, max_bytes, workers
        self.grpc_port = grpc_port
        # HTTP-like ports: name -> [public port, upstream host:port]
        self._http = {name: [port, up] for name, port, up in (("http", http_port, upstream_http),
                                                               ("metrics", metrics_port, upstream_metrics)) if up}
        self._grpc: Any = None
        self._channel: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http_thread: threading.Thread | None = None
        self._http_stop: asyncio.Event | None = None

    # --- gRPC ---------------------------------------------------------------------------------------------------
    def _start_grpc(self) -> None:
        import grpc

        self._channel = grpc.insecure_channel(self.upstream_grpc, options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.workers), handlers=[_GrpcForward(self._channel)],
            options=[("grpc.max_receive_message_length", self.max_bytes), ("grpc.max_send_message_length", -1),
                     ("grpc.so_reuseport", 0)])
        try:
            port = self._grpc.add_insecure_port(f"{_bind_host(self.host)}:{self.grpc_port}")
        except RuntimeError:  # grpcio's "Failed to bind": the port is taken or the address is not this host's
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {self.host}:{self.grpc_port} (in use, or not this host's address)")
        self.grpc_port = port
        self._grpc.start()

    # --- HTTP ---------------------------------------------------------------------------------------------------
    def _start_http(self) -> None:
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._http_main(ready))
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failed.append(e)
                ready.set()
            finally:
                loop.close()

        self._http_thread = threading.Thread(target=run, name="nvp-http-guard", daemon=True)
        self._http_thread.start()
        ready.wait(30)
        if failed:
            raise OSError(f"cannot listen on {self.host} (HTTP or metrics port): {failed[0]}")

    async def _http_main(self, ready: threading.Event) -> None:
        import aiohttp
        from aiohttp import web

        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)

        def forward_to(upstream: str) -> Any:
            async def forward(request: web.Request) -> web.StreamResponse:
                if request.content_length is not None and request.content_length > self.max_bytes:
                    return _too_large(self.max_bytes)  # declared too large: refused before its body is read
                try:
                    body = await request.read()  # stops at client_max_size: 413
                except web.HTTPRequestEntityTooLarge:
                    return _too_large(self.max_bytes)
                headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
                async with session.request(request.method, f"http://{upstream}{request.rel_url.raw_path_qs}",
                                           headers=headers, data=body) as r:
                    out = web.StreamResponse(status=r.status, headers={
                        k: v for k, v in r.headers.items() if k.lower() not in _HOP_HEADERS})
                    if r.content_length is not None:  # sized as tritonserver sized it, not re-chunked
                        out.content_length = r.content_length
                    await out.prepare(request)
                    async for chunk in r.content.iter_chunked(1 << 16):
                        await out.write(chunk)
                    await out.write_eof()
                    return out
            return forward

        runners = []
        try:
            for slot in self._http.values():
                app = web.Application(client_max_size=self.max_bytes)
                app.router.add_route("*", "/{tail:.*}", forward_to(slot[1]))
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, _bind_host(self.host), slot[0]).start()
                slot[0] = runner.addresses[0][1]  # the port picked when 0 was asked
            self._http_stop = asyncio.Event()
            ready.set()
            await self._http_stop.wait()
        finally:
            for runner in runners:
                await runner.cleanup()
            await session.close()

    # --- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{_client_host(self.host)}:{self.grpc_port}"

    @property
    def http_port(self) -> int | None:
        return self._http["http"][0] if "http" in self._http else None

    @property
    def metrics_port(self) -> int | None:
        return self._http["metrics"][0] if "metrics" in self._http else None

    @property
    def http_url(self) -> str | None:
        return None if self.http_port is None else f"{_client_host(self.host)}:{self.http_port}"

    @property
    def metrics_url(self) -> str | None:
        port = self.metrics_port
        return None if port is None else f"http://{_client_host(self.host)}:{port}/metrics"

    def start(self) -> RequestGuard:
        self._start_grpc()
        if self._http:
            try:
                self._start_http()
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        if self._loop is not None and self._http_stop is not None:
            self._loop.call_soon_threadsafe(self._http_stop.set)
        if self._http_thread is not None:
            self._http_thread.join(10)
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait(5)
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> RequestGuard:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _too_large(limit: int) -> Any:
    from aiohttp import web

    return web.json_response({"error": f"request body over this server's limit of {limit:,} bytes "
                                       "(serve --max-body-mb)"}, status=413)


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)


class _GrpcForward:
    """Every gRPC method forwarded as bytes (``grpc.GenericRpcHandler``); the stream method (``ModelStreamInfer``)
    as a stream. The upstream's status and message come back as they are."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def service(self, details: Any) -> Any:
        import grpc

        method = details.method
        if method.endswith("/ModelStreamInfer"):
            call = self.channel.stream_stream(method)

            def stream(requests: Any, context: Any) -> Any:
                try:
                    yield from call(requests, metadata=_metadata(context))
                except grpc.RpcError as e:
                    context.abort(e.code(), e.details() or "")
            return grpc.stream_stream_rpc_method_handler(stream)
        unary_call = self.channel.unary_unary(method)

        def unary(request: bytes, context: Any) -> bytes:
            try:
                left = context.time_remaining()  # the caller's deadline; ~9e18 s when it set none
                return unary_call(request, metadata=_metadata(context), timeout=left if left < 1e9 else None)
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "")
        return grpc.unary_unary_rpc_method_handler(unary)


def _metadata(context: Any) -> list[tuple[str, Any]]:
    """The caller's headers (the admin key among them), without the ones gRPC sets itself."""
    return [(k, v) for k, v in context.invocation_metadata() if not k.startswith((":", "grpc-")) and k != "user-agent"]
