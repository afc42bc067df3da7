"""The request guard ``serve`` puts in front of tritonserver (builder.triton.guard), against small real upstreams: a
gRPC server that answers any method with what it received, and an HTTP server that echoes the body. Oversized
requests are refused without reaching the upstream; everything else passes unchanged, headers included."""
from __future__ import annotations

import threading
import urllib.error
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from builder.triton.guard import RequestGuard

LIMIT = 64 * 1024


class _Echo(grpc.GenericRpcHandler):
    """Answers ``<method> <n bytes> <admin header>``; ``/Fail`` answers NOT_FOUND; counts the requests it got."""

    def __init__(self):
        self.seen = 0

    def service(self, details):
        def unary(request, context):
            self.seen += 1
            if details.method.endswith("/Fail"):
                context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
            key = dict(context.invocation_metadata()).get("triton-grpc-protocol-admin-key", "-")
            return f"{details.method} {len(request)} {key}".encode()

        def stream(requests, context):
            for r in requests:
                yield f"stream {len(r)}".encode()

        if details.method.endswith("/ModelStreamInfer"):
            return grpc.stream_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(unary)


class _HttpEcho(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out = f"{self.path} {len(body)} {self.headers.get('admin-key', '-')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstreams():
    echo = _Echo()
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[echo],
                         options=[("grpc.max_receive_message_length", -1)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _HttpEcho)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield echo, f"127.0.0.1:{port}", f"127.0.0.1:{http.server_address[1]}"
    http.shutdown()
    server.stop(0)


@pytest.fixture(scope="module")
def guard(upstreams):
    _, grpc_up, http_up = upstreams
    with RequestGuard(grpc_up, http_up, max_bytes=LIMIT) as g:
        yield g


def test_grpc_passes_small_requests_with_headers_and_refuses_large_ones_unread(upstreams, guard):
    echo = upstreams[0]
    with grpc.insecure_channel(guard.grpc_url, options=[("grpc.max_send_message_length", -1)]) as ch:
        infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        got = infer(b"x" * 1000, metadata=[("triton-grpc-protocol-admin-key", "t0k")], timeout=10)
        assert got == b"/inference.GRPCInferenceService/ModelInfer 1000 t0k"
        assert infer(b"", metadata=[]).endswith(b" 0 -")  # no deadline from the caller: none upstream either
        seen = echo.seen
        with pytest.raises(grpc.RpcError) as e:
            infer(b"x" * (LIMIT + 1), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert echo.seen == seen  # never reached the server behind
        with pytest.raises(grpc.RpcError) as e:  # the upstream's own error comes back as it was
            ch.unary_unary("/inference.GRPCInferenceService/Fail")(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "no such model"
        stream = ch.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        assert list(stream(iter([b"a" * 10, b"b" * 20]), timeout=10)) == [b"stream 10", b"stream 20"]


def test_http_passes_small_requests_with_headers_and_refuses_large_ones(guard):
    req = urllib.request.Request(f"http://{guard.http_url}/v2/models/decode/infer?x=1", data=b"y" * 500,
                                 headers={"admin-key": "t0k"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == b"/v2/models/decode/infer?x=1 500 t0k"
    with urllib.request.urlopen(f"http://{guard.http_url}/v2/health/ready", timeout=10) as r:
        assert r.status == 200
    big = urllib.request.Request(f"http://{guard.http_url}/v2/models/decode/infer", data=b"y" * (LIMIT + 1))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(big, timeout=10)
    assert e.value.code == 413 and b"65,536 bytes" in e.value.read()


def test_a_taken_port_is_a_clear_error(upstreams, guard):
    with pytest.raises(OSError, match="cannot listen"):
        RequestGuard(upstreams[1], None, grpc_port=guard.grpc_port).start()
