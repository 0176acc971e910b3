"""The Ray Serve scoring server: a checkpoint from a short training run served on 127.0.0.1.

Skipped when the serving extra (``pip install .[serve]``: Ray Serve, FastAPI) is not installed.
"""

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")

from fuxictr_ext.serving import server  # noqa: E402
from test_serving_load import EXPID, raw_requests, scorers, trained  # noqa: E402,F401  (module fixtures)

CLIENTS, REQUESTS_PER_CLIENT, MAX_CANDIDATES = 6, 8, 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, method: str = "GET", body=None):
    """(status, decoded JSON answer); ``body`` is sent as given when a str, else JSON-encoded."""
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def url(trained, zoo_workspace):
    port = free_port()
    server.start(server.scoring_app(trained["config"], EXPID, trained["checkpoint"], max_candidates=MAX_CANDIDATES,
                                    max_batch_size=8, batch_wait_ms=5, workdir=str(zoo_workspace)),
                 port=port, num_cpus=2)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def requests_and_expected(trained, scorers):
    request_ids = np.unique(trained["raw"]["request_id"].to_numpy())
    request_ids = np.resize(request_ids, CLIENTS * REQUESTS_PER_CLIENT)     # the test split's requests, cycled
    requests, _ = raw_requests(trained["raw"], scorers["vanilla"].encoder, request_ids)
    return requests, scorers["vanilla"].score(requests)     # offline: the model's own forward, in-process


def test_health(url):
    status, health = call(url + "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["expid"] == EXPID and health["path"] == "rank_aware"
    assert "user_id" in health["context_fields"] and "item_id" in health["target_fields"]


def test_concurrent_clients_get_the_offline_scores(url, requests_and_expected):
    requests, expected = requests_and_expected

    def client(c):
        return [call(url + "/score", "POST", requests[c * REQUESTS_PER_CLIENT + i]) for i in range(REQUESTS_PER_CLIENT)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [answer for per_client in pool.map(client, range(CLIENTS)) for answer in per_client]
    assert len(answers) == len(requests)
    for (status, body), offline in zip(answers, expected):
        assert status == 200, body
        assert len(body["scores"]) == len(offline)
        assert np.abs(np.array(body["scores"]) - np.array(offline)).max() <= 1e-6
    status, health = call(url + "/health")
    assert health["requests"] >= len(requests) and health["largest_batch"] > 1     # concurrent requests were batched


def test_bad_requests_get_4xx_and_the_server_keeps_serving(url, requests_and_expected):
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
        "not an object": ([good], 422),
        "not JSON": ("{'context':", 400),
    }
    for name, (body, expected_status) in bad.items():
        status, answer = call(url + "/score", "POST", body)
        assert status == expected_status, (name, answer)
        assert answer["error"], name
    assert call(url + "/score", "GET")[0] == 405
    status, answer = call(url + "/score", "POST", good)
    assert status == 200 and np.abs(np.array(answer["scores"]) - np.array(expected[0])).max() <= 1e-6
