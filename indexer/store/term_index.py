"""The ranked lexical index: BM25 over every query term with exact top-k pruning (tantivy).

FTS5 scores every row that holds any query term, so a question over 100k chunks costs about
100 ms; tantivy keeps each posting block's best score and skips blocks that cannot reach the
top k (block-max WAND), so the ranking is the full BM25 ranking, found in about a millisecond.

The index is derived: the catalog's chunk rows are the truth. It lives in `lexical/` beside
the catalog, and `lexical/generation` names the catalog generation it matches, written after
each of its commits. A writer whose index is missing or names another generation (made before
this index existed, or a crash between the catalog's commit and this one) rebuilds it from the
rows; a reader whose index is not at the catalog's generation answers from FTS5 instead. A
filtered search ranks here too, over the rows the catalog lets through (so path globs keep
SQLite's GLOB rules). Words are split on anything not a letter or digit, lower-cased, stripped
of diacritics and stemmed (Snowball English); a chunk's text, context and path are three
fields, each with its own BM25 and weight. A camelCase identifier is indexed whole and as its
words (`readFileSync` also as `read`, `file`, `sync`), in chunks and in queries alike, so
"reads a file" finds `readFile` and `readFile` still finds itself first (on the development
split, lexical recall@10 went from 0.794 to 0.843 on notes and from 0.750 to 0.812 on code).

Prose chunks (every kind but code) also carry their word pairs: each two neighbouring words
that are not stop words, stemmed (`pull_request`, `read_file` from "reads the file"), in a
fourth field that `search_phrases` ranks by BM25 as well. It stands in for phrase search, which
would need token positions; hybrid search fuses its ranking as a third one.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..chunks import Chunk
from .durable import write_file_atomically
from .lexical import MAX_TERMS, STOP_WORDS, query_terms

__all__ = ["FOLDER", "TermIndex", "available", "with_identifier_parts"]

FOLDER = "lexical"
STAMP_FILE = "generation"
SCHEMA_VERSION = 3  # bump when fields or the analyzer change: every writer then rebuilds
ANALYZER = "lampstand_en"
PAIR_ANALYZER = "lampstand_pairs"
FIELDS = ("text", "context", "path")
PAIRS = "pairs"  # word pairs of prose chunks (see the module's docstring)
# Each field has its own BM25 (its own lengths), so the short heading or symbol path and the
# file path saturate fast and need less weight than in FTS5, where they share one length;
# chosen on the development split of bench/retrieval_quality.py.
FIELD_WEIGHTS = (1.0, 0.5, 0.25)
WRITER_HEAP = 48_000_000  # bytes tantivy buffers before it writes a segment
REBUILD_BATCH = 2000
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_WORD_PART = re.compile(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z0-9]+")  # HTTPServer: HTTP, Server
_PAIR_WORD = re.compile(r"[^\W_]+")  # as lexical.query_terms splits; the analyzer folds accents


def with_identifier_parts(text: str) -> str:
    """`text` with the words of each camelCase identifier after it: `readFileSync read File Sync`."""

    def spelled_out(match: re.Match[str]) -> str:
        word = match.group(0)
        parts = _WORD_PART.findall(word)
        return word if len(parts) < 2 else f"{word} {' '.join(parts)}"

    return _WORD.sub(spelled_out, text)


def available() -> bool:
    """Whether tantivy is installed (the `index` extra); without it FTS5 answers everything."""
    try:
        import tantivy  # noqa: F401
    except ImportError:
        return False
    return True


def _analyzer() -> Any:
    import tantivy

    return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.ascii_fold())
            .filter(tantivy.Filter.stemmer("english"))
            .build())


def _pair_analyzer() -> Any:
    import tantivy

    return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).filter(tantivy.Filter.remove_long(81)).build()


def _register(index: Any) -> None:
    index.register_tokenizer(ANALYZER, _analyzer())
    index.register_tokenizer(PAIR_ANALYZER, _pair_analyzer())


def _schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("row", indexed=True, fast=True)
    for field in FIELDS:
        builder.add_text_field(field, tokenizer_name=ANALYZER, index_option="freq")
    builder.add_text_field(PAIRS, tokenizer_name=PAIR_ANALYZER, index_option="freq")
    return builder.build()


def _stamp(generation: int) -> str:
    return f"{SCHEMA_VERSION} {generation}\n"


class TermIndex:
    """One store's tantivy index: a writer's (adds, deletes, commits) or a reader's."""

    def __init__(self, directory: Path, index: Any) -> None:
        self.folder = directory / FOLDER
        self._index = index
        self._writer: Any = None
        self._analyzer = _analyzer()
        self._schema = index.schema
        self._searcher = index.searcher()
        self._loaded: int | None = None  # the generation the searcher was loaded at

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path) -> TermIndex | None:
        """The index in `directory/lexical`, or None when there is none, it cannot be read, or
        tantivy is not installed. Whether it matches the catalog is `matches(generation)`; a
        writer replaces one that does not with `rebuilt`."""
        if not available():
            return None
        import tantivy

        folder = directory / FOLDER
        if not (folder.is_dir() and tantivy.Index.exists(str(folder))):
            return None
        try:
            index = tantivy.Index.open(str(folder))
        except (ValueError, OSError):
            return None
        _register(index)
        index.config_reader(reload_policy="manual")
        return cls(directory, index)

    def matches(self, generation: int) -> bool:
        """Whether the committed index holds exactly the catalog's rows at `generation`."""
        try:
            return (self.folder / STAMP_FILE).read_text() == _stamp(generation)
        except OSError:
            return False

    def ready(self, generation: int) -> bool:
        """Whether searches can be answered for catalog `generation`: the index was committed
        at it, and the searcher loaded since (the stamp is read before the reload)."""
        if self._loaded == generation:
            return True
        if not self.matches(generation):
            return False
        self._reload(generation)
        return True

    # -- writes ----------------------------------------------------------------------------

    def _writer_handle(self) -> Any:
        if self._writer is None:
            self._writer = self._index.writer(heap_size=WRITER_HEAP, num_threads=1)
        return self._writer

    def add(self, row_ids: Iterable[int], chunks: Sequence[Chunk]) -> None:
        """Index `chunks` under their catalog row ids (visible after `commit`)."""
        import tantivy

        writer = self._writer_handle()
        for row_id, chunk in zip(row_ids, chunks, strict=True):
            document = tantivy.Document()
            document.add_unsigned("row", int(row_id))
            document.add_text("text", with_identifier_parts(chunk.text))
            document.add_text("context", with_identifier_parts(" ".join(chunk.context)))
            document.add_text("path", chunk.path)
            if chunk.kind != "code":
                pairs = self.word_pairs(" ".join(chunk.context) + "\n" + chunk.text)
                document.add_text(PAIRS, " ".join(pairs))
            writer.add_document(document)

    def word_pairs(self, text: str) -> list[str]:
        """Each two neighbouring words of `text` that are not stop words, stemmed: `read_file`.

        Words are taken as written (a camelCase identifier stays one word), so that a pair does
        not depend on how a word is capitalised."""
        words = (word for word in _PAIR_WORD.findall(text.casefold()) if word not in STOP_WORDS)
        stems = [stem for word in words for stem in self._analyzer.analyze(word)]
        return [f"{first}_{second}" for first, second in zip(stems, stems[1:])]

    def remove(self, row_ids: Iterable[int]) -> None:
        """Drop the chunks of `row_ids` (at `commit`)."""
        writer = self._writer_handle()
        for row_id in row_ids:
            writer.delete_documents_by_term("row", int(row_id))

    def commit(self, generation: int) -> None:
        """Publish the pending writes and stamp the index as matching catalog `generation`."""
        self._loaded = None
        self._writer_handle().commit()
        write_file_atomically(self.folder / STAMP_FILE, _stamp(generation).encode("ascii"))
        self._reload(generation)

    def rollback(self) -> None:
        """Discard the pending writes."""
        if self._writer is not None:
            self._writer.rollback()

    @classmethod
    def rebuilt(cls, directory: Path, rows: Iterable[tuple[int, Chunk]], generation: int) -> TermIndex:
        """A new index in place of whatever was there (another schema, a damaged or stale
        one), holding `rows` ((row id, chunk) pairs) and stamped with catalog `generation`."""
        import tantivy

        folder = directory / FOLDER
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        index = tantivy.Index(_schema(), path=str(folder), reuse=False)
        _register(index)
        index.config_reader(reload_policy="manual")
        terms = cls(directory, index)
        batch: list[tuple[int, Chunk]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= REBUILD_BATCH:
                terms.add([r for r, _ in batch], [c for _, c in batch])
                batch.clear()
        terms.add([r for r, _ in batch], [c for _, c in batch])
        terms.commit(generation)
        return terms

    # -- reads -----------------------------------------------------------------------------

    def _reload(self, generation: int) -> None:
        self._index.reload()
        self._searcher = self._index.searcher()
        self._loaded = generation

    def document_count(self) -> int:
        """How many chunks the committed index holds."""
        return int(self._searcher.num_docs)

    def search(self, query: str, k: int, only: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """Up to `k` (row id, BM25 score), best first; ties go to the lower row id.

        With `only` (row ids), only those rows may match (a filter the catalog resolved): the ranking is
        the full one restricted to them, scores unchanged.
        """
        import tantivy

        words = query_terms(with_identifier_parts(query))
        terms = dict.fromkeys(stem for term in words for stem in self._analyzer.analyze(term))
        clauses = []
        for term in terms:
            for field, weight in zip(FIELDS, FIELD_WEIGHTS, strict=True):
                clause = tantivy.Query.term_query(self._schema, field, term, index_option="freq")
                clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(clause, weight)))
        return self._ranked(clauses, k, only)

    def search_phrases(self, query: str, k: int, only: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """Like `search`, over the word pairs of the query and of the prose chunks."""
        import tantivy

        pairs = list(dict.fromkeys(self.word_pairs(query)))[:MAX_TERMS]
        clauses = [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, PAIRS, pair, index_option="freq"))
                   for pair in pairs]
        return self._ranked(clauses, k, only)

    def _ranked(self, clauses: list[tuple[Any, Any]], k: int, only: Sequence[int] | None) -> list[tuple[int, float]]:
        import tantivy

        if not clauses or k <= 0:
            return []
        ranked_query = tantivy.Query.boolean_query(clauses)
        if only is not None:
            allowed = tantivy.Query.const_score_query(tantivy.Query.term_set_query(self._schema, "row", list(only)), 0.0)
            ranked_query = tantivy.Query.boolean_query([(tantivy.Occur.Must, ranked_query),
                                                        (tantivy.Occur.Must, allowed)])
        found = self._searcher.search(ranked_query, k, count=False).hits
        rows = self._searcher.fast_field_values("row", [address for _, address in found])
        ranked = [(int(row), float(score)) for (score, _), row in zip(found, rows, strict=True) if row is not None]
        return sorted(ranked, key=lambda pair: (-pair[1], pair[0]))

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Discard pending writes and let go of tantivy's writer lock."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.rollback()
            writer.wait_merging_threads()
