"""The search tool: BM25 over a local SQLite FTS5 index or a Search-R1 HTTP retriever, plus a query cache.

``build_index`` turns a JSONL corpus (``{"id", "title", "text"}`` per line) into an FTS5 table once, on disk;
``SearchIndex`` ranks passages by FTS5's ``bm25()`` with the title weighted 2× the text (a title is the name
of the passage's subject, and questions name their subject, so a title hit is stronger evidence than one more
body hit; 2× still lets a body that matches more query terms outrank a title that matches one).
``HTTPRetriever`` asks a Search-R1 retrieval server (``POST {"queries", "topk", "return_scores"}``) instead.
Both format passages the same way (``Doc 1 (Title: …): text``) and can share one persistent ``QueryCache``.

Cache identity: ``build_index`` writes a random build id into a ``meta`` table, and ``SearchIndex`` keys its
cache entries by the build id of the file each connection reads (``fts5:<build id>``), so rebuilding an index
at the same path never serves the old build's passages. An index built before the ``meta`` table existed is
still searchable; it is keyed by path, inode and mtime (``fts5:<path>:<inode>:<mtime_ns>``), which also
changes when ``build_index`` replaces the file (it writes a new file and renames it into place).

Sanitising rule (``sanitize_query``): the model's text is never parsed as FTS5 syntax. Its word tokens (runs
of unicode letters/digits) are lower-cased and de-duplicated, capped at ``MAX_QUERY_TERMS``, each quoted as
an FTS5 string literal and joined with ``OR``. Operators (AND/OR/NOT/NEAR), column filters, ``*``, ``^``,
quotes and brackets therefore either vanish with the punctuation or become plain search words, and bm25 ranks
passages by how many (and how rare) of the query's terms they contain.
"""
from __future__ import annotations

import dataclasses
import functools
import http.client
import io
import json
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from ..config import ToolsConfig
from .base import BUILTIN_SPECS, ToolResult, truncate_utf8

MAX_QUERY_TERMS = 32
MAX_RESPONSE_BYTES = 8 << 20  # an HTTP retriever answer larger than this is an error, not read to the end
_READ_CHUNK = 64 << 10
TITLE_WEIGHT, TEXT_WEIGHT = 2.0, 1.0
# unicode61 folds case and (remove_diacritics 2) accents, so "Gödel" finds "Godel"; porter stems the folded
# tokens, so "founded"/"founder"/"founding" meet. Model queries paraphrase the corpus, and recall matters
# more than precision here: the model reads the top passages itself.
TOKENIZER = "porter unicode61 remove_diacritics 2"
_BATCH_ROWS = 1000
_WORD = re.compile(r"[^\W_]+")  # unicode letters and digits (\w without the underscore)
_FIELDS = ("id", "title", "text")


class CorpusError(ValueError):
    """A corpus line that is not a ``{"id": str, "title": str, "text": str}`` JSON object."""


class CacheError(ValueError):
    """A query-cache file that SQLite cannot use."""


class SearchUnavailable(RuntimeError):
    """The HTTP retriever failed after its retries, or answered something that is not the Search-R1 format."""


@dataclasses.dataclass(frozen=True)
class Passage:
    """One retrieved passage; ``score`` is higher-is-better (negated FTS5 bm25, or the retriever's score)."""

    id: str
    title: str
    text: str
    score: float


def sanitize_query(text: str) -> str | None:
    """Model text → a safe FTS5 MATCH expression (``"tok1" OR "tok2" …``), or None when it has no word."""
    # Lower-cased as unicode61 folds (the expression doubles as the cache key); dict keeps first-seen order.
    terms = list(dict.fromkeys(token.lower() for token in _WORD.findall(text)))[:MAX_QUERY_TERMS]
    # A token is letters/digits only, so it never contains the '"' an FTS5 string literal would need doubled.
    return " OR ".join(f'"{t}"' for t in terms) or None


def format_passages(passages: list[Passage]) -> str:
    if not passages:
        return "No passages found."
    return "\n".join(f"Doc {i} (Title: {p.title}): {p.text}" for i, p in enumerate(passages, 1))


# ----------------------------------------------------------------------------------------------- indexing


