"""The built-in notifier: a firing's record POSTed as JSON to the recipe's `notify.webhook`, signed with
HMAC-SHA256 when `notify.secret_env` names a secret (`X-Llmctl-Signature: sha256=HEX`, GitHub's scheme), retried
with exponential backoff on a connection error, a timeout, 429 or 5xx; what happened is returned for the
firing's record (`webhook: {ok, status, attempts, error}`). httpx is already installed (the OpenAI client's
transport); a failed delivery is a warning, never the firing's outcome."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import TYPE_CHECKING, Any

from llmctl.redaction import redact

if TYPE_CHECKING:
    from llmctl.spec.recipe import NotifySpec

RETRY_STATUS = {429, 500, 502, 503, 504}
BACKOFF_S = 1.0


def wanted(spec: NotifySpec, record: dict[str, Any]) -> bool:
    """Whether this firing is delivered: every one, or only those that alert."""
    return spec.on == "every" or bool(record.get("alert"))


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(spec: NotifySpec, record: dict[str, Any], sleep: Any = time.sleep) -> dict[str, Any]:
    """POST the record (secrets hidden); returns {ok, status, attempts, error}."""
    import httpx

    body = json.dumps(redact(record), default=str).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "llmctl",
        "X-Llmctl-Event": record.get("alert") or record.get("outcome", ""),
        "X-Llmctl-Delivery": str(record.get("run_id", "")),
    }
    if spec.secret_env:
        secret = os.environ.get(spec.secret_env)
        if not secret:
            return {"ok": False, "attempts": 0, "error": f"{spec.secret_env} is not set: nothing was sent unsigned"}
        headers["X-Llmctl-Signature"] = signature(secret, body)
    result: dict[str, Any] = {"ok": False, "attempts": 0}
    for attempt in range(spec.retries + 1):
        if attempt:
            sleep(BACKOFF_S * 2 ** (attempt - 1))
        result["attempts"] = attempt + 1
        try:
            reply = httpx.post(spec.webhook, content=body, headers=headers, timeout=spec.timeout_s)
        except httpx.HTTPError as error:
            result |= {"status": None, "error": f"{type(error).__name__}: {error}"[:300]}
            continue
        result |= {"status": reply.status_code}
        if reply.is_success:
            result.pop("error", None)
            return result | {"ok": True}
        result["error"] = f"HTTP {reply.status_code}"
        if reply.status_code not in RETRY_STATUS:
            break
    return result
