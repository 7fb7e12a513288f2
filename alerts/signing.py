"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A request carries three headers:

* ``webhook-id``: unique per message (our alert ``event_id``); receivers de-duplicate on it;
* ``webhook-timestamp``: integer unix seconds of the attempt;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, several
  space-separated signatures allowed (key rotation).

Secrets are either ``whsec_<base64>`` (the spec's form: the key is the decoded bytes) or any other
string (the key is its UTF-8 bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

from .exceptions import WebhookVerificationError

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret.

    :param secret: ``whsec_<base64>``, another string (used as UTF-8), or raw bytes.
    :returns: the key bytes.
    :raises ValueError: for an empty secret or a ``whsec_`` secret that is not valid base64.
    """
    if isinstance(secret, (bytes, bytearray)):
        key = bytes(secret)
    elif secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("whsec_ secret is not valid base64") from None
    else:
        key = secret.encode("utf-8")
    if not key:
        raise ValueError("empty webhook secret")
    return key


def _as_bytes(body: str | bytes) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def sign(webhook_id: str, timestamp: int, body: str | bytes, secret: str | bytes) -> str:
    """The ``webhook-signature`` value for one message.

    :param webhook_id: the ``webhook-id`` header.
    :param timestamp: the ``webhook-timestamp`` header (unix seconds).
    :param body: the exact request body.
    :param secret: endpoint secret (see :func:`secret_key`).
    :returns: ``"v1,<base64>"``.
    """
    content = f"{webhook_id}.{int(timestamp)}.".encode() + _as_bytes(body)
    mac = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def sign_headers(webhook_id: str, body: str | bytes, secret: str | bytes, *,
                 timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt.

    :param webhook_id: unique message id (the alert's ``event_id``).
    :param body: the exact request body.
    :param secret: endpoint secret.
    :param timestamp: unix seconds (default: now).
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(ts),
            "webhook-signature": sign(webhook_id, ts, body, secret)}


def verify(body: str | bytes, headers: Mapping[str, str], secret: str | bytes | Iterable[str | bytes], *,
           tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> str:
    """Verify a received webhook (for receivers and tests).

    :param body: the raw request body, exactly as received.
    :param headers: request headers (any case).
    :param secret: the endpoint secret, or several (during rotation).
    :param tolerance_s: accepted distance between ``webhook-timestamp`` and ``now`` (replay guard).
    :param now: current unix time (default: ``time.time()``).
    :returns: the ``webhook-id`` (to de-duplicate on).
    :raises WebhookVerificationError: missing headers, bad timestamp, or no matching signature.
    """
    h = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts_raw, sigs = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    try:
        ts = int(ts_raw)
    except ValueError:
        raise WebhookVerificationError("invalid webhook-timestamp") from None
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp outside tolerance")
    secrets = [secret] if isinstance(secret, (str, bytes, bytearray)) else list(secret)
    for s in secrets:
        expected = sign(msg_id, ts, body, s).encode("ascii")
        for candidate in sigs.split():
            if (candidate.startswith(f"{SIGNATURE_VERSION},")
                    and hmac.compare_digest(expected, candidate.encode("ascii", "replace"))):
                return msg_id
    raise WebhookVerificationError("no matching signature")
