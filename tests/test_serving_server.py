"""The LitServe scoring server: a checkpoint from a short training run served on 127.0.0.1.

The server runs as its command does (``python -m fuxictr_ext.serving.server``) in a process of
its own, with small limits so that the overload path is quick to reach. Every client loop is
bounded in count. Skipped when the serving extra (``pip install .[serve]``: LitServe) is not installed.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litserve")

from test_serving_load import EXPID, raw_requests, scorers, trained  # noqa: E402,F401  (module fixtures)

REPO = Path(__file__).resolve().parents[1]
CLIENTS, REQUESTS_PER_CLIENT, MAX_CANDIDATES, MAX_QUEUED, MAX_BODY_BYTES, TIMEOUT_S = 6, 6, 64, 8, 1 << 20, 1.0
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(config: str, expid: str, port: int, *options: str):
    return [sys.executable, "-m", "fuxictr_ext.serving.server", "--config", config, "--expid", expid,
            "--port", str(port), *options]


def environment() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def call(port: int, path: str, method: str = "GET", body=None, headers=None):
    """(status, body bytes, response headers); ``body`` sent as given when bytes, else JSON-encoded."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    connection.request(method, path, data, headers={"Content-Type": "application/json", **(headers or {})})
    answer = connection.getresponse()
    return answer.status, answer.read(), dict(answer.getheaders())


def start_server(trained, zoo_workspace, *options: str):
    """(port, process) of the server command started with the trained checkpoint, once it answers /health."""
    port = free_port()
    process = subprocess.Popen(
        server_command(trained["config"], EXPID, port, "--checkpoint", trained["checkpoint"], *options),
        cwd=zoo_workspace, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            if call(port, "/health")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the server did not answer /health within {START_TIMEOUT_S} s")
    return port, process


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)            # the command shuts its workers down on SIGTERM
    try:
        process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="module")
def server(trained, zoo_workspace):
    port, process = start_server(trained, zoo_workspace, "--workers", "1", "--max-candidates", str(MAX_CANDIDATES),
                                 "--max-batch-size", "8", "--batch-wait-ms", "5", "--max-queued", str(MAX_QUEUED),
                                 "--max-body-mb", str(MAX_BODY_BYTES / (1 << 20)), "--timeout-s", str(TIMEOUT_S))
    yield port, process
    stop_server(process)


@pytest.fixture(scope="module")
def port(server):
    return server[0]


def worker_pids(server_pid: int):
    """The server's inference workers: the processes below it that LitServe spawned
    (``multiprocessing.spawn``), found through ``/proc/<pid>/task/*/children``."""
    pids, todo = [], [server_pid]
    while todo:
        pid = todo.pop()
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fd:
                children = [int(child) for child in fd.read().split()]
            todo += children
            for child in children:
                with open(f"/proc/{child}/cmdline", "rb") as fd:
                    if b"spawn_main" in fd.read():
                        pids.append(child)
    return pids


@pytest.fixture(scope="module")
def requests_and_expected(trained, scorers):
    request_ids = np.unique(trained["raw"]["request_id"].to_numpy())
    request_ids = np.resize(request_ids, CLIENTS * REQUESTS_PER_CLIENT)     # the test split's requests, cycled
    requests, _ = raw_requests(trained["raw"], scorers["vanilla"].encoder, request_ids)
    return requests, scorers["vanilla"].score(requests)     # offline: the model's own forward, in-process


def assert_scores(body: bytes, offline) -> None:
    scores = json.loads(body)["scores"]
    assert len(scores) == len(offline)
    assert np.abs(np.array(scores) - np.array(offline)).max() <= 1e-6


def test_health_and_info(port):
    status, body, _ = call(port, "/health")
    assert status == 200 and body.decode().strip('"') == "ok"
    status, body, _ = call(port, "/info")
    info = json.loads(body)["model"]
    assert status == 200 and info["expid"] == EXPID and info["path"] == "rank_aware"
    assert info["max_queued"] == MAX_QUEUED and info["max_body_bytes"] == MAX_BODY_BYTES


