"""The index stores on real FAISS, SQLite FTS5 and Qdrant local mode.

Vectors are seeded random unit vectors: these tests are about storage, not embeddings.
Every behaviour both stores share runs once per kind from the `KINDS` table.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lampstand.indexer.chunks import Chunk
from lampstand.indexer.store import (
    MANIFEST_FILE,
    ChunkStore,
    EmbeddingModelMismatch,
    Filters,
    InvalidVectors,
    StoreConflict,
    StoreLocked,
    StoreNotFound,
    StoreReadOnly,
    open_store,
)
from lampstand.indexer.store import store as store_module
from lampstand.indexer.store.faiss_gpu import gpu_count
from lampstand.indexer.store.term_index import with_identifier_parts
from lampstand.plugins.errors import ConfigError


DIM = 32
MODEL = "test-embedder"
# kind -> options that make compaction and layout changes happen at test scale.
KINDS: dict[str, dict[str, object]] = {
    "faiss": {"pending_limit": 8, "pending_ratio": 0.0, "hnsw_threshold": 1000},
    "qdrant": {},
}

Opener = Callable[..., ChunkStore]


def unit_vectors(n: int, seed: int) -> np.ndarray:
    """(n, DIM) float32 unit rows, the same for the same seed."""
    matrix = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def file_chunks(path: str, version: int = 0, count: int = 3) -> list[Chunk]:
    """`count` chunks of one file; each text carries a token unique to path, version, part."""
    language = "markdown" if path.endswith(".md") else "python"
    stem = Path(path).stem
    return [
        Chunk(
            path=path,
            start_line=10 * part + 1,
            end_line=10 * part + 9,
            language=language,
            kind="markdown" if language == "markdown" else "code",
            text=f"{stem} part{part} rev{version} shared words {stem}x{version}y{part}",
            context=(f"section {part}",),
        )
        for part in range(count)
    ]


PATHS = [f"src/mod{i}.py" for i in range(6)] + [f"docs/page{i}.md" for i in range(4)]


def seed_of(path: str, version: int = 0) -> int:
    return PATHS.index(path) * 100 + version if path in PATHS else 9000 + version


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(kind: str, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of `kind` in one directory, closing them all at the end."""
    opened: list[ChunkStore] = []

    def open_(**overrides: object) -> ChunkStore:
        args: dict[str, object] = {
            "kind": kind,
            "embedding_model": MODEL,
            "dim": DIM,
            "writable": True,
            "options": KINDS[kind],
        }
        args.update(overrides)
        directory = args.pop("directory", tmp_path / "index")
        store = open_store(directory, **args)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def fill(store: ChunkStore, paths: list[str] = PATHS) -> dict[str, np.ndarray]:
    """Index every path (3 chunks each) and commit; returns each path's vectors."""
    vectors = {}
    for path in paths:
        vectors[path] = unit_vectors(3, seed_of(path))
        store.replace_file(path, f"hash-{path}", file_chunks(path), vectors[path])
    store.commit()
    return vectors


def test_round_trip_add_search_reopen(opener: Opener) -> None:
    store = opener()
    vectors = fill(store)
    hits = store.search_dense(vectors["src/mod2.py"][1], k=3)
    assert hits[0].chunk == file_chunks("src/mod2.py")[1]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [hit.rank for hit in hits] == [1, 2, 3]
    lexical = store.search_lexical("mod3x0y2", k=5)
    assert [hit.chunk for hit in lexical] == [file_chunks("src/mod3.py")[2]]
    assert store.files() == {path: f"hash-{path}" for path in PATHS}
    store.close()

    reader = opener(writable=False, embedding_model=None, dim=None, kind=None)
    assert reader.stats().chunks == 3 * len(PATHS)
    assert reader.search_dense(vectors["docs/page1.md"][0], k=1)[0].chunk.path == "docs/page1.md"
    assert reader.verify() == []
    with pytest.raises(StoreReadOnly):
        reader.delete_paths(["src/mod1.py"])