def build_index(corpus: str | Path, index: str | Path, progress: bool = True) -> int:
    """Index ``corpus`` (JSONL) into the FTS5 file ``index``; returns the number of passages.

    The index is written to a temporary file next to ``index`` and moved into place only when complete, so a
    crash or a malformed line leaves an existing ``index`` untouched. Blank lines are skipped.
    """
    corpus, index = Path(corpus), Path(index)
    index.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{index.name}.", suffix=".tmp", dir=index.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; an index is shared read-only data
    try:
        count = _write_index(corpus, Path(tmp), progress)
        os.replace(tmp, index)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _write_index(corpus: Path, target: Path, progress: bool) -> int:
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        # No journal and no syncs while building: durability comes from the fsync + rename in the caller.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(
            f"CREATE VIRTUAL TABLE passages USING fts5(id UNINDEXED, title, text, tokenize='{TOKENIZER}')"
        )
        conn.execute("BEGIN")
        count = 0
        for batch in _batches(_read_corpus(corpus, progress), _BATCH_ROWS):
            conn.executemany("INSERT INTO passages(id, title, text) VALUES (?, ?, ?)", batch)
            count += len(batch)
        if count == 0:
            raise CorpusError(f"{corpus}: no passages")
        conn.execute("INSERT INTO passages(passages) VALUES ('optimize')")  # one b-tree: faster queries
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('build_id', ?)", (uuid.uuid4().hex,))  # the cache identity
        conn.execute("COMMIT")
    finally:
        conn.close()
    with open(target, "rb+") as f:
        os.fsync(f.fileno())
    return count


def _read_corpus(corpus: Path, progress: bool) -> Iterator[tuple[str, str, str]]:
    size = corpus.stat().st_size
    with open(corpus, "rb") as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"indexing {corpus.name}", disable=not progress
    ) as bar:
        for lineno, raw in enumerate(f, 1):
            bar.update(len(raw))
            if raw.strip():
                yield _parse_line(raw, corpus, lineno)


def _parse_line(raw: bytes, corpus: Path, lineno: int) -> tuple[str, str, str]:
    where = f"{corpus}:{lineno}"
    try:
        record = json.loads(raw)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise CorpusError(f"{where}: invalid JSON ({err})") from None
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object with fields {_FIELDS}, got {_kind(record)}")
    for field in _FIELDS:
        if field not in record:
            raise CorpusError(f"{where}: missing field {field!r}")
        if not isinstance(record[field], str):
            raise CorpusError(f"{where}: field {field!r} must be a string, got {_kind(record[field])}")
    return record["id"], record["title"], record["text"]


def _kind(value: object) -> str:
    return type(value).__name__