def test_concurrent_clients_get_the_offline_scores_in_batches(port, requests_and_expected):
    requests, expected = requests_and_expected
    answers = [None] * len(requests)

    def client(c):
        for i in range(c * REQUESTS_PER_CLIENT, (c + 1) * REQUESTS_PER_CLIENT):
            answers[i] = call(port, "/score", "POST", requests[i])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (status, body, _), offline in zip(answers, expected):
        assert status == 200, body
        assert_scores(body, offline)
    assert max(int(headers["x-batch-size"]) for _, _, headers in answers) > 1     # concurrent requests were batched


def test_malformed_bodies_get_json_errors_and_the_server_keeps_serving(port, requests_and_expected):
    requests, expected = requests_and_expected
    good = requests[0]
    n = len(good["candidates"]["item_id"])
    bad = {
        "missing feature": (dict(good, context={k: v for k, v in good["context"].items() if k != "user_id"}), 422),
        "unknown field": (dict(good, candidates=dict(good["candidates"], colour=["red"] * n)), 422),
        "unknown key": (dict(good, user={"id": 3}), 422),
        "zero candidates": (dict(good, candidates={k: [] for k in good["candidates"]}), 422),
        "too many candidates": (dict(good, candidates={k: v * MAX_CANDIDATES for k, v in good["candidates"].items()}),
                                413),
        "number for a string field": (dict(good, context=dict(good["context"], user_id=17)), 422),
        "list for a context field": (dict(good, context=dict(good["context"], user_id=["17"])), 422),
        "lone surrogate in the context": (dict(good, context=dict(good["context"], user_id="\ud800")), 422),
        "lone surrogate in a candidate": (dict(good, candidates=dict(good["candidates"],
                                                                     item_id=["\udfff"] * n)), 422),
        "not an object": ([good], 400),
        "not JSON": (b"{'context':", 400),
        "nested 100k levels deep": (b"[" * 100_000 + b"]" * 100_000, 400),
        "an object nested 100k levels deep": (b'{"context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        "not UTF-8 (latin-1)": (json.dumps(good, ensure_ascii=False).replace('"user_id"', '"us\u00e9r_id"')
                                .encode("latin-1"), 400),
        "empty body": (b"", 400),
    }
    for name, (body, expected_status) in bad.items():
        status, answer, headers = call(port, "/score", "POST", body)
        assert status == expected_status, (name, answer)
        assert headers["content-type"] == "application/json", name
        assert json.loads(answer)["error"], name
    assert call(port, "/score", "GET")[0] == 405
    status, answer, _ = call(port, "/score", "POST", good)
    assert status == 200
    assert_scores(answer, expected[0])


def test_huge_bodies_get_413_without_being_read(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest("POST", "/score")              # a 1 GB body announced; none of it is sent
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(1 << 30))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413 and "limit" in json.loads(answer.read())["error"]

    def chunks():                                         # no Content-Length: counted as it arrives
        yield b'{"context": "'
        for _ in range(3):
            yield b"x" * MAX_BODY_BYTES
        yield b'"}'

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/score", chunks(), headers={"Content-Type": "application/json"}, encode_chunked=True)
    answer = connection.getresponse()
    assert answer.status == 413 and "limit" in json.loads(answer.read())["error"]


def test_overload_gets_json_503_and_the_accepted_requests_their_scores(port, requests_and_expected):
    """A flood of 6 x --max-queued clients, each sending its requests back to back on one keep-alive
    connection: every answer is 200 with the offline scores or 503 with a JSON error (no 500, no
    dropped connection), and a connection that got a 503 goes on serving its next request."""
    requests, expected = requests_and_expected
    clients, per_client = 6 * MAX_QUEUED, 3
    barrier, answers = threading.Barrier(clients), [[] for _ in range(clients)]

    def client(c):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        for i in range(per_client):
            connection.request("POST", "/score", json.dumps(requests[(c + i) % len(requests)]).encode(),
                               headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            answers[c].append((answer.status, answer.read(), dict(answer.getheaders()), (c + i) % len(requests)))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [a for per_client_answers in answers for a in per_client_answers]
    assert len(flat) == clients * per_client                     # every request of every connection answered
    statuses = [status for status, _, _, _ in flat]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) >= MAX_QUEUED
    for status, body, headers, r in flat:
        if status == 503:
            assert headers["content-type"] == "application/json" and headers["retry-after"] == "1"
            assert "busy" in json.loads(body)["error"]
        else:
            assert_scores(body, expected[r])
    assert any(503 in [status for status, *_ in a[:-1]] for a in answers)    # a 503, then an answer on the same line
    assert call(port, "/score", "POST", requests[0])[0] == 200            # and it serves on


