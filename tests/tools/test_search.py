"""The search tool: FTS5 indexing and BM25 ranking, query sanitising, the HTTP retriever, the cache, the CLI."""
import hashlib
import http.server
import json
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from arpo.cli import main
from arpo.config import ToolsConfig
from arpo.tools import search as search_mod
from arpo.tools.search import (
    MAX_QUERY_TERMS,
    CacheError,
    CorpusError,
    HTTPRetriever,
    Passage,
    QueryCache,
    SearchIndex,
    build_index,
    make_search_tool,
    sanitize_query,
)

# No passage contains the words the hostile queries add (and, or, not, near, title, text, drop, ...), so
# those words match nothing and leave every bm25 score unchanged.
FILLER = [
    "The ocean tide rolls over sand at dawn.",
    "A river runs through the old mill town.",
    "Bread dough rises in a warm kitchen.",
    "The violin concert sold every seat.",
    "Pine forests cover the northern hills.",
    "A comet passed close to the planet Mars.",
    "The library keeps maps from many centuries.",
    "Copper wires carry current between the poles.",
    "Farmers harvest wheat late in summer.",
    "The museum shows paintings by Dutch masters.",
    "Trains leave the central station each hour.",
    "Bees collect pollen from clover flowers.",
]
PASSAGES = [
    {"id": "both", "title": "Field notes", "text": "The zebra walked across the glacier in the morning."},
    {"id": "zebra", "title": "Savanna life", "text": "A zebra grazed on the savanna for the whole long day."},
    {"id": "glacier", "title": "Ice", "text": "The glacier slowly carved a deep valley into the rock."},
    {"id": "quokka-title", "title": "Quokka", "text": "A small animal that lives on islands off the coast."},
    {"id": "quokka-text", "title": "Island animals", "text": "The quokka is a small marsupial."},
    {"id": "secret-text", "title": "Diary", "text": "My secret is kept in a locked wooden box."},
    {"id": "secret-title", "title": "Secret", "text": "Some things are better left unsaid by everyone."},
    {"id": "accent", "title": "Logic", "text": "Gödel proved the incompleteness theorems."},
    {"id": "cyrillic", "title": "Москва", "text": "Москва — столица России."},
] + [{"id": f"filler-{i}", "title": f"Filler {chr(65 + i)}", "text": t} for i, t in enumerate(FILLER)]


