"""What every scoring engine of the project shares, with no engine imported: a trained
experiment's scorer loaded from its folder, and raw requests answered as (HTTP status, JSON body).

The LitServe server (:mod:`.server`) and the other engines ``benchmarks/serving.py`` measures
(a plain FastAPI app, Ray Serve, PyTriton, BentoML) score through :func:`answer_requests`, so
every engine gives the same answers and the same error contract for the same requests.
"""

import json
import os
from typing import List, Optional, Sequence, Tuple

from .encoding import RequestError, TooManyCandidatesError
from .load import DTYPES, load_scorer
from .requests import RequestBatch
from .scorers import Scorer


def json_body(payload: dict) -> bytes:
    """``payload`` as JSON bytes; non-ASCII (lone surrogates included) escaped, so encoding never fails."""
    return json.dumps(payload, ensure_ascii=True).encode("ascii")


def answer_requests(scorer: Scorer, requests: Sequence[object]) -> List[Tuple[int, bytes]]:
    """(HTTP status, JSON body) of each raw request; the well-formed ones scored in one call.

    The whole batch is encoded in one vectorised call; only when that fails are the requests
    encoded one by one, so that a bad request gets its own 413 / 422 and the others their scores.
    """
    answers: List[Optional[Tuple[int, bytes]]] = [None] * len(requests)
    try:
        batch, scored = scorer.encode(requests), list(range(len(requests)))
    except RequestError:
        encoded, scored = [], []
        for r, request in enumerate(requests):
            try:
                encoded.append(scorer.encode([request]))
                scored.append(r)
            except TooManyCandidatesError as err:
                answers[r] = (413, json_body({"error": str(err)}))
            except RequestError as err:
                answers[r] = (422, json_body({"error": str(err)}))
        batch = RequestBatch.concat(encoded) if encoded else None
    if batch is not None:
        scores = batch.split(scorer.score_batch(batch).double())
        for r, request_scores in zip(scored, scores):
            answers[r] = (200, json_body({"scores": request_scores.tolist()}))
    return answers


def load_experiment_scorer(workdir: str, config_dir: str, expid: str, checkpoint: Optional[str], path: str,
                           dtype: Optional[str], max_candidates: int, torch_threads: int = 1) -> Scorer:
    """:func:`load_scorer` with paths relative to ``workdir`` (what each worker and the start check run)."""
    os.chdir(workdir)
    return load_scorer(config_dir, expid, checkpoint, path, dtype=DTYPES.get(dtype), max_candidates=max_candidates)


def null_example(scorer: Scorer) -> RequestBatch:
    """Two requests of two candidates, every value missing: the shapes to export and check a compiled scorer with."""
    request = {"context": {c: None for c in scorer.encoder.context_columns},
               "candidates": {c: [None, None] for c in scorer.encoder.target_columns}}
    if not scorer.encoder.target_columns:
        request["num_candidates"] = 2
    return scorer.encode([request, request])
