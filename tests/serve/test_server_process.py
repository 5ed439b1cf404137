"""`seqlab serve` as a process: it starts, answers on 127.0.0.1 and stops on SIGTERM."""

import signal
import socket
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra (httpx) is not installed")


@pytest.mark.slow
def test_serve_command_answers_and_stops(served_runs):
    from seqlab.train.run import predict_run

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = "import sys; from seqlab.cli import main; sys.exit(main())"
    server = subprocess.Popen(
        [sys.executable, "-c", command, "serve", f"sentiment={served_runs['classify']}",
         "--port", str(port), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/predict",
                           json={"inputs": ["the film was good"]})
        assert reply.json() == {"model": "sentiment",
                                "outputs": predict_run(served_runs["classify"], ["the film was good"])}
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out and "sentiment (classify, run)" in out
    assert "Traceback" not in err