def _batches(rows: Iterator[tuple[str, str, str]], size: int) -> Iterator[list[tuple[str, str, str]]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------------------------- cache


class QueryCache:
    """Persistent (backend, top_k, normalised query) → passages cache in one SQLite file, shared by threads.

    ``backend`` names what answered: ``fts5:<index build id>`` or ``http:<url>``.

    Writes commit at once (WAL mode, so other processes sharing the file keep reading). ``hits``/``misses``
    count lookups since construction; only successful searches are stored.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS search_cache (backend TEXT, top_k INTEGER, query TEXT, "
                "passages TEXT NOT NULL, PRIMARY KEY (backend, top_k, query)) WITHOUT ROWID"
            )
        except sqlite3.DatabaseError as err:
            raise CacheError(f"search cache {self.path} is not a usable SQLite file ({err})") from None

    @property
    def hit_rate(self) -> float:
        return self.hits / max(1, self.hits + self.misses)

    def get(self, backend: str, top_k: int, query: str) -> list[Passage] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT passages FROM search_cache WHERE backend = ? AND top_k = ? AND query = ?",
                (backend, top_k, query),
            ).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return [Passage(**p) for p in json.loads(row[0])]

    def put(self, backend: str, top_k: int, query: str, passages: list[Passage]) -> None:
        value = json.dumps([dataclasses.asdict(p) for p in passages], ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO search_cache VALUES (?, ?, ?, ?)", (backend, top_k, query, value)
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _cached(
    cache: QueryCache | None, backend: str, top_k: int, key: str, compute: Callable[[], list[Passage]]
) -> list[Passage]:
    """``compute()`` through ``cache``; an exception in ``compute`` propagates and stores nothing."""
    if cache is None:
        return compute()
    passages = cache.get(backend, top_k, key)
    if passages is None:
        passages = compute()
        cache.put(backend, top_k, key, passages)
    return passages


def _answer(search: Callable[[str], list[Passage]], query: str, max_output_bytes: int) -> ToolResult:
    """The tool-call wrapper both backends share: empty query and backend failures become ok=False."""
    start = time.perf_counter()
    text, ok = _answer_text(search, query)
    text, truncated = truncate_utf8(text, max_output_bytes)
    return ToolResult(text, ok, time.perf_counter() - start, truncated)


def _answer_text(search: Callable[[str], list[Passage]], query: str) -> tuple[str, bool]:
    if sanitize_query(query) is None:
        return "Error: empty search query", False
    try:
        return format_passages(search(query)), True
    except SearchUnavailable as err:
        return f"Error: search service unavailable ({err})", False
    except sqlite3.Error as err:
        return f"Error: search failed ({err})", False  # the index or the cache file


# -------------------------------------------------------------------------------------------- local BM25


class SearchIndex:
    """BM25 search over an index built by ``build_index``; one read-only SQLite connection per thread.

    Each connection keeps reading the file it opened, even after a rebuild replaces ``index_path``, and its
    cache entries are keyed by that file's build identity (see the module docstring).
    """

    name = "search"
    spec = BUILTIN_SPECS["search"]

    def __init__(
        self,
        index_path: str | Path,
        top_k: int = 3,
        max_output_bytes: int = 2048,
        cache: QueryCache | None = None,
    ):
        _require_int("top_k", top_k, 1)
        _require_int("max_output_bytes", max_output_bytes, 1)
        self.index_path = Path(index_path).resolve()
        if not self.index_path.is_file():
            hint = f"build it with `arpo index CORPUS.jsonl {index_path}`"
            raise FileNotFoundError(f"search index {index_path} does not exist; {hint}")
        self.top_k, self.max_output_bytes, self.cache = top_k, max_output_bytes, cache
        self._uri = self.index_path.as_uri() + "?mode=ro"
        self._local = threading.local()
        self._check()

    def _check(self) -> None:
        try:
            found = self._conn().execute("SELECT 1 FROM sqlite_master WHERE name = 'passages'").fetchone()
        except sqlite3.DatabaseError as err:
            found, reason = None, str(err)
        else:
            reason = "no 'passages' table"
        if found is None:
            raise ValueError(f"{self.index_path} is not a search index ({reason}); rebuild with `arpo index`")

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection; opening it records the build identity of the file it reads."""
        if getattr(self._local, "conn", None) is None:
            stat = self.index_path.stat()  # for an index without a build id (built before ``meta`` existed)
            conn = sqlite3.connect(self._uri, uri=True)
            try:
                build = _build_id(conn) or f"{self.index_path}:{stat.st_ino}:{stat.st_mtime_ns}"
            except BaseException:
                conn.close()
                raise
            self._local.conn, self._local.build = conn, build
        return self._local.conn

    def search(self, query: str, top_k: int | None = None) -> list[Passage]:
        """The ``top_k`` (None: the default) best passages for ``query``; [] when it has no word."""
        k = self.top_k if top_k is None else _require_int("top_k", top_k, 1)
        match = sanitize_query(query)
        if match is None:
            return []
        self._conn()  # sets this thread's build identity
        backend = f"fts5:{self._local.build}"
        return _cached(self.cache, backend, k, match, lambda: self._query(match, k))

    def _query(self, match: str, k: int) -> list[Passage]:
        rows = self._conn().execute(
            f"SELECT id, title, text, bm25(passages, 0.0, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS bm "
            "FROM passages WHERE passages MATCH ? ORDER BY bm, rowid LIMIT ?",
            (match, k),
        ).fetchall()
        return [Passage(pid, title, text, -bm) for pid, title, text, bm in rows]

    def __call__(self, query: str) -> ToolResult:
        return _answer(self.search, query, self.max_output_bytes)


def _build_id(conn: sqlite3.Connection) -> str | None:
    """The build id ``build_index`` stored in the index, or None for an index built without one."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'build_id'").fetchone()
    return None if row is None else str(row[0])


def _require_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _require_seconds(name: str, value: float, allow_zero: bool) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


# ------------------------------------------------------------------------------------------ HTTP retriever


class HTTPRetriever:
    """Client of a Search-R1 retrieval server (``search_r1/search/retrieval_server.py``, ``POST /retrieve``).

    Request ``{"queries": [q], "topk": k, "return_scores": true}``; answer
    ``{"result": [[{"document": {"id", "contents": '"Title"\\ntext'}, "score"}, …]]}``. Connection errors,
    timeouts and 5xx are retried ``retries`` times with exponential backoff; 4xx, malformed answers and
    answers over ``MAX_RESPONSE_BYTES`` are not (they would repeat). ``timeout_s`` is a deadline per
    attempt, not per socket read: reading the status line, headers and body stops ``timeout_s`` after the
    attempt began (connecting and sending, a few hundred bytes, use it as their socket timeout), so a server
    that trickles its answer fails after about ``(retries + 1) * timeout_s`` plus the backoff sleeps.
    """

    name = "search"
    spec = BUILTIN_SPECS["search"]

    def __init__(
        self,
        url: str,
        top_k: int = 3,
        max_output_bytes: int = 2048,
        timeout_s: float = 10.0,
        retries: int = 2,
        cache: QueryCache | None = None,
        backoff_s: float = 0.5,
    ):
        self.url, self.cache = url, cache
        self.top_k = _require_int("top_k", top_k, 1)
        self.max_output_bytes = _require_int("max_output_bytes", max_output_bytes, 1)
        self.timeout_s = _require_seconds("timeout_s", timeout_s, allow_zero=False)
        self.retries = _require_int("retries", retries, 0)
        self.backoff_s = _require_seconds("backoff_s", backoff_s, allow_zero=True)

    def search(self, query: str, top_k: int | None = None) -> list[Passage]:
        """The ``top_k`` (None: the default) passages for ``query``; ``SearchUnavailable`` on failure."""
        k = self.top_k if top_k is None else _require_int("top_k", top_k, 1)
        text = " ".join(query.split())  # a dense retriever reads natural text: only whitespace is normalised
        if sanitize_query(text) is None:
            return []
        return _cached(self.cache, f"http:{self.url}", k, text, lambda: self._fetch(text, k))

    def _fetch(self, query: str, k: int) -> list[Passage]:
        body = json.dumps({"queries": [query], "topk": k, "return_scores": True}).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return _parse_response(self._post(body), k)
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    raise SearchUnavailable(f"HTTP {err.code} {err.reason}") from None
                last = f"HTTP {err.code} {err.reason}"
            except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, dropped connections
                last = f"{type(err).__name__}: {err}"
        raise SearchUnavailable(f"{last}; {self.retries + 1} attempts")

    def _post(self, body: bytes) -> bytes:
        """One attempt, read until ``timeout_s`` after it began; the body, at most ``MAX_RESPONSE_BYTES``."""
        deadline = time.monotonic() + self.timeout_s
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
        with opener.open(request, timeout=self.timeout_s) as response:
            return _read_capped(response, MAX_RESPONSE_BYTES)

    def __call__(self, query: str) -> ToolResult:
        return _answer(self.search, query, self.max_output_bytes)


def _read_capped(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The whole body, or ``SearchUnavailable`` once it is known to exceed ``limit`` bytes."""
    too_large = SearchUnavailable(f"response too large (over {limit} bytes)")
    if response.length is not None and response.length > limit:  # declared by Content-Length
        raise too_large
    chunks, size = [], 0
    while chunk := response.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class _DeadlineReader(io.RawIOBase):
    """A socket reader whose every read times out at ``deadline`` (``time.monotonic()``), not after a gap."""

    def __init__(self, sock, deadline: float):
        super().__init__()
        self._sock, self._raw, self._deadline = sock, sock.makefile("rb", buffering=0), deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out (request deadline)")
        self._sock.settimeout(remaining)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()  # releases the socket, as http.client's own reader does
        super().close()


class _DeadlineSocket:
    """What ``HTTPResponse`` needs of its socket (``makefile``), giving it a ``_DeadlineReader``."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTPResponse that reads its status line, headers and body through a ``_DeadlineReader``."""

    def __init__(self, sock, *args, deadline: float, **kwargs):
        super().__init__(_DeadlineSocket(sock, deadline), *args, **kwargs)


class _DeadlineMixin:
    """A urllib handler (one per attempt) whose connections answer with a ``_DeadlineResponse``."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        def connect(*args, **conn_kwargs):
            conn = http_class(*args, **conn_kwargs)
            conn.response_class = functools.partial(_DeadlineResponse, deadline=self.deadline)
            return conn

        return super().do_open(connect, req, **kwargs)


class _DeadlineHTTPHandler(_DeadlineMixin, urllib.request.HTTPHandler):
    pass


class _DeadlineHTTPSHandler(_DeadlineMixin, urllib.request.HTTPSHandler):
    pass


def _parse_response(raw: bytes, k: int) -> list[Passage]:
    try:
        items = json.loads(raw)["result"][0][:k]
        return [_passage(item["document"], item["score"]) for item in items]
    except (ValueError, LookupError, TypeError, AttributeError) as err:
        raise SearchUnavailable(f"malformed response: {type(err).__name__}: {err}") from None


def _passage(document: dict, score: float) -> Passage:
    title, _, text = document["contents"].partition("\n")
    return Passage(str(document.get("id", "")), title.strip().strip('"'), text, float(score))


# ------------------------------------------------------------------------------------------------ factory


def make_search_tool(cfg: ToolsConfig, default_index: Path | None = None) -> SearchIndex | HTTPRetriever:
    """The configured backend: ``search_url`` if set, else ``search_index``, else ``default_index``."""
    cache = QueryCache(cfg.search_cache) if cfg.search_cache else None
    if cfg.search_url:
        return HTTPRetriever(
            cfg.search_url,
            top_k=cfg.search_top_k,
            max_output_bytes=cfg.max_output_bytes,
            timeout_s=cfg.search_timeout_s,
            retries=cfg.search_retries,
            cache=cache,
        )
    index = cfg.search_index or default_index
    if index is None:
        raise ValueError("no search backend: set tools.search_url, or tools.search_index (see `arpo index`)")
    return SearchIndex(index, cfg.search_top_k, cfg.max_output_bytes, cache)