@pytest.fixture(params=["probe-exact", "over-fetch"])
def filter_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a filtered dense search can go: exact among few matches, or over-fetch
    (then exact among all matches when over-fetching finds too few)."""
    if request.param == "over-fetch":
        monkeypatch.setattr(store_module, "EXACT_FILTER_LIMIT", 0)
    return str(request.param)


def brute_force(
    vectors: dict[str, np.ndarray], query: np.ndarray, keep: Callable[[str], bool], k: int
) -> list[tuple[str, int]]:
    scored = [
        (float(row @ query), path, part)
        for path, matrix in vectors.items()
        if keep(path)
        for part, row in enumerate(matrix)
    ]
    return [(path, part) for _, path, part in sorted(scored, reverse=True)[:k]]


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (Filters(path_glob="docs/*"), lambda p: p.startswith("docs/")),
        (Filters(language="python"), lambda p: p.endswith(".py")),
        (Filters(path_glob="*mod4*"), lambda p: "mod4" in p),  # selective: exact fallback
        (Filters(path_glob="src/*", language="markdown"), lambda p: False),
    ],
    ids=["glob", "language", "selective", "nothing"],
)
def test_dense_filters_match_brute_force(
    opener: Opener, filter_path: str, filters: Filters, keep: Callable[[str], bool]
) -> None:
    store = opener()
    vectors = fill(store)
    query = unit_vectors(1, 7)[0]
    hits = store.search_dense(query, k=4, filters=filters)
    found = [(hit.chunk.path, (hit.chunk.start_line - 1) // 10) for hit in hits]
    assert found == brute_force(vectors, query, keep, 4)


def test_selective_filter_is_exact(opener: Opener, filter_path: str) -> None:
    store = opener()
    bulk = [Chunk(f"bulk/{i}.txt", 1, 2, "text", "text", f"filler {i}") for i in range(300)]
    store.add(bulk, unit_vectors(300, 11))
    for chunk in bulk:
        store.set_file(chunk.path, "h")
    query = unit_vectors(1, 12)[0]
    # The two rare chunks point away from the query: no over-fetch reaches them.
    rare = [Chunk("rare/far.md", n, n, "markdown", "markdown", f"far {n}") for n in (1, 2)]
    store.replace_file("rare/far.md", "h", rare, -query + 0.05 * unit_vectors(2, 13))
    store.commit()
    hits = store.search_dense(query, k=2, filters=Filters(path_glob="rare/*"))
    assert sorted(hit.chunk.start_line for hit in hits) == [1, 2]
    assert all(hit.score < -0.9 for hit in hits)


def test_lexical_filters_and_hostile_queries(opener: Opener) -> None:
    store = opener()
    fill(store)
    hits = store.search_lexical("shared words", k=50, filters=Filters(path_glob="docs/*"))
    assert {hit.chunk.path for hit in hits} == {p for p in PATHS if p.startswith("docs/")}
    hits = store.search_lexical("part1", k=50, filters=Filters(language="python"))
    assert len(hits) == 6 and all(hit.chunk.language == "python" for hit in hits)
    # FTS5 syntax in user text is just words; identifiers split like the index does.
    for query in ["mod1 AND (part0", '"unbalanced', "NEAR(x y)", "col:mod2 *", "", "  ", "-"]:
        store.search_lexical(query, k=3)
    assert store.search_lexical("mod5 part1", k=1)[0].chunk == file_chunks("src/mod5.py")[1]
    assert (
        store.search_lexical("search_dense mod5x0y1", k=1)[0].chunk == file_chunks("src/mod5.py")[1]
    )


def test_lexical_counts_every_term_stems_and_skips_stop_words(opener: Opener) -> None:
    store = opener()
    fill(store)
    # "shared" is in every chunk: it still counts, and the rarer term decides the order.
    hits = store.search_lexical("the shared page2", k=50)
    assert len(hits) == 30 and {hit.chunk.path for hit in hits[:3]} == {"docs/page2.md"}
    assert len(store.search_lexical("sharing", k=50)) == 30  # porter: shared, sharing -> share
    assert len(store.search_lexical("the", k=50)) == 0  # only stop words: kept, and in no chunk


def test_index_from_before_stemming_is_retokenized_on_open(opener: Opener, tmp_path: Path) -> None:
    store = opener()
    fill(store)
    store.close()
    with sqlite3.connect(tmp_path / "index" / "catalog.sqlite3") as conn:
        conn.executescript(
            "DROP TABLE chunks_fts; CREATE VIRTUAL TABLE chunks_fts USING fts5 (text, context, path, "
            "content = 'chunks', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2');"
            "INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild');")
    reopened = opener()
    assert len(reopened.search_lexical("sharing", k=50)) == 30
    assert [h.chunk for h in reopened.search_lexical("mod5x0y1", k=1)] == [file_chunks("src/mod5.py")[1]]


def test_update_and_delete_files(opener: Opener) -> None:
    store = opener()
    fill(store)
    new_vectors = unit_vectors(2, 4242)
    new = file_chunks("src/mod1.py", version=1, count=2)
    store.replace_file("src/mod1.py", "hash-2", new, new_vectors)
    assert store.delete_paths(["docs/page0.md", "not/indexed.md"]) == 3
    store.commit()
    assert store.search_dense(new_vectors[1], k=1)[0].chunk == new[1]
    assert store.search_lexical("mod1x0y0", k=5) == []
    assert [h.chunk for h in store.search_lexical("mod1x1y0", k=5)] == [new[0]]
    old = unit_vectors(3, seed_of("src/mod1.py"))[0]
    assert all(
        hit.chunk.path != "src/mod1.py" or hit.chunk in new for hit in store.search_dense(old, k=30)
    )
    files = store.files()
    assert files["src/mod1.py"] == "hash-2" and "docs/page0.md" not in files
    assert store.stats().chunks == 3 * len(PATHS) - 3 - 1
    assert store.verify() == []


def test_uncommitted_writes_are_discarded_on_close(opener: Opener) -> None:
    store = opener()
    fill(store, PATHS[:3])
    store.replace_file("src/mod5.py", "h", file_chunks("src/mod5.py"), unit_vectors(3, 1))
    store.delete_paths(["src/mod0.py"])
    assert store.stats().chunks == 9  # the writer sees its own transaction
    store.close()
    reopened = opener()
    assert set(reopened.files()) == set(PATHS[:3])
    assert reopened.search_lexical("mod5", k=5) == []
    assert reopened.verify() == []


def test_rollback_discards_and_writer_continues(opener: Opener) -> None:
    store = opener()
    fill(store, PATHS[:2])
    store.replace_file("src/mod4.py", "h", file_chunks("src/mod4.py"), unit_vectors(3, 3))
    store.rollback()
    assert set(store.files()) == set(PATHS[:2]) and store.verify() == []
    fill(store, ["src/mod4.py"])
    assert store.stats().chunks == 9 and store.verify() == []


@pytest.mark.parametrize(
    "change",
    [
        {"embedding_model": "another-model"},
        {"dim": DIM * 2},
        {"embedding_model": "another-model", "writable": False},
    ],
    ids=["model", "dim", "reader"],
)
def test_model_mismatch_demands_a_rebuild(opener: Opener, change: dict[str, object]) -> None:
    first = opener()
    fill(first, PATHS[:1])
    first.close()
    with pytest.raises(EmbeddingModelMismatch) as caught:
        opener(**change)
    message = str(caught.value)
    assert "test-embedder" in message and "lampstand index rm index" in message
    assert "--rebuild" in message
    assert opener().stats().chunks == 3  # refused, untouched


def test_kind_mismatch_and_unknown_kind(opener: Opener, kind: str, tmp_path: Path) -> None:
    opener().close()
    other = "qdrant" if kind == "faiss" else "faiss"
    with pytest.raises(StoreConflict, match="rebuild"):
        opener(kind=other)
    with pytest.raises(ConfigError, match="unknown index store kind"):
        opener(kind="nope", directory=tmp_path / "other")


def test_single_writer_lock(opener: Opener) -> None:
    first = opener()
    with pytest.raises(StoreLocked, match="another process"):
        opener()
    first.close()
    opener().close()


def test_missing_store_and_bad_options(opener: Opener, kind: str, tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        open_store(tmp_path / "nothing")
    with pytest.raises(StoreNotFound, match="embedding_model and dim"):
        opener(embedding_model=None)
    with pytest.raises(ConfigError, match="no_such_option"):
        opener(options={"no_such_option": 1})


def test_invalid_vectors(opener: Opener) -> None:
    store = opener()
    chunks = file_chunks("src/mod0.py")
    with pytest.raises(InvalidVectors):
        store.add(chunks, unit_vectors(2, 0))
    with pytest.raises(InvalidVectors):
        store.add(chunks, np.full((3, DIM), np.nan, dtype=np.float32))
    with pytest.raises(InvalidVectors):
        store.search_dense(np.ones(DIM + 1, dtype=np.float32))
    assert store.stats().chunks == 0


# -- FAISS specifics -------------------------------------------------------------------------


def faiss_store(tmp_path: Path, **options: object) -> ChunkStore:
    return open_store(
        tmp_path / "index",
        kind="faiss",
        embedding_model=MODEL,
        dim=DIM,
        writable=True,
        options={**KINDS["faiss"], **options},
    )


def manifest(store: ChunkStore) -> dict[str, object]:
    return json.loads((store.directory / MANIFEST_FILE).read_text())


def test_faiss_device_cuda_without_a_gpu_is_refused_and_auto_stays_on_the_cpu(tmp_path: Path) -> None:
    if gpu_count() > 0:
        pytest.skip("faiss sees a GPU here")
    with pytest.raises(ConfigError, match="lampstand\\[index-gpu\\]"):
        faiss_store(tmp_path, device="cuda")
    store = faiss_store(tmp_path, device="auto")
    fill(store, PATHS[:3])  # 9 chunks: past pending_limit, so a base is written
    assert manifest(store)["vectors"]["device"] == "cpu"  # type: ignore[index]


def test_hnsw_chosen_above_threshold_and_recorded(tmp_path: Path) -> None:
    store = faiss_store(tmp_path, hnsw_threshold=12, hnsw_m=8, hnsw_ef_search=32)
    fill(store, PATHS[:3])  # 9 chunks: exact search
    assert manifest(store)["vectors"]["kind"] == "flat"  # type: ignore[index]
    vectors = fill(store, PATHS[3:])  # 30 chunks: HNSW
    record = manifest(store)["vectors"]
    assert record["kind"] == "hnsw" and record["M"] == 8 and record["ef_search"] == 32  # type: ignore[index]
    assert record["metric"] == "inner_product" and record["hnsw_threshold"] == 12  # type: ignore[index]
    assert (
        store.search_dense(vectors["docs/page3.md"][2], k=1)[0].chunk
        == file_chunks("docs/page3.md")[2]
    )
    # Deleting below half the threshold, past the tombstone ratio, rebuilds as flat.
    store.delete_paths(PATHS[1:])
    store.commit(compact=True)
    assert manifest(store)["vectors"]["kind"] == "flat"  # type: ignore[index]
    assert store.stats().chunks == 3 and store.verify() == []


def test_small_update_does_not_rewrite_the_base(tmp_path: Path) -> None:
    store = faiss_store(tmp_path, pending_limit=100)
    fill(store)
    store.commit(compact=True)
    base = store.stats().vectors["file"]
    mtime = (store.directory / base).stat().st_mtime_ns
    store.replace_file("src/mod2.py", "h2", file_chunks("src/mod2.py", 1), unit_vectors(3, 77))
    store.commit()
    vectors = store.stats().vectors
    assert vectors["file"] == base and (store.directory / base).stat().st_mtime_ns == mtime
    assert vectors["pending"] == 3 and vectors["tombstones"] == 3
    assert (
        store.search_dense(unit_vectors(3, 77)[0], k=1)[0].chunk == file_chunks("src/mod2.py", 1)[0]
    )
    store.commit(compact=True)
    assert store.stats().vectors["tombstones"] == 0  # flat: removed in place
    assert sorted(p.name for p in store.directory.glob("vectors.*")) == [
        store.stats().vectors["file"]
    ]
    store.close()


def test_reader_follows_writer_commits(tmp_path: Path) -> None:
    writer = faiss_store(tmp_path)
    fill(writer, PATHS[:2])
    reader = open_store(tmp_path / "index")
    vectors = unit_vectors(3, 5)
    writer.replace_file("src/mod5.py", "h", file_chunks("src/mod5.py"), vectors)
    assert reader.search_lexical("mod5", k=3) == []  # not committed yet
    writer.commit(compact=True)  # new base generation; the old file is unlinked
    assert reader.search_dense(vectors[0], k=1)[0].chunk.path == "src/mod5.py"
    assert reader.generation == writer.generation and reader.verify() == []
    reader.close()
    writer.close()


def zipf_chunks(count: int, seed: int) -> list[Chunk]:
    """Chunks of 8-40 words drawn from 60 words with Zipf-like frequencies: common and rare terms."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(60)]
    weights = 1.0 / np.arange(1, 61)
    return [Chunk(path=f"notes/n{i}.md", start_line=1, end_line=2, language="markdown", kind="markdown",
                  text=" ".join(rng.choice(words, size=int(rng.integers(8, 40)), p=weights / weights.sum())))
            for i in range(count)]