def test_a_request_queued_past_the_timeout_gets_json_504_and_the_server_serves_on(server, requests_and_expected):
    """The worker is paused (SIGSTOP) while requests queue, for twice --timeout-s: each of them has
    waited past the timeout when the worker takes it, and is answered 504 with a JSON body, not scored."""
    port, process = server
    requests, expected = requests_and_expected
    workers = worker_pids(process.pid)
    assert len(workers) == 1, workers
    answers = [None] * 4

    def client(c):
        answers[c] = call(port, "/score", "POST", requests[c])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(len(answers))]
    os.kill(workers[0], signal.SIGSTOP)
    try:
        for thread in threads:
            thread.start()
        time.sleep(2 * TIMEOUT_S)
    finally:
        os.kill(workers[0], signal.SIGCONT)
    for thread in threads:
        thread.join(60)
    for status, body, headers in answers:
        assert status == 504, body
        assert headers["content-type"] == "application/json"
        assert "timed out" in json.loads(body)["error"]
    status, body, _ = call(port, "/score", "POST", requests[0])
    assert status == 200
    assert_scores(body, expected[0])


def test_unbatched_server_scores_and_keeps_the_error_contract(trained, zoo_workspace, requests_and_expected):
    """``--max-batch-size 1``: LitServe's unbatched loop; each request scored alone, errors as JSON."""
    requests, expected = requests_and_expected
    port, process = start_server(trained, zoo_workspace, "--workers", "1", "--max-batch-size", "1")
    try:
        for request, offline in zip(requests[:3], expected[:3]):
            status, body, headers = call(port, "/score", "POST", request)
            assert status == 200 and headers["x-batch-size"] == "1", body
            assert_scores(body, offline)
        bad = dict(requests[0], context={k: v for k, v in requests[0]["context"].items() if k != "user_id"})
        for body, expected_status in ((bad, 422), (b"{'context':", 400)):
            status, answer, headers = call(port, "/score", "POST", body)
            assert status == expected_status and headers["content-type"] == "application/json", answer
            assert json.loads(answer)["error"]
    finally:
        stop_server(process)


@pytest.mark.parametrize("options, cause", [
    (("--expid", "AutoInt_demo_request"), "checkpoint"),      # an experiment that was never trained
    (("--expid", "DLRM_demo_reqest"), "no such experiment id"),
    (("--expid", EXPID, "--workers", "0"), "workers must be >= 1"),
])
def test_a_failed_start_prints_its_cause_and_exits_2(options, cause, trained, zoo_workspace):
    command = [sys.executable, "-m", "fuxictr_ext.serving.server", "--config", trained["config"],
               "--port", str(free_port()), *options]
    result = subprocess.run(command, cwd=zoo_workspace, env=environment(), capture_output=True, text=True,
                            timeout=START_TIMEOUT_S)
    assert result.returncode == 2, result.stderr
    assert cause in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("cores, workers", [({0}, 1), ({0, 1}, 1), ({0, 1, 2, 3}, 3), (set(range(16)), 15)])
def test_default_workers_leave_one_core_to_the_api_server(cores, workers, monkeypatch):
    from fuxictr_ext.serving import server
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores, raising=False)
    assert server.default_workers() == workers
    assert server.build_parser().parse_args(["--expid", EXPID]).workers is None      # main() fills it in
