"""Text normalisation shared by training and the runtime.

One function, :func:`normalize_text`, is applied to every headline before tokenisation, both when
the model is trained and when it classifies. Changing it changes the model's input distribution, so
its behaviour is pinned by unit tests and recorded in the manifest's ``normalization`` field.
"""

from __future__ import annotations

import html
import re
import unicodedata

NORMALIZATION_VERSION = "1"

_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_CASHTAG_RE = re.compile(r"\$([A-Za-z][A-Za-z0-9.\-]{0,9})\b")
_WS_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200f\ufeff]")


def normalize_text(text: str) -> str:
    """Normalise one headline for the classifier.

    Steps, in order:

    1. HTML entities are unescaped (``&amp;`` -> ``&``), twice, since feeds often double-escape.
    2. Unicode is NFKC-normalised and control / zero-width characters are removed.
    3. URLs (``http(s)://...`` and ``www....``) are removed: shortened links carry no meaning.
    4. Cashtags are upper-cased and separated (``$aapl,$msft`` -> ``$AAPL , $MSFT``) so the
       tokenizer sees each ticker the same way.
    5. Runs of whitespace collapse to one space; the ends are stripped.

    :param text: the raw headline (title, optionally followed by the summary).
    :returns: the normalised text, possibly empty.
    :raises TypeError: if ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"headline must be str, not {type(text).__name__}")
    out = html.unescape(html.unescape(text))
    out = unicodedata.normalize("NFKC", out)
    out = _CONTROL_RE.sub("", out)
    out = _URL_RE.sub(" ", out)
    out = _CASHTAG_RE.sub(lambda m: f" ${m.group(1).upper()} ", out)
    out = _WS_RE.sub(" ", out).strip()
    return out