def test_term_index_top_k_is_the_full_ranking_cut(tmp_path: Path) -> None:
    store = faiss_store(tmp_path)
    chunks = zipf_chunks(400, 1)
    store.add(chunks, unit_vectors(len(chunks), 2))
    store.commit()
    rng = np.random.default_rng(3)
    for _ in range(25):
        query = " ".join(f"w{i}" for i in rng.integers(0, 60, size=int(rng.integers(1, 6))))
        everything = store.search_lexical(query, k=400)
        assert everything and all(a.score >= b.score for a, b in zip(everything, everything[1:]))
        for k in (1, 5, 20):
            top = store.search_lexical(query, k=k)
            assert [round(h.score, 4) for h in top] == [round(h.score, 4) for h in everything[:k]], query
    store.close()


def test_filtered_lexical_search_is_the_full_ranking_restricted(tmp_path: Path) -> None:
    """The term index ranks filtered searches too: the same scores as unfiltered, minus what fails."""
    store = faiss_store(tmp_path)
    chunks = [replace(chunk, path=f"{'docs' if i % 3 else 'src'}/n{i}.md", language="python" if i % 2 else "markdown")
              for i, chunk in enumerate(zipf_chunks(300, 2))]
    store.add(chunks, unit_vectors(len(chunks), 2))
    store.commit()
    cases: list[tuple[Filters, Callable[[Chunk], bool]]] = [
        (Filters(path_glob="docs/*"), lambda c: c.path.startswith("docs/")),
        (Filters(language="python"), lambda c: c.language == "python"),
        (Filters(path_glob="src/*", language="markdown"), lambda c: c.path.startswith("src/") and c.language == "markdown"),
    ]
    for query in ("w1 w7 w30", "w45", "w2 w59"):
        everything = store.search_lexical(query, k=300)
        for filters, keep in cases:
            expected = [(h.row_id, round(h.score, 4)) for h in everything if keep(h.chunk)][:10]
            got = [(h.row_id, round(h.score, 4)) for h in store.search_lexical(query, k=10, filters=filters)]
            assert got == expected and got, (query, filters)
    assert store.search_lexical("w1", k=5, filters=Filters(path_glob="nowhere/*")) == []
    store.close()


