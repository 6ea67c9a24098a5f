"""The model's answer to an InvokeEndpoint: one parser for the Lambda and the local client."""

from __future__ import annotations

import json


def parse_scores(body: bytes | bytearray | str, expected: int | None = None) -> list[float]:
    """Scores of a CSV/JSON response: one per line or comma-separated (the XGBoost container's forms),
    or JSON (`[...]`, `{"predictions": [...]}` / `{"scores": [...]}`, items numbers or `{"score": x}`).

    With `expected`, a different count is a RuntimeError (the endpoint answered for other rows)."""
    text = (body.decode("utf-8") if isinstance(body, bytes | bytearray) else body).strip()
    if text.startswith("{") or text.startswith("["):
        obj = json.loads(text)
        if isinstance(obj, dict):
            obj = obj.get("predictions", obj.get("scores", []))
        scores = [float(p["score"]) if isinstance(p, dict) else float(p) for p in obj]
    else:
        scores = [float(tok) for tok in text.replace(",", "\n").split()]
    if expected is not None and len(scores) != expected:
        raise RuntimeError(f"endpoint returned {len(scores)} scores for {expected} rows")
    return scores
