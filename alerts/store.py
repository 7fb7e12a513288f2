"""Rolling negative-sentiment windows in Redis (per-scope, per-bucket counters keyed by event time).

One Lua script call per scope per batch records each article id in its bucket's ``seen`` set first
and counts it only when the id is new, so a redelivered or replayed article is never counted twice; the
script touches only keys with the scope's hash tag (Redis Cluster safe). A batch is pipelined.
Syndicated copies (``duplicate_of`` set) are not counted. See :mod:`finpulse.core.constants` for the keys.

First labels win: a redelivered article is classified again, and the int8 model's answer can
differ slightly with the other headlines of its batch (dynamic quantisation), e.g. another topic,
which would put it in a scope whose ``seen`` set does not know it. So before counting, each
article claims its labels (``SET NX`` on ``claim:<id>``, then ``GET``); a redelivery is counted
with the claimed labels, and ``relabelled`` counts the redeliveries whose new labels differed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from finpulse.core import constants as C
from finpulse.core import rfc3339
from finpulse.core.codec import as_str
from finpulse.core.connections import run_scripts

from .exceptions import InvalidArticle
from .windows import (
    Article,
    WindowStats,
    bucket_ceil,
    bucket_start,
    check_window,
    normalize_scope,
    parse_article,
    window_bounds,
)

log = logging.getLogger(__name__)

# One call per scope and batch (every key shares the scope's hash tag).
# KEYS: per bucket j (1-based): bucket hash 4j-3, seen set 4j-2, top-negative zset 4j-1, hourly roll-up 4j;
#       last: the scope's recent-headlines list
# ARGV: ttl, top k, roll-up ttl, recent n, then 7 per article: j, id, sentiment field, score (micro int),
#       model-version field ('' = none), headline JSON ('' = not negative), recent-headline JSON
# returns one 1 (newly counted) or 0 (already in the bucket's seen set) per article
_RECORD_LUA = """
local ttl = tonumber(ARGV[1])
local topk = tonumber(ARGV[2])
local rttl = tonumber(ARGV[3])
local nrecent = tonumber(ARGV[4])
local out, touched, negs = {}, {}, {}
local recent = KEYS[#KEYS]
local pushed = false
for i = 5, #ARGV, 7 do
  local j = tonumber(ARGV[i])
  local bkey = KEYS[4 * j - 3]
  if redis.call('SADD', KEYS[4 * j - 2], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', bkey, 'n', 1)
    redis.call('HINCRBY', bkey, ARGV[i + 2], 1)
    redis.call('HINCRBY', KEYS[4 * j], 'n', 1)
    redis.call('HINCRBY', KEYS[4 * j], ARGV[i + 2], 1)
    redis.call('HINCRBY', bkey, 'sum_sentiment_score_micro', ARGV[i + 3])
    if ARGV[i + 4] ~= '' then
      redis.call('HINCRBY', bkey, ARGV[i + 4], 1)
    end
    if ARGV[i + 5] ~= '' then
      redis.call('ZADD', KEYS[4 * j - 1], ARGV[i + 3], ARGV[i + 5])
      redis.call('ZREMRANGEBYRANK', KEYS[4 * j - 1], topk, -1)
      negs[j] = true
    end
    redis.call('LPUSH', recent, ARGV[i + 6])
    pushed = true
    touched[j] = true
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
for j, _ in pairs(touched) do
  redis.call('EXPIRE', KEYS[4 * j - 3], ttl)
  redis.call('EXPIRE', KEYS[4 * j - 2], ttl)
  redis.call('EXPIRE', KEYS[4 * j], rttl)
end
for j, _ in pairs(negs) do
  redis.call('EXPIRE', KEYS[4 * j - 1], ttl)
end
if pushed then
  redis.call('LTRIM', recent, 0, nrecent - 1)
  redis.call('EXPIRE', recent, ttl)
end
return out
"""

# KEYS: the scopes zset; ARGV: threshold, then scopes. Removes each scope whose newest bucket is still
# before the threshold (a concurrent write of newer news keeps it); returns how many were removed.
_FORGET_SCOPES_LUA = """
local n = 0
local before = tonumber(ARGV[1])
for i = 2, #ARGV do
  local sc = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if sc and tonumber(sc) < before then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
"""

EMERGING_MIN_MENTIONS = 3
"""Headlines (not copies of each other) that must name an unlisted name for it to get a scope."""
EMERGING_WINDOW_S = 86400
"""... within this much event time."""
EMERGING_MAX = 5000
"""Most promoted emerging entities kept per namespace (the least recently mentioned are dropped)."""

EMERGING_ALIASES_MAX = 20000
"""Most acronym -> name aliases kept per namespace (past it the table starts over)."""

RECORD_CHUNK = 512
"""Most articles of one scope counted by one script call (bounds a script's run time)."""

# KEYS: bucket hashes (one scope, so one hash tag); returns "n,negative,positive,neutral,score,..."
# (5 integers per key, 0 for missing) as one string: far cheaper to parse than nested replies
_SERIES_LUA = """
local out = {}
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'n', 'negative', 'positive', 'neutral', 'sum_sentiment_score_micro')
  for j = 1, 5 do
    out[#out + 1] = v[j] or '0'
  end
end
return table.concat(out, ',')
"""

MAX_SERIES_BUCKETS = 200_000
"""Most buckets one window query may read (about 139 days of minute buckets)."""
MAX_TIMESERIES_POINTS = 200_000
"""Most points one :meth:`WindowStore.timeseries` call returns."""


@dataclass
class RecordResult:
    """Outcome of :meth:`WindowStore.record` for one batch.

    :param counted: articles newly counted (in at least one scope).
    :param duplicates: articles already counted in every scope (redelivery / replay).
    :param syndicated: articles skipped because ``duplicate_of`` is set.
    :param late: newly counted articles older than the watermark minus the late allowance.
    :param relabelled: articles seen before with other labels (counted with their first labels).
    :param invalid: ``(index in batch, reason)`` of articles that could not be parsed (not counted;
        the caller should dead-letter them).
    :param touched: scope -> sorted bucket starts that received a new count.
    """

    counted: int = 0
    duplicates: int = 0
    syndicated: int = 0
    late: int = 0
    relabelled: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    touched: dict[str, list[int]] = field(default_factory=dict)


class BucketSeries:
    """Per-bucket counters of one scope over ``[start, end)``, with O(1) window sums.

    :param scope: the scope.
    :param start: first bucket start.
    :param bucket_s: bucket width.
    :param rows: one dict per bucket (``n``, ``negative``, ``positive``, ``neutral``,
        ``sum_sentiment_score_micro``, ``mv`` (dict version -> count)); or ``None`` with ``counts``.
    :param counts: instead of ``rows``: an integer array of shape ``(buckets, 5)``, the counters in
        :attr:`FIELDS` order (no model versions); ``rows`` is then built only when asked for.
    """

    FIELDS = C.BUCKET_FIELDS

    def __init__(self, scope: str, start: int, bucket_s: int, rows: list[dict] | None = None, *,
                 counts: np.ndarray | None = None):
        if (rows is None) == (counts is None):
            raise ValueError("give exactly one of rows and counts")
        if counts is None:
            assert rows is not None  # exactly one of the two was given
            counts = np.array([[r[f] for f in self.FIELDS] for r in rows], dtype=np.int64).reshape(-1, len(self.FIELDS))
        self.scope = scope
        self.start = start
        self.bucket_s = bucket_s
        self.end = start + bucket_s * len(counts)
        self._rows = rows
        self._counts = counts
        self._cum = np.zeros((len(counts) + 1, len(self.FIELDS)), dtype=np.int64)
        np.cumsum(counts, axis=0, out=self._cum[1:])

    @property
    def rows(self) -> list[dict]:
        """One dict per bucket, as in the ``rows`` parameter."""
        if self._rows is None:
            self._rows = [{**dict(zip(self.FIELDS, r, strict=True)), "mv": {}} for r in self._counts.tolist()]
        return self._rows

    def column(self, field: str) -> np.ndarray:
        """One counter per bucket (read-only view).

        :param field: one of :attr:`FIELDS`.
        """
        col = self._counts[:, self.FIELDS.index(field)]
        col.flags.writeable = False
        return col

    def _idx(self, ts: int) -> int:
        if ts < self.start or ts > self.end or (ts - self.start) % self.bucket_s:
            raise ValueError(f"{ts} is not a bucket boundary within [{self.start}, {self.end}]")
        return (ts - self.start) // self.bucket_s

    def window(self, start: int, end: int, *, with_versions: bool = False) -> WindowStats:
        """Counts over ``[start, end)`` (bucket boundaries inside the series).

        :param start: window start.
        :param end: window end (exclusive).
        :param with_versions: also collect the model versions (slower).
        """
        i, j = self._idx(start), self._idx(end)
        n, negative, positive, neutral, score = (self._cum[j] - self._cum[i]).tolist()
        versions: tuple[str, ...] = ()
        if with_versions:
            versions = tuple(sorted({v for r in self.rows[i:j] for v in r["mv"]}))
        return WindowStats(
            scope=self.scope, start=start, end=end, n=n, negative=negative,
            positive=positive, neutral=neutral, sum_score=score / C.SCORE_SCALE, model_versions=versions,
        )

    @classmethod
    def join(cls, older: BucketSeries, newer: BucketSeries) -> BucketSeries:
        """One series from two adjacent ones of the same scope (``older.end == newer.start``);
        model versions are kept only when both were built from ``rows``.

        :param older: the earlier buckets.
        :param newer: the buckets that follow.
        """
        if older.scope != newer.scope or older.bucket_s != newer.bucket_s or older.end != newer.start:
            raise ValueError(f"cannot join {older.scope} [{older.start}, {older.end}) and "
                             f"{newer.scope} [{newer.start}, {newer.end})")
        if older._rows is not None and newer._rows is not None:
            return cls(older.scope, older.start, older.bucket_s, older._rows + newer._rows)
        return cls(older.scope, older.start, older.bucket_s, counts=np.concatenate([older._counts, newer._counts]))

    def rolling(self, ends: range, width: int, field: str = "n") -> np.ndarray:
        """One counter summed over ``[e - width, e)`` for every window end ``e`` (vectorised).

        :param ends: window ends, a range of bucket boundaries stepping by the bucket width.
        :param width: window width, a multiple of the bucket width.
        :param field: one of :attr:`FIELDS`.
        :returns: an int64 array, one sum per end.
        """
        if not len(ends):
            return np.zeros(0, dtype=np.int64)
        if ends.step != self.bucket_s or width % self.bucket_s:
            raise ValueError(f"ends must step by the bucket width ({self.bucket_s}) and width be a multiple of it")
        first = self._idx(ends[0])
        self._idx(ends[-1])  # in range
        lo = self._idx(ends[0] - width)
        col = self._cum[:, self.FIELDS.index(field)]
        return col[first:first + len(ends)] - col[lo:lo + len(ends)]


def _parse_counts(reply: Any, buckets: int, scope: str) -> np.ndarray:
    """The reply of the series script (``n,negative,...`` per key) as an array of shape ``(buckets, 5)``."""
    vals = np.fromstring(as_str(reply), dtype=np.int64, sep=",")
    if vals.size != buckets * len(BucketSeries.FIELDS):
        raise RuntimeError(f"series of {scope}: {vals.size} counters read for {buckets} buckets")
    return vals.reshape(-1, len(BucketSeries.FIELDS))


#: Member prefix of a partition's newest event time in the namespace's event-time sorted set.
PARTITION_MEMBER = "p:"
#: Backlog reports older than this (seconds) are ignored (their worker may be gone).
BACKLOG_FRESH_S = 30.0
IDLE_AFTER_S = 60.0
"""A partition is idle (no longer holds the watermark back) once every report for this long said it
had nothing left: a partition that was empty a moment ago may have just received news that a stale
report does not show yet, and closing buckets ahead of it would count that news late."""


class WindowStore:
    """Per-scope rolling windows of one namespace in Redis.

    :param redis: a ``redis.asyncio.Redis`` (``decode_responses`` either way).
    :param namespace: run namespace (``live``, ``bt-...``); every key starts with
        ``finpulse:<namespace>:``.
    :param bucket_seconds: bucket width (``Settings.bucket_seconds``).
    :param retention_s: TTL of bucket keys, refreshed on every write (default 2 days); must exceed
        the longest window (including a rule's baseline). It is also the horizon of redelivery
        de-duplication.
    :param late_allowance_s: events older than the newest event time minus this are late
        (``Settings.late_allowance_s``).
    :param rollup_retention_s: TTL of the hourly roll-ups (default 35 days): the longest short
        window plus baseline a ``surge`` rule may use.
    :param oldest_ts: articles dated before this (epoch seconds) are invalid (``too_old``), so that a
        mis-dated article cannot move the detector decades back (``Settings.oldest_event``); ``None``:
        no bound.
    :param partitions: partitions of ``news.scored`` (``Settings.partitions``): once :meth:`record` is
        given partitions, each of these that has counted nothing yet and is not idle holds the
        watermark (a worker still starting, or retrying its first batch, has news to count).
    """

    def __init__(self, redis: Any, namespace: str, *, bucket_seconds: int = C.DEFAULT_BUCKET_SECONDS,
                 retention_s: int | None = None, late_allowance_s: float = C.DEFAULT_LATE_ALLOWANCE_S,
                 rollup_retention_s: int = C.DEFAULT_ROLLUP_RETENTION_S, oldest_ts: float | None = None,
                 partitions: int = 0):
        self.redis = redis
        self.partitions = int(partitions)
        self.oldest_ts = oldest_ts
        self.namespace = namespace
        C.prefix(namespace)  # validates
        if not isinstance(bucket_seconds, int) or bucket_seconds < 1:
            raise ValueError(f"bucket_seconds must be a positive int, got {bucket_seconds!r}")
        self.bucket_seconds = bucket_seconds
        self.retention_s = int(retention_s if retention_s is not None else C.DEFAULT_RETENTION_S)
        if self.retention_s <= 2 * bucket_seconds:
            raise ValueError(f"retention_s {self.retention_s} is too short")
        self.late_allowance_s = float(late_allowance_s)
        if C.ROLLUP_SECONDS % bucket_seconds:
            raise ValueError(f"bucket_seconds {bucket_seconds} must divide the roll-up width {C.ROLLUP_SECONDS}")
        self.rollup_retention_s = int(rollup_retention_s)
        self._script = redis.register_script(_RECORD_LUA)
        self._series = redis.register_script(_SERIES_LUA)
        self._forget = redis.register_script(_FORGET_SCOPES_LUA)

    @classmethod
    def from_settings(cls, redis: Any, settings: Any) -> WindowStore:
        """A store configured from a :class:`finpulse.core.settings.Settings`.

        :param redis: a ``redis.asyncio.Redis``.
        :param settings: uses ``namespace``, ``bucket_seconds``, ``late_allowance_s``, ``oldest_event``,
            ``partitions`` and ``windows_s`` (retention is at least twice the longest window).
        """
        longest = max([*settings.windows_s, 86400 + 900])
        return cls(redis, settings.namespace, bucket_seconds=settings.bucket_seconds,
                   retention_s=max(C.DEFAULT_RETENTION_S, 2 * longest),
                   late_allowance_s=settings.late_allowance_s, oldest_ts=settings.oldest_event_ts(),
                   partitions=settings.partitions)

    # --- writing ---------------------------------------------------------------------------------

    async def record(self, articles: Sequence[Mapping[str, Any]],
                     partitions: Sequence[int] | None = None) -> RecordResult:
        """Count a batch of scored articles in every scope they belong to (idempotent per id).

        :param articles: ``news.scored`` messages, preferably in event-time order.
        :param partitions: the Kafka partition each article was read from; then each partition's
            newest event time is kept too, and :meth:`watermark` advances per partition.
        :returns: a :class:`RecordResult`; invalid articles are listed, not raised.
        """
        res = RecordResult()
        parsed: list[Article] = []
        part_newest: dict[int, float] = {}
        for i, msg in enumerate(articles):
            try:
                art = parse_article(msg)
            except InvalidArticle as exc:
                res.invalid.append((i, exc.reason))
                continue
            if self.oldest_ts is not None and art.ts < self.oldest_ts:
                res.invalid.append((i, f"too_old: published_at is before the oldest accepted event time "
                                       f"{rfc3339.format(self.oldest_ts)}"))
                continue
            parsed.append(art)
            if partitions is not None:
                part_newest[partitions[i]] = max(art.ts, part_newest.get(partitions[i], art.ts))
        if parsed:
            parsed = await self._emerging(parsed)
            parsed, watermark = await self._claim(parsed, res)
            await self._record(parsed, res, watermark)
            if part_newest:  # after the counts: a partition's event time never passes uncounted news
                await self.redis.zadd(C.ns_key(self.namespace, C.EVENT_TIME_KEY),
                                      {f"{PARTITION_MEMBER}{p}": ts for p, ts in part_newest.items()}, gt=True)
        metrics = {"counted": res.counted, "duplicates": res.duplicates, "syndicated": res.syndicated,
                   "late": res.late, "invalid": len(res.invalid), "relabelled": res.relabelled}
        if any(metrics.values()):
            pipe = self.redis.pipeline(transaction=False)
            for k, v in metrics.items():
                if v:
                    pipe.hincrby(C.metrics_key(self.namespace), k, v)
            await pipe.execute()
        if res.late:
            log.info("namespace %s: %d late article(s) counted in their own buckets", self.namespace, res.late)
        return res

    async def _emerging(self, parsed: list[Article]) -> list[Article]:
        """Emerging entities: names in no company list get a scope ``entity:<name>`` once promoted.

        A name is promoted when :data:`EMERGING_MIN_MENTIONS` headlines that are not copies of each
        other mention it within :data:`EMERGING_WINDOW_S` of event time (in a multi-source stream
        these are usually several sources; in a single-source one, distinct stories). Until then its
        mentions wait in a sorted set in the future scope's hash tag; on promotion they are counted
        into the new scope at their own event times, so its history starts with the story. An
        acronym spelled out once ("Silicon Valley Bank (SVB)") is an alias of that name from then on.
        At most :data:`EMERGING_MAX` promoted names are kept (the least recently mentioned go first).
        """
        ns = self.namespace
        pairs = {a: b for art in parsed for a, b in art.expansions}
        alias_key = C.ns_key(ns, C.ENTITY_ALIASES_KEY)
        if pairs:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(alias_key, mapping=pairs)
            pipe.hlen(alias_key)
            if (await pipe.execute())[-1] > EMERGING_ALIASES_MAX:
                # bounded memory: start the alias table over (aliases come back with their next spelling-out)
                log.warning("namespace %s: more than %d entity aliases; the alias table starts over", ns,
                            EMERGING_ALIASES_MAX)
                await self.redis.delete(alias_key)
                await self.redis.hset(alias_key, mapping=pairs)
        names = sorted({c for art in parsed if not art.duplicate_of for c in art.candidates})
        if not names:
            return parsed
        aliases = dict(zip(names, await self.redis.hmget(alias_key, names), strict=True))
        canon = {c: (as_str(v) if v is not None else c) for c, v in aliases.items()}
        promoted_key = C.ns_key(ns, C.ENTITIES_KEY)
        known = await self.redis.zmscore(promoted_key, sorted(set(canon.values())))
        promoted = {n for n, sc in zip(sorted(set(canon.values())), known, strict=True) if sc is not None}
        mentions: dict[str, list[Article]] = {}
        for art in parsed:
            if art.duplicate_of:
                continue
            for c in dict.fromkeys(canon[c] for c in art.candidates if c in canon):
                mentions.setdefault(c, []).append(art)
        newly: dict[str, list[Article]] = {}
        waiting_names = [(n, arts) for n, arts in sorted(mentions.items()) if n not in promoted]
        pipe = self.redis.pipeline(transaction=False)  # one round trip for every candidate of the batch
        for name, arts in waiting_names:
            key = C.candidate_key(ns, name)
            pipe.zadd(key, {json.dumps([a.id, a.sentiment, a.score_micro, a.model_version, a.headline],
                                       sort_keys=True, ensure_ascii=False): a.ts for a in arts})
            pipe.expire(key, 2 * EMERGING_WINDOW_S)
            pipe.zrangebyscore(key, max(a.ts for a in arts) - EMERGING_WINDOW_S, "+inf")
        replies = (await pipe.execute())[2::3] if waiting_names else []
        done: list[str] = []
        for (name, arts), raw in zip(waiting_names, replies, strict=True):
            waiting = [json.loads(as_str(m)) for m in raw]
            if len({m[0] for m in waiting}) >= EMERGING_MIN_MENTIONS:
                in_batch = {a.id for a in arts}
                newly[name] = [Article(id=i, ts=rfc3339.parse(h["published_at"]).timestamp(), sentiment=s,
                                       score_micro=int(sm), model_version=mv, duplicate_of=None,
                                       scopes=(f"entity:{name}",), headline=h)
                               for i, s, sm, mv, h in waiting if i not in in_batch]
                done.append(C.candidate_key(ns, name))
        if done:
            await self.redis.unlink(*done)  # a cluster client sends one per slot
        if newly:
            log.info("namespace %s: emerging entities %s", ns, ", ".join(sorted(newly)))
            backlog = [a for arts in newly.values() for a in arts]
            if backlog:
                await self._record(sorted(backlog, key=lambda a: a.ts), RecordResult(), None)
            promoted |= set(newly)
        now_seen = {n: max(a.ts for a in arts) for n, arts in mentions.items() if n in promoted}
        if now_seen:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(promoted_key, now_seen, gt=True)  # GT still adds new members
            pipe.zremrangebyrank(promoted_key, 0, -EMERGING_MAX - 1)
            await pipe.execute()
        out = []
        for art in parsed:
            extra = [f"entity:{canon[c]}" for c in art.candidates
                     if c in canon and canon[c] in promoted and not art.duplicate_of]
            out.append(replace(art, scopes=tuple(dict.fromkeys([*art.scopes, *extra]))) if extra else art)
        return out

    async def _claim(self, parsed: list[Article], res: RecordResult) -> tuple[list[Article], float | None]:
        """Give each article the labels it was first counted with (see the module docstring).

        :returns: the articles with their first labels, and the namespace's watermark before this
            batch (read in the same round trip).
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(C.ns_key(self.namespace, C.EVENT_TIME_KEY), C.EVENT_TIME_NEWEST)
        mine: list[str | None] = []
        for a in parsed:
            if a.duplicate_of:
                mine.append(None)
                continue
            labels = json.dumps([list(a.scopes), a.sentiment, a.score_micro, a.model_version], ensure_ascii=False)
            key = C.claim_key(self.namespace, a.id)
            pipe.set(key, labels, nx=True, ex=self.retention_s)
            pipe.get(key)
            mine.append(labels)
        replies = iter(await pipe.execute())
        newest = next(replies)
        out: list[Article] = []
        for a, claim in zip(parsed, mine, strict=True):
            if claim is None:
                out.append(a)
                continue
            next(replies)
            first = next(replies)
            first = claim if first is None else as_str(first)  # None only if it expired in between
            if first != claim:
                scopes, sentiment, score_micro, model_version = json.loads(first)
                a = replace(a, scopes=tuple(scopes), sentiment=sentiment, score_micro=int(score_micro),
                            model_version=model_version,
                            headline={**a.headline, "sentiment_score": int(score_micro) / C.SCORE_SCALE})
                res.relabelled += 1
            out.append(a)
        return out, (None if newest is None else float(newest))

    async def _record(self, parsed: list[Article], res: RecordResult, running: float | None) -> None:
        ns, s = self.namespace, self.bucket_seconds
        pipe = self.redis.pipeline(transaction=False)
        by_scope: dict[str, list[tuple[int, int, list]]] = {}  # scope -> (article index, bucket, args)
        newest_bucket: dict[str, int] = {}
        late_flags: list[bool] = []
        for idx, a in enumerate(parsed):
            late_flags.append(running is not None and a.ts < running - self.late_allowance_s)
            running = a.ts if running is None else max(running, a.ts)
            if a.duplicate_of:
                res.syndicated += 1
                continue
            b = bucket_start(a.ts, s)
            mv = f"{C.MODEL_VERSION_FIELD_PREFIX}{a.model_version}" if a.model_version else ""
            # member = [published_at, id, headline]: equal scores order by time, then id (as top_negative)
            headline = (json.dumps([a.headline["published_at"], a.id, a.headline], sort_keys=True, ensure_ascii=False)
                        if a.sentiment == "negative" else "")
            recent = json.dumps({**a.headline, "sentiment": a.sentiment,
                                 "topic": next((sc[6:] for sc in a.scopes if sc.startswith("topic:")), None)},
                                sort_keys=True, ensure_ascii=False)
            args = [a.id, a.sentiment, a.score_micro, mv, headline, recent]
            for scope in a.scopes:
                by_scope.setdefault(scope, []).append((idx, b, args))
                newest_bucket[scope] = max(newest_bucket.get(scope, b), b)
        calls: list[list[tuple[int, str, int]]] = []  # per script call: (article index, scope, bucket)
        script_calls: list[tuple[list[str], list]] = []
        for scope, rows in by_scope.items():
            for off in range(0, len(rows), RECORD_CHUNK):
                chunk = rows[off:off + RECORD_CHUNK]
                slots: dict[int, int] = {}
                keys: list[str] = []
                argv: list = [self.retention_s, C.TOP_K, self.rollup_retention_s, C.RECENT_N]
                for _, b, args in chunk:
                    if b not in slots:
                        slots[b] = len(slots) + 1
                        keys += [C.bucket_key(ns, scope, b), C.seen_key(ns, scope, b), C.top_negative_key(ns, scope, b),
                                 C.rollup_key(ns, scope, bucket_start(b, C.ROLLUP_SECONDS))]
                    argv += [slots[b], *args]
                script_calls.append(([*keys, C.recent_key(ns, scope)], argv))
                calls.append([(idx, scope, b) for idx, b, _ in chunk])
        scopes_key = C.ns_key(ns, C.SCOPES_KEY)
        for scope, b in newest_bucket.items():
            pipe.zadd(scopes_key, {scope: b}, gt=True)
        ev = C.ns_key(ns, C.EVENT_TIME_KEY)
        pipe.zadd(ev, {C.EVENT_TIME_NEWEST: max(a.ts for a in parsed)}, gt=True)
        pipe.zadd(ev, {C.EVENT_TIME_OLDEST: min(a.ts for a in parsed)}, lt=True)
        results = await run_scripts(self.redis, self._script, script_calls)
        await pipe.execute()  # after the counts: the namespace's event time never passes uncounted news

        new_in: dict[int, int] = {}
        touched: dict[str, set[int]] = {}
        for call, flags in zip(calls, results, strict=True):
            for (idx, scope, b), r in zip(call, flags, strict=True):
                if int(r) == 1:
                    new_in[idx] = new_in.get(idx, 0) + 1
                    touched.setdefault(scope, set()).add(b)
        for idx, a in enumerate(parsed):
            if a.duplicate_of:
                continue
            if new_in.get(idx):
                res.counted += 1
                res.late += late_flags[idx]
            else:
                res.duplicates += 1
        res.touched = {sc: sorted(bs) for sc, bs in sorted(touched.items())}

    # --- reading ---------------------------------------------------------------------------------

    async def watermark(self) -> float | None:
        """The namespace's event time (epoch seconds; ``None`` before any article).

        Without partitions (:meth:`record` called without them: replays, backtests, tests) it is the
        newest event time recorded. With partitions it advances per partition: the smallest newest
        event time over the partitions that may still hold unprocessed news, so a fast partition
        cannot close buckets for a slow one's backlog. A partition is idle (does not hold the
        watermark back) when the workers reported it, within the last :data:`BACKLOG_FRESH_S`,
        processed up to the end of ``news.raw`` and ``news.scored`` in every report of the last
        :data:`IDLE_AFTER_S` (``stream/logwatch.py``); a partition not reported (a worker starting,
        a rebalance) holds it, and one of the ``partitions`` that has counted nothing yet holds it at
        the oldest event time (until it counts or is idle).
        """
        rows = await self.redis.zrange(C.ns_key(self.namespace, C.EVENT_TIME_KEY), 0, -1, withscores=True)
        newest: float | None = None
        oldest: float | None = None
        per: dict[int, float] = {}
        for m, score in rows:
            name = as_str(m)
            if name == C.EVENT_TIME_NEWEST:
                newest = float(score)
            elif name == C.EVENT_TIME_OLDEST:
                oldest = float(score)
            elif name.startswith(PARTITION_MEMBER):
                per[int(name[len(PARTITION_MEMBER):])] = float(score)
        if newest is None or not per:
            return newest
        idle = await self.idle_partitions()
        if any(p not in per and p not in idle for p in range(self.partitions)):
            # a partition that has counted nothing yet may hold news of any time since the oldest
            return min(newest, oldest if oldest is not None else newest)
        return min([newest, *(ts for p, ts in per.items() if p not in idle)])

    async def idle_partitions(self, now: float | None = None) -> set[int]:
        """Partitions the workers reported (within :data:`BACKLOG_FRESH_S`) with nothing left to process
        in every report of the last :data:`IDLE_AFTER_S` (``zero_since``, ``stream/logwatch.py``)."""
        now = time.time() if now is None else now
        raw = await self.redis.hgetall(C.ns_key(self.namespace, C.BACKLOG_KEY))
        seen: dict[int, bool] = {}
        for k, v in raw.items():
            report = json.loads(as_str(v))
            at = float(report.get("at", 0))
            if now - at > BACKLOG_FRESH_S:
                continue
            p = int(as_str(k).rpartition("|")[2])
            since = report.get("zero_since")
            empty = float(report.get("lag", 0)) <= 0 and since is not None and at - float(since) >= IDLE_AFTER_S
            seen[p] = seen.get(p, True) and empty
        return {p for p, idle in seen.items() if idle}

    async def oldest_event(self) -> float | None:
        """The oldest event time recorded in this namespace (epoch seconds), ``None`` before any."""
        v = await self.redis.zscore(C.ns_key(self.namespace, C.EVENT_TIME_KEY), C.EVENT_TIME_OLDEST)
        return None if v is None else float(v)

    async def scopes(self) -> list[str]:
        """Every scope seen in this namespace, sorted by name."""
        return sorted(await self.scope_activity())

    async def scope_activity(self, since: float | None = None) -> dict[str, int]:
        """Scope -> start of the newest bucket that received an article (for the detector).

        :param since: only scopes whose newest bucket starts at or after this time (``None``: all).
        """
        key = C.ns_key(self.namespace, C.SCOPES_KEY)
        if since is None:
            rows = await self.redis.zrange(key, 0, -1, withscores=True)
        else:
            rows = await self.redis.zrangebyscore(key, since, "+inf", withscores=True)
        return {as_str(m): int(sc) for m, sc in rows}

    async def forget_idle_scopes(self, before: float, keep: Collection[str] = (), chunk: int = 1000) -> int:
        """Drop scopes whose newest bucket starts before ``before`` from the scope index (their
        buckets expire on their own); the detector calls it with its cursor minus the longest rule span,
        so a scope it may still need to read is never dropped. News for a dropped scope adds it back.

        :param before: event time (epoch seconds).
        :param keep: scopes to keep regardless (the detector's open alerts and cooldowns).
        :param chunk: scopes per script call.
        :returns: how many were dropped.
        """
        key = C.ns_key(self.namespace, C.SCOPES_KEY)
        idle = [m for m in (as_str(x) for x in await self.redis.zrangebyscore(key, "-inf", f"({before}"))
                if m not in keep]
        removed = 0
        for off in range(0, len(idle), chunk):
            removed += int(await self._forget(keys=[key], args=[before, *idle[off:off + chunk]]))
        return removed

    async def metrics(self) -> dict[str, int]:
        """Counters of this namespace: ``counted``, ``duplicates``, ``syndicated``, ``late``, ``invalid``."""
        raw = await self.redis.hgetall(C.metrics_key(self.namespace))
        got = {as_str(k): int(v) for k, v in raw.items()}
        return {k: got.get(k, 0) for k in C.METRIC_FIELDS}

    async def bucket_series(self, scope: str, start_ts: float, end_ts: float, *,
                            versions: bool = False, hourly: bool = False) -> BucketSeries:
        """Raw per-bucket counters of ``scope`` for the buckets in ``[start_ts, end_ts)``.

        :param scope: a scope (normalised by :func:`finpulse.alerts.windows.normalize_scope`).
        :param start_ts: first bucket's start (rounded down to a boundary).
        :param end_ts: end, exclusive (rounded up to a boundary).
        :param versions: also read the per-model-version counts (slower; otherwise ``mv`` is empty).
        :param hourly: read the hourly roll-ups instead of the buckets (no score sums, no versions).
        """
        s = C.ROLLUP_SECONDS if hourly else self.bucket_seconds
        if hourly and versions:
            raise ValueError("the hourly roll-ups keep no model versions")
        scope = normalize_scope(scope)
        start, end = bucket_start(start_ts, s), bucket_ceil(end_ts, s)
        if end < start:
            raise ValueError("end_ts is before start_ts")
        nb = (end - start) // s
        if nb > MAX_SERIES_BUCKETS:
            raise ValueError(f"query spans {nb} buckets, more than {MAX_SERIES_BUCKETS}")
        rows: list[dict] = []
        head = (C.rollup_key_head if hourly else C.bucket_key_head)(self.namespace, scope)
        H = C.ROLLUP_SECONDS
        if not hourly and not versions and nb * s > 3 * H:
            # long reads (a detector chunk) skip the hours the roll-ups show empty: time follows the
            # data, not the span (both are written by the same script, so they agree); runs of busy
            # hours are read in one call each, and a mostly busy span is read whole
            hours = await self.bucket_series(scope, start, end, hourly=True)
            busy = hours.column("n") > 0
            if busy.mean() <= 0.5:
                counts = np.zeros((nb, len(BucketSeries.FIELDS)), dtype=np.int64)
                edges = np.flatnonzero(np.diff(np.concatenate(([0], busy.astype(np.int8), [0]))))
                for i, j in zip(edges[::2], edges[1::2], strict=True):
                    lo = max(start, hours.start + int(i) * H)
                    hi = min(end, hours.start + int(j) * H)
                    if hi > lo:
                        part = await self._dense_series(scope, lo, hi)
                        counts[(lo - start) // s:(hi - start) // s] = part
                return BucketSeries(scope, start, s, counts=counts)
        if not versions:
            return BucketSeries(scope, start, s, counts=await self._dense_series(scope, start, end, hourly=hourly))
        for off in range(0, nb, 2000):
            keys = [f"{head}{b}" for b in range(start + off * s, min(end, start + (off + 2000) * s), s)]
            pipe = self.redis.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            for raw in await pipe.execute():
                row: dict = {f: 0 for f in C.BUCKET_FIELDS}
                row["mv"] = {}
                for k, v in raw.items():
                    k = as_str(k)
                    if k.startswith(C.MODEL_VERSION_FIELD_PREFIX):
                        row["mv"][k[len(C.MODEL_VERSION_FIELD_PREFIX):]] = int(v)
                    elif k in row:
                        row[k] = int(v)
                rows.append(row)
        return BucketSeries(scope, start, s, rows)

    async def hourly_series_many(self, ranges: Mapping[str, tuple[float, float]]) -> dict[str, BucketSeries]:
        """The hourly roll-ups of several scopes in one round trip (one pipelined script call per scope).

        :param ranges: scope -> ``(start_ts, end_ts)``, as :meth:`bucket_series` with ``hourly=True``.
        :returns: scope -> its series.
        """
        H = C.ROLLUP_SECONDS
        series_calls: list[tuple[list[str], list]] = []
        meta: list[tuple[str, str, int, int]] = []
        for scope, (a, b) in ranges.items():
            sc = normalize_scope(scope)
            start, end = bucket_start(a, H), bucket_ceil(b, H)
            nb = max(0, (end - start) // H)
            if nb > MAX_SERIES_BUCKETS:
                raise ValueError(f"query spans {nb} buckets, more than {MAX_SERIES_BUCKETS}")
            if nb:
                head = C.rollup_key_head(self.namespace, sc)
                series_calls.append(([f"{head}{t}" for t in range(start, end, H)], []))
            meta.append((scope, sc, start, nb))
        replies = iter(await run_scripts(self.redis, self._series, series_calls))
        out: dict[str, BucketSeries] = {}
        width = len(BucketSeries.FIELDS)
        for scope, sc, start, nb in meta:
            counts = _parse_counts(next(replies), nb, sc) if nb else np.zeros((0, width), dtype=np.int64)
            out[scope] = BucketSeries(sc, start, H, counts=counts)
        return out

    async def _dense_series(self, scope: str, start: int, end: int, *, hourly: bool = False) -> np.ndarray:
        """The counters of ``scope`` over ``[start, end)`` (boundaries), one row per bucket or roll-up hour."""
        s = C.ROLLUP_SECONDS if hourly else self.bucket_seconds
        head = (C.rollup_key_head if hourly else C.bucket_key_head)(self.namespace, scope)
        parts: list[np.ndarray] = []
        for off in range(start, end, 2000 * s):
            keys = [f"{head}{b}" for b in range(off, min(end, off + 2000 * s), s)]
            parts.append(_parse_counts(await self._series(keys=keys, args=[]), len(keys), scope))
        return np.concatenate(parts) if parts else np.zeros((0, len(BucketSeries.FIELDS)), dtype=np.int64)

    async def stats(self, scope: str, end_ts: float, window_s: int) -> WindowStats:
        """Counts of ``scope`` over the window ``[end - window_s, end)``.

        :param scope: e.g. ``all``, ``topic:Earnings``, ``ticker:AAPL``.
        :param end_ts: window end, event time (rounded up to a bucket boundary).
        :param window_s: window width, a multiple of the bucket width.
        :returns: :class:`WindowStats` (``negative_rate``/``mean_score`` ``None`` when empty).
        """
        start, end = window_bounds(end_ts, window_s, self.bucket_seconds)
        series = await self.bucket_series(scope, start, end, versions=True)
        return series.window(start, end, with_versions=True)

    async def window_stats(self, scope: str, end_ts: float,
                           windows_s: Sequence[int] = C.DEFAULT_WINDOWS_S) -> dict[int, WindowStats]:
        """Counts of ``scope`` over several windows ending at the same time (one read).

        :param scope: the scope.
        :param end_ts: window end, event time (rounded up to a bucket boundary).
        :param windows_s: window widths (``Settings.windows_s``; default 15 min, 1 h, 24 h).
        :returns: width -> :class:`WindowStats` (without model versions).
        """
        ws = [check_window(w, self.bucket_seconds) for w in windows_s]
        if not ws:
            return {}
        _, end = window_bounds(end_ts, max(ws), self.bucket_seconds)
        series = await self.bucket_series(scope, end - max(ws), end)
        return {w: series.window(end - w, end) for w in ws}

    async def recent_headlines(self, scope: str, k: int = C.RECENT_N) -> list[dict]:
        """The scope's most recently counted headlines, newest event time first.

        :param scope: the scope.
        :param k: how many (at most :data:`finpulse.core.constants.RECENT_N` are kept).
        :returns: dicts with ``id``, ``title``, ``url``, ``source``, ``published_at``, ``sentiment``,
            ``sentiment_score`` and ``topic``.
        """
        raw = await self.redis.lrange(C.recent_key(self.namespace, normalize_scope(scope)), 0, C.RECENT_N - 1)
        rows = [json.loads(as_str(x)) for x in raw]
        rows.sort(key=lambda h: (h["published_at"], h["id"]), reverse=True)
        return rows[:k]

    async def top_negative(self, scope: str, end_ts: float, window_s: int, k: int = C.TOP_K) -> list[dict]:
        """The ``k`` most negative headlines (sentiment ``negative``) of a window.

        :param scope: the scope.
        :param end_ts: window end, event time (rounded up to a bucket boundary).
        :param window_s: window width, a multiple of the bucket width.
        :param k: how many (at most :data:`finpulse.core.constants.TOP_K` are kept per bucket).
        :returns: dicts with ``title``, ``url``, ``source``, ``published_at``, ``sentiment_score``
            and ``id``, most negative first (ties: older first, then id).
        """
        scope = normalize_scope(scope)
        start, end = window_bounds(end_ts, window_s, self.bucket_seconds)
        pipe = self.redis.pipeline(transaction=False)
        for b in range(start, end, self.bucket_seconds):
            pipe.zrange(C.top_negative_key(self.namespace, scope, b), 0, k - 1, withscores=True)
        items = []
        for rows in await pipe.execute():
            for member, score in rows:
                published_at, aid, h = json.loads(as_str(member))
                items.append((int(score), published_at, aid, h))
        items.sort(key=lambda t: t[:3])
        return [t[3] for t in items[:k]]

    async def timeseries(self, scope: str, start_ts: float, end_ts: float, *, step_s: int,
                         window_s: int, with_versions: bool = False) -> list[dict]:
        """Rolling-window statistics of ``scope`` at regular window ends (dashboards, backtests).

        Long ranges are read in chunks, so a year of minute buckets is fine.

        :param scope: the scope.
        :param start_ts: first window end (rounded up to a bucket boundary).
        :param end_ts: last window end, inclusive (rounded up to a bucket boundary).
        :param step_s: distance between window ends, a multiple of the bucket width.
        :param window_s: window width, a multiple of the bucket width.
        :param with_versions: include ``model_versions`` (slower).
        :returns: one :meth:`WindowStats.as_dict` per window end, oldest first (at most
            :data:`MAX_TIMESERIES_POINTS`).
        """
        s = self.bucket_seconds
        step = check_window(step_s, s)
        w = check_window(window_s, s)
        first, last = bucket_ceil(start_ts, s), bucket_ceil(end_ts, s)
        if last < first:
            raise ValueError("end_ts is before start_ts")
        ends = range(first, last + 1, step)
        if len(ends) > MAX_TIMESERIES_POINTS:
            raise ValueError(f"{len(ends)} points requested, more than {MAX_TIMESERIES_POINTS}; use a larger step")
        per_chunk = max(1, 20_000 // (step // s))
        out: list[dict] = []
        for i in range(0, len(ends), per_chunk):
            chunk = ends[i:i + per_chunk]
            series = await self.bucket_series(scope, chunk[0] - w, chunk[-1], versions=with_versions)
            for e in chunk:
                d = series.window(e - w, e, with_versions=with_versions).as_dict()
                if not with_versions:
                    del d["model_versions"]
                out.append(d)
        return out


async def delete_namespace(redis: Any, namespace: str, *, batch: int = 500, allow_live: bool = False) -> int:
    """Delete every key of a namespace (e.g. a finished backtest).

    :param redis: a ``redis.asyncio.Redis``.
    :param namespace: the namespace whose ``finpulse:<namespace>:*`` keys are removed.
    :param batch: keys per ``UNLINK`` (a cluster client sends one per slot).
    :param allow_live: must be ``True`` to delete the ``live`` namespace.
    :returns: number of keys removed.
    """
    if namespace == "live" and not allow_live:
        raise ValueError("refusing to delete the live namespace (pass allow_live=True)")
    pattern = f"{C.prefix(namespace)}:*"
    removed = 0
    buf: list = []

    async def drain() -> int:
        n = int(await redis.unlink(*buf))  # a cluster client splits it by slot
        buf.clear()
        return n

    async for key in redis.scan_iter(match=pattern, count=batch):
        buf.append(key)
        if len(buf) >= batch:
            removed += await drain()
    if buf:
        removed += await drain()
    return removed