def test_camel_case_identifiers_are_found_by_their_words(tmp_path: Path) -> None:
    assert with_identifier_parts("fs.readFileSync(path) HTTPServer JSON utf8") == (
        "fs.readFileSync read File Sync(path) HTTPServer HTTP Server JSON utf8")
    store = faiss_store(tmp_path)
    texts = ["Call `fs.readFileSync(path)` to get the bytes.", "Streams emit `drain` when the buffer empties.",
             "A readme about sync calls."]
    chunks = [Chunk(path=f"api/p{i}.md", start_line=1, end_line=1, language="markdown", kind="markdown", text=text)
              for i, text in enumerate(texts)]
    store.add(chunks, unit_vectors(len(chunks), 2))
    store.commit()
    assert [h.chunk.text for h in store.search_lexical("reads a file", k=3)] == [texts[0]]
    assert store.search_lexical("readFileSync", k=1)[0].chunk.text == texts[0]
    assert [h.chunk.text for h in store.search_lexical("file sync", k=3)] == [texts[0], texts[2]]
    store.close()


def test_word_pairs_rank_prose_where_the_words_stand_together(tmp_path: Path) -> None:
    store = faiss_store(tmp_path)
    texts = ["Each request waits in the queue; pull the latest tags first.",  # both words, apart
             "Open a pull request against the main branch.",  # the pair
             "Reviewers merge the pull requests they approve.",  # the pair, stemmed
             "def pull_request(): open a pull request"]  # code: no word pairs
    chunks = [Chunk(path=f"guide/p{i}.md", start_line=1, end_line=1, language="markdown", kind="markdown", text=text)
              for i, text in enumerate(texts[:3])]
    chunks.append(Chunk(path="src/git.py", start_line=1, end_line=2, language="python", kind="code", text=texts[3]))
    store.add(chunks, unit_vectors(len(chunks), 2))
    store.commit()
    pairs = store.search_phrases("how do I open a pull request?", k=10)
    assert {h.chunk.text for h in pairs} == {texts[1], texts[2]}
    assert pairs[0].chunk.text == texts[1]  # also has open_pull
    assert store.search_phrases("pull request", k=10, filters=Filters(path_glob="src/*")) == []
    assert store.search_phrases("request", k=10) == []  # one word makes no pair
    assert {h.chunk.text for h in store.search_lexical("pull request", k=10)} == set(texts)
    store.close()


