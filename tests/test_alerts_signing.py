"""Standard Webhooks signing and the receiver snippet in docs/alerts.md."""

import re
import time
from pathlib import Path

import pytest

from finpulse.alerts.exceptions import WebhookVerificationError
from finpulse.alerts.signing import secret_key, sign, sign_headers, verify

DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"

# the Standard Webhooks specification's published test vector
VECTOR = dict(secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
              timestamp=1614265330, body='{"test": 2432232314}',
              signature="v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def doc_snippet():
    text = DOC.read_text()
    m = re.search(r"<!-- receiver-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert m, "receiver snippet missing from docs/alerts.md"
    ns: dict = {}
    exec(compile(m.group(1), str(DOC), "exec"), ns)
    return ns["verify_webhook"]


def test_known_vector():
    v = VECTOR
    assert sign(v["msg_id"], v["timestamp"], v["body"], v["secret"]) == v["signature"]
    headers = {"webhook-id": v["msg_id"], "webhook-timestamp": str(v["timestamp"]), "webhook-signature": v["signature"]}
    assert verify(v["body"], headers, v["secret"], now=v["timestamp"] + 10) == v["msg_id"]


@pytest.mark.parametrize("secret", ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain secret ünïcode"])
def test_round_trip_and_tampering(secret):
    body = b'{"alert_id":"al_1","status":"fired"}'
    h = sign_headers("al_1.fired.warning", body, secret)
    assert verify(body, h, secret) == "al_1.fired.warning"
    assert verify(body.decode(), {k.upper(): v for k, v in h.items()}, secret)  # header case and str body
    for bad_body, bad_headers, bad_secret in (
        (body + b" ", h, secret),
        (body, {**h, "webhook-id": "al_2.fired.warning"}, secret),
        (body, {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, secret),
        (body, h, "another secret"),
        (body, {**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, secret),
    ):
        with pytest.raises(WebhookVerificationError):
            verify(bad_body, bad_headers, bad_secret)


def test_timestamp_tolerance_missing_headers_and_rotation():
    body = b"{}"
    old = sign_headers("id1", body, "s1", timestamp=int(time.time()) - 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(body, old, "s1")
    assert verify(body, old, "s1", tolerance_s=600) == "id1"
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(body, {"webhook-id": "x"}, "s1")
    h = sign_headers("id2", body, "new")
    h["webhook-signature"] = sign("id2", int(h["webhook-timestamp"]), body, "old") + " " + h["webhook-signature"]
    assert verify(body, h, "new") == "id2" and verify(body, h, ["nope", "old"]) == "id2"


def test_secret_forms():
    assert secret_key("whsec_aGVsbG8=") == b"hello" and secret_key("hello") == b"hello"
    for bad in ("", "whsec_!!!", "whsec_"):
        with pytest.raises(ValueError):
            secret_key(bad)


def test_docs_snippet_verifies_our_signatures():
    verify_webhook = doc_snippet()
    body = b'{"alert_id":"al_1"}'
    for secret in ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain-secret"):
        h = sign_headers("al_1.fired.critical", body, secret)
        assert verify_webhook(secret, h, body) == "al_1.fired.critical"
        with pytest.raises(ValueError):
            verify_webhook(secret, h, body.replace(b"1", b"2"))
        with pytest.raises(ValueError):
            verify_webhook(secret, sign_headers("x", body, secret, timestamp=int(time.time()) - 3600), body)
    v = VECTOR  # and the spec's vector, with its own timestamp inside the tolerance
    h = {"webhook-id": v["msg_id"], "webhook-timestamp": str(int(time.time())),
         "webhook-signature": sign(v["msg_id"], int(time.time()), v["body"], v["secret"])}
    assert verify_webhook(v["secret"], h, v["body"].encode()) == v["msg_id"]