def _write_corpus(path: Path, records) -> Path:
    lines = (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def index_path(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("search")
    out = tmp / "index.db"
    assert build_index(_write_corpus(tmp / "corpus.jsonl", PASSAGES), out, progress=False) == len(PASSAGES)
    return out


@pytest.fixture
def index(index_path) -> SearchIndex:
    return SearchIndex(index_path, top_k=3)


def _ids(passages: list[Passage]) -> list[str]:
    return [p.id for p in passages]


# ------------------------------------------------------------------------------------------------ ranking


def test_passage_with_both_terms_ranks_first(index):
    result = index.search("zebra glacier", top_k=3)
    assert _ids(result) == ["both", "zebra", "glacier"] or _ids(result) == ["both", "glacier", "zebra"]
    assert result[0].score > result[1].score > 0


def test_title_weight_puts_title_match_first(index, monkeypatch):
    assert _ids(index.search("quokka", top_k=2)) == ["quokka-title", "quokka-text"]
    # The corpus is sensitive to the weight: with title and text weighted equally, the short text match wins.
    monkeypatch.setattr(search_mod, "TITLE_WEIGHT", 1.0)
    assert _ids(index.search("quokka", top_k=2)) == ["quokka-text", "quokka-title"]


def test_stemming_and_diacritics_and_unicode(index):
    assert _ids(index.search("grazing", top_k=5)) == ["zebra"]  # porter: grazing, grazed -> graze
    assert _ids(index.search("Godel", top_k=1)) == ["accent"]  # remove_diacritics 2
    assert _ids(index.search("МОСКВА?", top_k=1)) == ["cyrillic"]  # unicode case folding


def test_top_k_and_formatting(index_path):
    tool = SearchIndex(index_path, top_k=2)
    assert len(tool.search("the")) == 2 and len(tool.search("the", top_k=5)) == 5
    result = tool("zebra glacier")
    assert result.ok and not result.truncated and result.elapsed_s >= 0
    first, second = result.text.split("\n")
    assert first == "Doc 1 (Title: Field notes): The zebra walked across the glacier in the morning."
    assert second.startswith("Doc 2 (Title: ")


def test_no_match_is_ok_and_says_so(index):
    result = index("xylophone")
    assert result.ok and result.text == "No passages found."


def test_sqlite_failure_is_an_error_result(index, monkeypatch):
    def broken(match, k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(index, "_query", broken)
    result = index("zebra")
    assert not result.ok and result.text == "Error: search failed (disk I/O error)"


def test_output_truncated_to_max_bytes(index_path):
    tool = SearchIndex(index_path, top_k=3, max_output_bytes=40)
    result = tool("zebra glacier")
    assert result.ok and result.truncated
    assert result.text.startswith("Doc 1 (Title: Field notes): The zebra")
    assert len(result.text.split("\n…[truncated]")[0].encode()) <= 40


# ----------------------------------------------------------------------------------------------- sanitising

HOSTILE = [
    '"zebra glacier"',
    "zebra AND glacier",
    "zebra OR glacier",
    "zebra NOT glacier",
    "NOT zebra NOT glacier",
    "NEAR(zebra glacier)",
    "NEAR(zebra glacier, 2)",
    "zebra* glacier*",
    "^zebra ^glacier",
    "title:zebra glacier",
    "text:zebra OR title:glacier",
    "{title text}: zebra glacier",
    "(zebra) AND (glacier",
    "-zebra -glacier",
    "zebra + glacier",
    '"zebra" "glacier" "',
    "zebra' glacier''",
    "ZEBRA GLACIER",
    "zebra\nglacier\t",
    "zebra\x00glacier",
    "zebra; DROP TABLE passages; -- glacier",
    "zebra glacier zebra Glacier",
    "zébra glacier",
    "zebra:glacier",
    "passages MATCH zebra glacier",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_query_means_its_words(index, query):
    expected = index.search("zebra glacier", top_k=5)
    got = index.search(query, top_k=5)
    assert _ids(got) == _ids(expected)
    assert [p.score for p in got] == pytest.approx([p.score for p in expected])


JUNK = ["", "   ", '"', '""', "'", "***", "()", "^", "-", ":", "{}", "\x00", "🙂", "_ _", "\u0301"]


@pytest.mark.parametrize("query", JUNK)
def test_query_without_words_is_an_error_result(index, query):
    assert sanitize_query(query) is None
    assert index.search(query) == []
    result = index(query)
    assert not result.ok and result.text == "Error: empty search query"


def test_column_filter_cannot_restrict_and_not_cannot_exclude(index):
    assert "secret-text" in _ids(index.search("title:secret", top_k=5))  # the text-only match is still found
    assert "both" in _ids(index.search("zebra NOT glacier", top_k=5))


def test_sanitize_quotes_lowercases_dedupes_and_caps():
    assert sanitize_query('Zebra "AND" zebra title:x*') == '"zebra" OR "and" OR "title" OR "x"'
    words = [f"w{i}" for i in range(3 * MAX_QUERY_TERMS)]
    assert sanitize_query(" ".join(words)) == " OR ".join(f'"{w}"' for w in words[:MAX_QUERY_TERMS])


# ----------------------------------------------------------------------------------------------- building


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


GOOD = {"id": "a", "title": "A", "text": "alpha"}
BAD_LINES = [
    ('{"id": "b", "title": ', "invalid JSON"),
    ('{"id": "b", "title": "B"}', "missing field 'text'"),
    ('{"id": "b", "title": 7, "text": "beta"}', "field 'title' must be a string, got int"),
    ('{"id": 3, "title": "B", "text": "beta"}', "field 'id' must be a string, got int"),
    ('["b", "B", "beta"]', "expected a JSON object"),
    ("not json at all", "invalid JSON"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES)
def test_malformed_line_names_line_and_field_and_leaves_index(tmp_path, bad, message):
    target = tmp_path / "index.db"
    build_index(_write_corpus(tmp_path / "good.jsonl", [GOOD]), target, progress=False)
    before = _digest(target)
    corpus = _write_corpus(tmp_path / "bad.jsonl", [GOOD, "", bad, GOOD])  # the bad record is on line 3
    with pytest.raises(CorpusError, match=f"bad.jsonl:3: {message}"):
        build_index(corpus, target, progress=False)
    assert _digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.jsonl", "index.db"]  # no temp


def test_invalid_utf8_is_a_corpus_error(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"id": "a", "title": "\xff", "text": "x"}\n')
    with pytest.raises(CorpusError, match="c.jsonl:1: invalid JSON"):
        build_index(corpus, tmp_path / "i.db", progress=False)
    assert not (tmp_path / "i.db").exists()


def test_blank_lines_are_skipped_and_empty_corpus_is_an_error(tmp_path):
    corpus = _write_corpus(tmp_path / "c.jsonl", ["", GOOD, "   ", "\t", {**GOOD, "id": "b"}, ""])
    assert build_index(corpus, tmp_path / "sub" / "i.db", progress=False) == 2
    with pytest.raises(CorpusError, match="no passages"):
        build_index(_write_corpus(tmp_path / "e.jsonl", ["", " "]), tmp_path / "e.db", progress=False)
    assert not (tmp_path / "e.db").exists()


def test_rebuild_replaces_index(tmp_path):
    target = tmp_path / "i.db"
    build_index(_write_corpus(tmp_path / "a.jsonl", [GOOD]), target, progress=False)
    build_index(_write_corpus(tmp_path / "b.jsonl", [{**GOOD, "id": "z", "text": "omega"}]), target, False)
    tool = SearchIndex(target)
    assert tool.search("alpha") == [] and _ids(tool.search("omega")) == ["z"]


def test_missing_or_foreign_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.db.*arpo index"):
        SearchIndex(tmp_path / "nope.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ValueError, match="other.db is not a search index"):
        SearchIndex(other)
    (tmp_path / "junk.db").write_bytes(b"x" * 4096)
    with pytest.raises(ValueError, match="junk.db is not a search index"):
        SearchIndex(tmp_path / "junk.db")


def test_index_is_opened_read_only(index):
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        index._conn().execute("DELETE FROM passages")


def test_concurrent_searches_from_8_threads(index):
    queries = ["zebra glacier", "quokka", "secret", "ocean tide", "glacier", "the", "Gödel", "bees"] * 8
    expected = {q: index.search(q, top_k=3) for q in set(queries)}
    barrier = threading.Barrier(8)

    def run(i):
        if i < 8:  # the first 8 calls start together, each in its own thread
            barrier.wait(timeout=5)
        return queries[i], index.search(queries[i], top_k=3), threading.get_ident()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(len(queries))))
    assert all(got == expected[q] for q, got, _ in results)
    assert len({tid for _, _, tid in results}) == 8


# ------------------------------------------------------------------------------------------------- cache


def test_cache_hits_persist_and_are_keyed_by_top_k(index_path, tmp_path):
    cache = QueryCache(tmp_path / "cache.db")
    tool = SearchIndex(index_path, cache=cache)
    first = tool.search("zebra glacier")
    assert tool.search("Zebra, GLACIER!") == first  # same normalised query
    assert (cache.hits, cache.misses) == (1, 1) and cache.hit_rate == 0.5
    assert len(tool.search("zebra glacier", top_k=1)) == 1 and cache.misses == 2
    cache.close()

    cache2 = QueryCache(tmp_path / "cache.db")
    assert SearchIndex(index_path, cache=cache2).search("zebra glacier") == first
    assert (cache2.hits, cache2.misses) == (1, 0)


def test_cache_is_thread_safe(index_path, tmp_path):
    cache = QueryCache(tmp_path / "cache.db")
    tool = SearchIndex(index_path, cache=cache)
    queries = ["zebra", "glacier", "quokka", "secret"] * 16
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(tool.search, queries))
    assert cache.hits + cache.misses == len(queries) and cache.misses >= 4


def _build_id(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'build_id'").fetchone()[0]
    finally:
        conn.close()


def test_rebuild_at_the_same_path_is_not_served_from_the_cache(tmp_path):
    target, cache = tmp_path / "i.db", QueryCache(tmp_path / "cache.db")
    build_index(_write_corpus(tmp_path / "a.jsonl", [GOOD]), target, progress=False)
    first_build = _build_id(target)
    tool = SearchIndex(target, cache=cache)
    assert _ids(tool.search("alpha")) == ["a"] and _ids(tool.search("alpha")) == ["a"] and cache.hits == 1
    build_index(_write_corpus(tmp_path / "b.jsonl", [{**GOOD, "id": "b"}]), target, progress=False)
    assert _build_id(target) != first_build
    assert _ids(SearchIndex(target, cache=cache).search("alpha")) == ["b"]
    # Each connection keeps its file and cache key; the index's connection in a new thread reads the new file.
    assert _ids(tool.search("alpha")) == ["a"]
    with ThreadPoolExecutor(1) as pool:
        assert _ids(pool.submit(tool.search, "alpha").result()) == ["b"]


def _build_without_meta(corpus: Path, target: Path) -> None:
    """An index as builds before the ``meta`` table made them."""
    build_index(corpus, target, progress=False)
    conn = sqlite3.connect(target)
    conn.execute("DROP TABLE meta")
    conn.commit()
    conn.close()


def test_index_without_build_id_is_keyed_by_path_inode_and_mtime(tmp_path):
    target, cache = tmp_path / "i.db", QueryCache(tmp_path / "cache.db")
    _build_without_meta(_write_corpus(tmp_path / "a.jsonl", [GOOD]), target)
    assert _ids(SearchIndex(target, cache=cache).search("alpha")) == ["a"]
    assert _ids(SearchIndex(target, cache=cache).search("alpha")) == ["a"] and cache.hits == 1
    _build_without_meta(_write_corpus(tmp_path / "b.jsonl", [{**GOOD, "id": "b"}]), target)
    assert _ids(SearchIndex(target, cache=cache).search("alpha")) == ["b"] and cache.misses == 2


def test_corrupt_cache_is_a_clear_error(tmp_path):
    path = tmp_path / "cache.db"
    path.write_bytes(b"this is not a database " * 200)
    with pytest.raises(CacheError, match="cache.db is not a usable SQLite file"):
        QueryCache(path)


# ------------------------------------------------------------------------------------------ HTTP retriever


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    mode = "ok"
    failures_left = 0
    delay_s = 0.0

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payloads: list[dict] = []

    def handle_error(self, request, client_address):  # a client that timed out closed the socket: expected
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        server: _Server = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.payloads.append(payload)
        time.sleep(server.delay_s)
        if server.mode == "fail" or server.failures_left > 0:
            server.failures_left -= 1
            return self._reply(503, b"busy")
        if server.mode == "404":
            return self._reply(404, b"no")
        if server.mode == "garbage":
            return self._reply(200, b"<html>not json")
        if server.mode == "wrong-shape":
            return self._reply(200, json.dumps({"result": [[{"doc": 1}]]}).encode())
        if server.mode == "trickle-headers":  # 60 bytes, one every 0.1 s: each read is well within a timeout
            return self._trickle(b"HTTP/1.0 200 OK\r\n" + b"X-Pad: 1234\r\n" * 3 + b"\r\n")
        if server.mode == "trickle-body":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            return self._trickle(b"x" * 60)
        if server.mode == "huge":
            return self._reply(200, b"x" * 5000)
        if server.mode == "huge-unsized":  # no Content-Length: the body ends when the connection closes
            return self._reply(200, b"x" * 5000, sized=False)
        docs = [
            {"document": {"id": str(i), "contents": f'"Title {i}"\nline one {i}\nline two'}, "score": 1 / (i + 1)}
            for i in range(payload["topk"])
        ]
        self._reply(200, json.dumps({"result": [docs]}).encode(), sized=server.mode != "unsized")

    def _reply(self, code: int, body: bytes, sized: bool = True):
        self.send_response(code)
        if sized:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, data: bytes):
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            time.sleep(0.1)


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/retrieve"
    yield srv
    srv.shutdown()
    srv.server_close()


def _retriever(url, **kw) -> HTTPRetriever:
    kw = {"top_k": 2, "timeout_s": 2.0, "retries": 2, "backoff_s": 0.01, **kw}
    return HTTPRetriever(url, **kw)


def test_http_request_and_search_r1_format(server):
    result = _retriever(server.url)("  who  is\nthe zebra? ")
    assert server.payloads == [{"queries": ["who is the zebra?"], "topk": 2, "return_scores": True}]
    assert result.ok
    expected = "Doc 1 (Title: Title 0): line one 0\nline two\nDoc 2 (Title: Title 1): line one 1\nline two"
    assert result.text == expected
    third = _retriever(server.url).search("zebra", top_k=3)[2]
    assert third == Passage("2", "Title 2", "line one 2\nline two", 1 / 3)


def test_http_retries_then_succeeds(server):
    server.failures_left = 2
    assert _retriever(server.url, retries=2)("zebra").ok
    assert len(server.payloads) == 3


def test_http_gives_up_after_retries(server):
    server.failures_left = 2
    result = _retriever(server.url, retries=1)("zebra")
    assert not result.ok and result.text.startswith("Error: search service unavailable (HTTP 503")
    assert len(server.payloads) == 2


def test_http_timeout_is_an_error_result_after_retries(server):
    server.delay_s = 1.0
    start = time.perf_counter()
    result = _retriever(server.url, timeout_s=0.1, retries=1)("zebra")
    assert not result.ok and "unavailable" in result.text and "2 attempts" in result.text
    assert time.perf_counter() - start < 0.9
    deadline = time.time() + 1.0
    while len(server.payloads) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert len(server.payloads) == 2


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body"])
def test_http_timeout_bounds_the_whole_attempt_not_each_read(server, mode):
    server.mode = mode
    timeout_s, retries, backoff_s = 0.5, 1, 0.01
    start = time.perf_counter()
    result = _retriever(server.url, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)("zebra")
    elapsed = time.perf_counter() - start
    assert not result.ok and "unavailable" in result.text and "2 attempts" in result.text
    assert elapsed < 3 * ((retries + 1) * timeout_s + backoff_s)  # per-read timeouts: 2 x 6 s
    assert len(server.payloads) == 2


@pytest.mark.parametrize("mode", ["huge", "huge-unsized"])
def test_http_oversized_response_is_an_error_result_without_retry(server, monkeypatch, mode):
    monkeypatch.setattr(search_mod, "MAX_RESPONSE_BYTES", 1000)
    server.mode = mode
    result = _retriever(server.url)("zebra")
    assert not result.ok and "response too large (over 1000 bytes)" in result.text
    assert len(server.payloads) == 1


def test_http_response_without_content_length_is_read_to_the_end(server, monkeypatch):
    monkeypatch.setattr(search_mod, "_READ_CHUNK", 7)  # many chunks
    server.mode = "unsized"
    assert _ids(_retriever(server.url).search("zebra", top_k=3)) == ["0", "1", "2"]


@pytest.mark.parametrize("mode", ["garbage", "wrong-shape", "404"])
def test_http_bad_answers_are_error_results_without_retry(server, mode):
    server.mode = mode
    result = _retriever(server.url)("zebra")
    assert not result.ok and result.text.startswith("Error: search service unavailable (")
    assert len(server.payloads) == 1


def test_http_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _retriever(f"http://127.0.0.1:{port}/retrieve", retries=1)("zebra")
    assert not result.ok and "unavailable" in result.text


def test_http_empty_query_makes_no_request(server):
    result = _retriever(server.url)(" ?! ")
    assert not result.ok and result.text == "Error: empty search query" and server.payloads == []


def test_http_cache_persists_and_failures_are_not_cached(server, tmp_path):
    cache = QueryCache(tmp_path / "cache.db")
    server.mode = "fail"
    assert not _retriever(server.url, retries=0, cache=cache)("zebra").ok
    server.mode = "ok"
    assert _retriever(server.url, cache=cache)("zebra").ok  # not served from a cached failure
    assert len(server.payloads) == 2 and (cache.hits, cache.misses) == (0, 2)
    again = _retriever(server.url, cache=QueryCache(tmp_path / "cache.db"))("zebra")
    assert again.ok and len(server.payloads) == 2  # served by the cache file, no request


# ------------------------------------------------------------------------------------------- arguments

BAD_COMMON = [("top_k", 0), ("top_k", -1), ("top_k", 1.5), ("top_k", True), ("max_output_bytes", 0)]
BAD_HTTP = BAD_COMMON + [
    ("timeout_s", 0),
    ("timeout_s", -1.0),
    ("timeout_s", float("inf")),
    ("timeout_s", float("nan")),
    ("retries", -1),
    ("retries", 0.5),
    ("backoff_s", -0.1),
]
NO_SERVER = "http://127.0.0.1:1/retrieve"


@pytest.mark.parametrize("name, value", BAD_COMMON)
def test_index_rejects_bad_arguments(index_path, name, value):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        SearchIndex(index_path, **{name: value})


@pytest.mark.parametrize("name, value", BAD_HTTP)
def test_http_rejects_bad_arguments(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        HTTPRetriever(NO_SERVER, **{name: value})


@pytest.mark.parametrize("top_k", [0, -1, 2.0])
def test_search_rejects_bad_top_k(index, top_k):
    for tool in (index, HTTPRetriever(NO_SERVER)):
        with pytest.raises(ValueError, match="^top_k must be an integer >= 1"):
            tool.search("zebra", top_k=top_k)


def test_search_top_k_none_is_the_default(index_path, server):
    assert len(SearchIndex(index_path, top_k=2).search("the", top_k=None)) == 2
    assert len(_retriever(server.url, top_k=1).search("zebra", top_k=None)) == 1


# --------------------------------------------------------------------------------------- factory and CLI


def test_make_search_tool_prefers_url_then_index_then_default(index_path, tmp_path):
    cfg = ToolsConfig(search_url="http://127.0.0.1:1/retrieve", search_index=str(index_path))
    tool = make_search_tool(cfg)
    assert isinstance(tool, HTTPRetriever) and tool.url.endswith(":1/retrieve")
    cfg = ToolsConfig(search_index=str(index_path), search_top_k=5, search_cache=str(tmp_path / "c.db"))
    tool = make_search_tool(cfg, default_index=tmp_path / "missing.db")
    assert isinstance(tool, SearchIndex) and tool.top_k == 5 and tool.cache.path == tmp_path / "c.db"
    tool = make_search_tool(ToolsConfig(), default_index=index_path)
    assert isinstance(tool, SearchIndex) and tool.index_path == index_path.resolve() and tool.cache is None
    with pytest.raises(ValueError, match="no search backend"):
        make_search_tool(ToolsConfig())


def test_cli_index(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "c.jsonl", PASSAGES)
    assert main(["index", str(corpus), str(tmp_path / "i.db")]) == 0
    assert f"indexed {len(PASSAGES)} passages" in capsys.readouterr().out
    assert _ids(SearchIndex(tmp_path / "i.db").search("quokka", top_k=1)) == ["quokka-title"]


def test_cli_index_bad_corpus_exits_2(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "c.jsonl", [GOOD, {"id": "b", "title": 1, "text": "x"}])
    assert main(["index", str(corpus), str(tmp_path / "i.db")]) == 2
    err = capsys.readouterr().err
    assert "c.jsonl:2: field 'title' must be a string" in err and not (tmp_path / "i.db").exists()
    assert main(["index", str(tmp_path / "missing.jsonl"), str(tmp_path / "i.db")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