def test_term_index_out_of_step_is_not_used_and_is_rebuilt(tmp_path: Path) -> None:
    """A crash between the catalog's commit and the term index's leaves its stamp behind: readers
    answer from FTS5 meanwhile, and the next writer rebuilds it; so does a damaged one."""
    writer = faiss_store(tmp_path)
    fill(writer)
    expected = [file_chunks("src/mod4.py")[1], file_chunks("docs/page3.md")[2]]
    assert [h.chunk for h in writer.search_lexical("mod4x0y1 page3x0y2", k=4)] == expected
    writer.close()
    stamp = tmp_path / "index" / "lexical" / "generation"
    stamp.write_text(stamp.read_text().replace(" ", " 9"))
    reader = open_store(tmp_path / "index")
    assert [h.chunk for h in reader.search_lexical("mod4x0y1 page3x0y2", k=4)] == expected
    reader.close()
    for damage in ("stamp", "folder"):
        if damage == "folder":
            for entry in (tmp_path / "index" / "lexical").iterdir():
                if entry.is_file():
                    entry.write_bytes(b"not an index")
        writer = faiss_store(tmp_path)
        assert writer.verify() == [] and stamp.read_text().split()[-1] == str(writer.generation)
        assert [h.chunk for h in writer.search_lexical("mod4x0y1 page3x0y2", k=4)] == expected
        writer.close()


def test_a_writer_searches_its_own_uncommitted_chunks(tmp_path: Path) -> None:
    store = faiss_store(tmp_path)
    fill(store, PATHS[:2])
    store.replace_file("src/mod5.py", "h", file_chunks("src/mod5.py"), unit_vectors(3, 5))
    store.delete_paths(["src/mod0.py"])
    assert [h.chunk.path for h in store.search_lexical("mod5x0y2 mod0x0y2", k=5)] == ["src/mod5.py"]
    store.rollback()
    assert [h.chunk.path for h in store.search_lexical("mod5x0y2 mod0x0y2", k=5)] == ["src/mod0.py"]
    store.close()


def test_importing_the_package_loads_no_backend() -> None:
    code = (
        "import sys, lampstand.indexer.store as s; "
        "print(sorted(m for m in ('faiss', 'qdrant_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_qdrant_local_mode_is_one_process_at_a_time(tmp_path: Path) -> None:
    writer = open_store(
        tmp_path / "q", kind="qdrant", embedding_model=MODEL, dim=DIM, writable=True
    )
    fill(writer, PATHS[:2])
    with pytest.raises(StoreLocked, match="one process at a time"):
        open_store(tmp_path / "q")
    writer.close()
    with open_store(tmp_path / "q") as reader:
        assert reader.stats().vectors["points"] == 6 and reader.verify() == []


def test_qdrant_replays_deletes_a_dead_writer_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lampstand.indexer.store.qdrant_store import QdrantVectors

    writer = open_store(
        tmp_path / "q", kind="qdrant", embedding_model=MODEL, dim=DIM, writable=True
    )
    fill(writer, PATHS[:3])
    # As if killed right after the catalog committed the deletes, before Qdrant heard of them.
    monkeypatch.setattr(QdrantVectors, "finish_commit", lambda self: None)
    writer.delete_paths(["src/mod1.py"])
    writer.commit()
    assert writer.stats().vectors["points"] == 9 and writer.verify() == []
    writer.close()
    monkeypatch.undo()
    with open_store(tmp_path / "q", writable=True) as reopened:
        assert reopened.stats().vectors["points"] == 6 and reopened.verify() == []


def test_newer_format_is_refused(tmp_path: Path) -> None:
    faiss_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "index" / "catalog.sqlite3") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(StoreConflict, match="newer than this lampstand reads"):
        open_store(tmp_path / "index")
