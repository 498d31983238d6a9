"""The evaluation harness without a server: metrics, question files, the runner, the stdlib corpus.

Metric values are computed by hand in the tables below (log2(3) = 1.58496, so a relevant
hit at rank 2 gains 0.63093). The stdlib corpus is judged independently of the code that
built it: Python's `ast` finds the definitions again, and the project's chunker must put
every question's text in a chunk that overlaps its target.
"""

from __future__ import annotations

import ast
import filecmp
import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lampstand.clients.eval_cli import eval_app
from lampstand.indexer.chunking import chunk_file
from lampstand.indexer.evaluation import (
    DEFAULT_MODULES,
    AnswerRow,
    CorpusError,
    CorpusInfo,
    QAFileError,
    RerankerUnavailable,
    RetrievalQuery,
    Target,
    build_stdlib_corpus,
    corpus_bleu,
    evaluate_answers,
    evaluate_retrieval,
    group_queries,
    hit_rate,
    load_answer_qa,
    load_retrieval_qa,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    rouge_l_f1,
)
from lampstand.indexer.evaluation.docstrings import reference_answer, without_names
from lampstand.indexer.evaluation.runner import strip_citations
from lampstand.indexer.evaluation.stdlib_corpus import stdlib_dir
from lampstand.indexer.sources import file_type

A, B, NONE = frozenset({0}), frozenset({1}), frozenset()
AB = frozenset({0, 1})
SMALL_MODULES = ("textwrap", "fnmatch", "shlex", "colorsys", "json", "heapq", "glob", "bisect", "copy")


# --- retrieval metrics ---------------------------------------------------------------------

# (ranked hits, targets, recall@1, recall@3, reciprocal rank, nDCG@10)
RETRIEVAL_CASES = [
    ([A], 1, 1.0, 1.0, 1.0, 1.0),
    ([NONE, A, NONE], 1, 0.0, 1.0, 0.5, 0.63093),
    ([NONE, NONE, A], 1, 0.0, 1.0, 1 / 3, 0.5),
    ([A, A, NONE], 1, 1.0, 1.0, 1.0, 1.0),  # the second chunk of the same target adds nothing
    ([NONE, A, A], 1, 0.0, 1.0, 0.5, 0.63093),
    ([A, NONE, B], 2, 0.5, 1.0, 1.0, 0.91972),  # (1 + 1/2) / (1 + 0.63093)
    ([B, A], 2, 0.5, 1.0, 1.0, 1.0),
    ([A, A], 2, 0.5, 0.5, 1.0, 0.61315),  # 1 / (1 + 0.63093)
    ([AB], 2, 1.0, 1.0, 1.0, 0.61315),  # binary: one hit gains 1 however many targets it covers
    ([NONE] * 10 + [A], 1, 0.0, 0.0, 1 / 11, 0.0),  # found past the nDCG cut-off
    ([NONE] * 3, 1, 0.0, 0.0, 0.0, 0.0),
    ([], 1, 0.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize(("ranked", "targets", "r1", "r3", "rr", "ndcg"), RETRIEVAL_CASES)
def test_retrieval_metrics(ranked: list[frozenset[int]], targets: int, r1: float, r3: float,
                           rr: float, ndcg: float) -> None:
    assert recall_at_k(ranked, targets, 1) == pytest.approx(r1)
    assert recall_at_k(ranked, targets, 3) == pytest.approx(r3)
    assert reciprocal_rank(ranked) == pytest.approx(rr)
    assert ndcg_at_k(ranked, targets, 10) == pytest.approx(ndcg, abs=1e-5)


def test_ndcg_cutoff_and_ideal_capped_at_k() -> None:
    # 12 targets, all found in the first 10: the ideal list also has only 10 places
    assert ndcg_at_k([frozenset({i}) for i in range(10)], 12, 10) == pytest.approx(1.0)
    assert ndcg_at_k([NONE, A], 1, k=1) == 0.0


@pytest.mark.parametrize(("hits", "rate"), [
    ([True, False, None, True], 2 / 3),
    ([False], 0.0),
    ([None, None], None),
    ([], None),
])
def test_hit_rate(hits: list[bool | None], rate: float | None) -> None:
    assert hit_rate(hits) == (pytest.approx(rate) if rate is not None else None)


# --- answer metrics ------------------------------------------------------------------------

# (prediction, reference, ROUGE-L F1, BLEU): BLEU by hand from the n-gram precisions and
# the brevity penalty; sacrebleu smooths the k-th n-gram order with no match to
# 1 / (2**k * n-grams in the prediction), e.g. 4-grams 0/3 -> 1/6 in the second row
TEXT_CASES = [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0, 100.0),
    ("the cat is on the mat", "the cat sat on the mat", 5 / 6, 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25),
    ("the cat sat on the", "the cat sat on the mat", 2 * 5 / 11, 100 * math.exp(1 - 6 / 5)),
    ("a b c d", "a c e", 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3), 100 * (2 / 4 * 1 / 6 * 1 / 8 * 1 / 8) ** 0.25),
    ("dogs bark loudly", "the cat sat on the mat", 0.0, 0.0),
]


@pytest.mark.parametrize(("prediction", "reference", "rouge", "bleu"), TEXT_CASES)
def test_rouge_and_bleu_on_known_pairs(prediction: str, reference: str, rouge: float, bleu: float) -> None:
    assert rouge_l_f1(prediction, reference) == pytest.approx(rouge, abs=1e-4)
    assert corpus_bleu([prediction], [reference]) == pytest.approx(bleu, abs=1e-2)


def test_corpus_bleu_pools_counts_across_sentences() -> None:
    # matches counted over both pairs: 11/12, 8/10, 5/8, 3/6 (no smoothing needed)
    predictions = ["the cat sat on the mat", "the cat is on the mat"]
    references = ["the cat sat on the mat", "the cat sat on the mat"]
    expected = 100 * (11 / 12 * 8 / 10 * 5 / 8 * 3 / 6) ** 0.25
    assert corpus_bleu(predictions, references) == pytest.approx(expected, abs=1e-2)
    assert corpus_bleu([], []) == 0.0
    with pytest.raises(ValueError):
        corpus_bleu(["one"], [])


# --- question files ------------------------------------------------------------------------

GOOD = '{"question": "q", "path": "a.py"}'

# (loader, file content, line named in the error, words the error contains)
BAD_FILES = [
    ("retrieval", GOOD + "\nnot json", 2, "not valid JSON"),
    ("retrieval", "[1, 2]", 1, "expected a JSON object"),
    ("retrieval", GOOD + "\n\n" + '{"path": "a.py"}', 3, "'question' must be a non-empty string"),
    ("retrieval", '{"question": "  ", "path": "a.py"}', 1, "'question' must be a non-empty string"),
    ("retrieval", '{"question": "q"}', 1, "'path' must be a non-empty string"),
    ("retrieval", '{"question": "q", "path": 3}', 1, "'path' must be a non-empty string"),
    ("retrieval", '{"question": "q", "path": "a.py", "start_lines": 1}', 1, "unknown key 'start_lines'"),
    ("retrieval", '{"question": "q", "path": "a.py", "start_line": 1}', 1, "both 'start_line' and 'end_line'"),
    ("retrieval", '{"question": "q", "path": "a.py", "start_line": 0, "end_line": 2}', 1, "positive integer"),
    ("retrieval", '{"question": "q", "path": "a.py", "start_line": true, "end_line": 2}', 1, "positive integer"),
    ("retrieval", '{"question": "q", "path": "a.py", "start_line": "1", "end_line": 2}', 1, "positive integer"),
    ("retrieval", '{"question": "q", "path": "a.py", "start_line": 5, "end_line": 2}', 1, "is after 'end_line'"),
    ("retrieval", '{"question": "q", "path": "/etc/passwd"}', 1, "relative to the indexed root"),
    ("retrieval", '{"question": "q", "path": "../a.py"}', 1, "relative to the indexed root"),
    ("retrieval", '{"question": "q", "path": "C:\\\\a.py"}', 1, "relative to the indexed root"),
    ("retrieval", "\n\n", None, "no questions"),
    ("answers", '{"question": "q"}', 1, "'answer' must be a non-empty string"),
    ("answers", '{"question": "q", "answer": "a", "start_line": 1, "end_line": 2}', 1, "need a 'path'"),
    ("answers", GOOD.replace("}", ', "answer": "a", "score": 1}'), 1, "unknown key 'score'"),
]
LOADERS = {"retrieval": load_retrieval_qa, "answers": load_answer_qa}


@pytest.mark.parametrize(("kind", "content", "line", "problem"), BAD_FILES)
def test_bad_question_files_name_the_line(tmp_path: Path, kind: str, content: str, line: int | None,
                                          problem: str) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(QAFileError) as caught:
        LOADERS[kind](path)
    assert caught.value.line == line
    assert problem in caught.value.message
    assert caught.value.message.startswith(f"{path}:{line}: " if line else f"{path}: ")


def test_missing_question_file(tmp_path: Path) -> None:
    with pytest.raises(QAFileError, match="cannot read"):
        load_retrieval_qa(tmp_path / "absent.jsonl")


def test_question_files_load_and_group(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join([
        '{"question": "Where?", "path": "./docs/a.md", "symbol": "A"}',
        "",
        '{"question": "How?", "path": "b.py", "start_line": 3, "end_line": 9}',
        '{"question": "Where?", "path": "c.py", "start_line": 1, "end_line": 1}',
    ]), encoding="utf-8")
    rows = load_retrieval_qa(path)
    assert [(r.line, r.target.path, r.symbol) for r in rows] == [(1, "docs/a.md", "A"), (3, "b.py", None),
                                                                (4, "c.py", None)]
    assert group_queries(rows) == [
        RetrievalQuery("Where?", (Target("docs/a.md"), Target("c.py", 1, 1))),
        RetrievalQuery("How?", (Target("b.py", 3, 9),)),
    ]
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question": "q", "answer": " a ", "path": "b.py"}\n{"question": "r", "answer": "b"}\n')
    loaded = load_answer_qa(answers)
    assert [(r.answer, r.target) for r in loaded] == [("a", Target("b.py")), ("b", None)]


# (target, hit path, hit lines, matches)
MATCHES = [
    (Target("a.py"), "a.py", (100, 120), True),
    (Target("a.py"), "b.py", (1, 1), False),
    (Target("a.py", 10, 20), "a.py", (20, 30), True),
    (Target("a.py", 10, 20), "a.py", (1, 10), True),
    (Target("a.py", 10, 20), "a.py", (12, 14), True),
    (Target("a.py", 10, 20), "a.py", (1, 40), True),
    (Target("a.py", 10, 20), "a.py", (21, 30), False),
    (Target("a.py", 10, 20), "a.py", (1, 9), False),
    (Target("dir/a.py", 1, 5), "a.py", (1, 5), False),
]


@pytest.mark.parametrize(("target", "path", "lines", "expected"), MATCHES)
def test_hits_match_targets_by_path_and_overlap(target: Target, path: str, lines: tuple[int, int],
                                                expected: bool) -> None:
    assert target.matches(path, *lines) is expected


# --- the runner, with search and rag callables of our own -------------------------------------

def _hit(path: str, start: int, end: int) -> dict[str, Any]:
    return {"path": path, "start_line": start, "end_line": end, "score": 1.0, "text": ""}


CANNED = {
    "dense": {"q1": [_hit("a.py", 1, 5), _hit("b.py", 1, 5)], "q2": [_hit("x.py", 1, 1)]},
    "lexical": {"q1": [_hit("b.py", 1, 5)], "q2": [_hit("x.py", 1, 1), _hit("c.md", 1, 2)]},
    "hybrid": {"q1": [_hit("b.py", 6, 9), _hit("b.py", 1, 5)], "q2": [_hit("c.md", 1, 1)]},
}
QUERIES = [RetrievalQuery("q1", (Target("b.py", 2, 3),)), RetrievalQuery("q2", (Target("c.md"),))]


def canned_search(question: str, mode: str, rerank: bool, top_k: int) -> Sequence[Mapping[str, Any]]:
    assert top_k == 10  # max(k, 10)
    if rerank:
        raise RerankerUnavailable("no reranker model is configured")
    return CANNED[mode][question][:top_k]


def test_runner_scores_modes_side_by_side_and_skips_rerank() -> None:
    seen: list[str] = []
    report = evaluate_retrieval(QUERIES, canned_search, k=3, progress=seen.append)
    by_mode = {mode.name: mode for mode in report.modes}
    assert list(by_mode) == ["dense", "lexical", "hybrid"]
    assert report.skipped == {"hybrid+rerank": "no reranker model is configured"}
    assert by_mode["dense"].recall == {1: 0.0, 3: 0.5}
    assert by_mode["dense"].mrr == pytest.approx(0.25)
    assert by_mode["lexical"].recall == {1: 0.5, 3: 1.0}
    assert by_mode["lexical"].mrr == pytest.approx(0.75)
    assert by_mode["lexical"].ndcg == pytest.approx((1 + 0.63093) / 2, abs=1e-5)
    assert by_mode["hybrid"].mrr == pytest.approx(0.75)
    assert [o.first_rank for o in by_mode["hybrid"].outcomes] == [2, 1]
    assert seen == ["dense"] * 2 + ["lexical"] * 2 + ["hybrid"] * 2
    assert (report.questions, report.k, report.depth) == (2, 3, 10)


def test_runner_scores_answers_and_citations() -> None:
    rows = [AnswerRow("q1", "the cat sat on the mat", Target("a.py", 1, 9), 1),
            AnswerRow("q2", "dogs bark", Target("b.py"), 2),
            AnswerRow("q3", "birds sing", None, 3)]
    sources = [{"id": 1, **_hit("a.py", 5, 6)}, {"id": 2, **_hit("b.py", 1, 2)}]
    answers = {"q1": {"answer": "the cat sat on the mat [1]", "sources": sources, "citations": [1]},
               "q2": {"answer": "dogs bark [1, 2]", "sources": sources[:1], "citations": [1]},
               "q3": {"answer": "birds sing", "sources": [], "citations": []}}
    report = evaluate_answers(rows, lambda question: answers[question])
    assert [o.cited_paths for o in report.outcomes] == [("a.py",), ("a.py",), ()]
    assert [o.citation_hit for o in report.outcomes] == [True, False, None]
    assert report.citation_hit_rate == pytest.approx(0.5)
    assert report.source_hit_rate == pytest.approx(0.5)
    assert report.judged == 2
    assert report.rouge_l == pytest.approx(1.0)  # citation markers are not part of the text scored
    assert report.bleu == pytest.approx(100.0, abs=1e-2)


@pytest.mark.parametrize(("question", "names", "harder"), [
    ("Shallow copy operation on Python objects.", ("copy",), "Shallow operation on Python objects."),
    ("Like `TextWrapper.fill()`, but for one paragraph.", ("fill",), "Like, but for one paragraph."),
    ("SequenceMatcher compares pairs of sequences.", ("SequenceMatcher", "ratio"), "compares pairs of sequences."),
    ("Write an .ini-format form of the state.", ("write",), "Write an .ini-format form of the state."),
    ("Return the copyright notice of copy_tree.", ("copy",), "Return the copyright notice of copy_tree."),
])
def test_harder_wording_drops_the_definition_names(question: str, names: tuple[str, ...], harder: str) -> None:
    assert without_names(question, names) == harder


@pytest.mark.parametrize(("docstring", "reference"), [
    ("Wrap text.\n\n    Lines are cut\n    at words.\n\n    More.", "Wrap text. Lines are cut at words."),
    ("Wrap text. Lines are cut\n    at words.\n\n    More.", "Wrap text. Lines are cut at words."),
    ("Wrap text.", "Wrap text."),
])
def test_reference_answer_is_the_explaining_paragraph(docstring: str, reference: str) -> None:
    assert reference_answer(docstring) == reference


def test_strip_citations() -> None:
    assert strip_citations("It wraps text [1]. See also [2, 3].") == "It wraps text. See also."


# --- the stdlib corpus ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    return build_stdlib_corpus(tmp_path_factory.mktemp("corpus") / "stdlib", modules=SMALL_MODULES,
                               max_questions=60, max_answers=10)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_corpus_copies_the_stdlib_files(corpus: CorpusInfo) -> None:
    sources = [rel for rel in corpus.files if rel.endswith(".py")]
    assert {"textwrap.py", "json/__init__.py", "json/decoder.py", "shlex.py"} <= set(sources)
    for rel in sources:
        assert filecmp.cmp(corpus.root / rel, stdlib_dir() / rel, shallow=False)
    assert corpus.missing == ()
    assert sorted(corpus.modules) == sorted(SMALL_MODULES)
    assert all(file_type(rel) is not None for rel in corpus.files)  # every corpus file is indexable


@pytest.mark.skipif(importlib.util.find_spec("pydoc_data.topics") is None, reason="no pydoc_data here")
def test_corpus_has_reference_topics_as_markdown(corpus: CorpusInfo) -> None:
    from pydoc_data.topics import topics

    docs = [rel for rel in corpus.files if rel.endswith(".md")]
    assert corpus.doc_topics == len(docs) == len(topics)
    text = (corpus.root / "pydoc_topics" / "assert.md").read_text(encoding="utf-8")
    assert text.startswith("# assert\n\n") and "assert" in text[10:]


def _docstring_summaries(source: str, start: int, end: int) -> list[str]:
    tree = ast.parse(source)
    nodes = (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
    return [_flat(ast.get_docstring(n) or "") for n in nodes if start <= n.lineno <= end]


def test_every_question_points_at_its_definition(corpus: CorpusInfo) -> None:
    rows = _rows(corpus.retrieval_qa)
    assert 30 <= len(rows) == corpus.questions <= 60
    assert len({row["question"] for row in rows}) == len(rows)
    for row in rows:
        source = (corpus.root / row["path"]).read_text(encoding="utf-8")
        docstrings = _docstring_summaries(source, row["start_line"], row["end_line"])
        assert any(doc.startswith(row["question"]) for doc in docstrings), row
        assert len(row["question"].split()) >= 5
    assert len(load_retrieval_qa(corpus.retrieval_qa)) == len(rows)  # the validator accepts them


def test_every_question_is_inside_a_chunk_on_its_target(corpus: CorpusInfo) -> None:
    chunks = {}
    for row in _rows(corpus.retrieval_qa):
        if row["path"] not in chunks:
            chunks[row["path"]] = chunk_file(row["path"], (corpus.root / row["path"]).read_text(), "python", "code")
        target = Target(row["path"], row["start_line"], row["end_line"])
        assert any(row["question"] in _flat(c.text) and target.matches(c.path, c.start_line, c.end_line)
                   for c in chunks[row["path"]]), row


def test_harder_wording_and_answers(corpus: CorpusInfo) -> None:
    easy, hard = _rows(corpus.retrieval_qa), _rows(corpus.retrieval_qa_hard)
    assert [{**row, "question": ""} for row in easy] == [{**row, "question": ""} for row in hard]
    for row in hard:
        assert row["symbol"].split(".")[-1] not in row["question"].replace("(", " ").split()
    assert any(e["question"] != h["question"] for e, h in zip(easy, hard, strict=True))
    answers = _rows(corpus.answers_qa)
    assert 0 < len(answers) == corpus.answer_questions <= 10
    by_question = {row["question"]: row for row in easy}
    for row in answers:
        assert row["answer"].startswith(row["question"]) and len(row["answer"]) > len(row["question"])
        assert by_question[row["question"]]["path"] == row["path"]
    assert len(load_answer_qa(corpus.answers_qa)) == len(answers)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_corpus_is_deterministic(tmp_path: Path, corpus: CorpusInfo) -> None:
    again = build_stdlib_corpus(tmp_path / "again", modules=tuple(reversed(SMALL_MODULES)), max_questions=60,
                                max_answers=10)
    assert _tree(again.root) == _tree(corpus.root)
    seeded = [build_stdlib_corpus(tmp_path / f"seed{seed}", modules=SMALL_MODULES, max_questions=10, docs=False,
                                  seed=seed) for seed in (0, 1)]
    assert _rows(seeded[0].retrieval_qa) != _rows(seeded[1].retrieval_qa)
    assert len(_rows(seeded[1].retrieval_qa)) == 10


def test_corpus_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not an empty folder"):
        build_stdlib_corpus(tmp_path, modules=("textwrap",))
    with pytest.raises(CorpusError, match="none of the modules"):
        build_stdlib_corpus(tmp_path / "new", modules=("no_such_module_here",))
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_default_modules_all_ship_with_this_interpreter(tmp_path: Path) -> None:
    info = build_stdlib_corpus(tmp_path / "all", docs=False)
    assert info.missing == ()
    assert len(info.modules) == len(DEFAULT_MODULES) >= 30
    assert info.questions == 200


# --- the CLI, where no server is needed -------------------------------------------------------

def test_cli_corpus_and_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    built = runner.invoke(eval_app, ["corpus", str(tmp_path / "c"), "--module", "textwrap", "--no-docs", "--json"])
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["questions"] >= 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD + "\n" + '{"question": "q"}\n')
    failed = runner.invoke(eval_app, ["retrieval", "docs", "--qa", str(bad), "--url", "http://127.0.0.1:9"])
    assert failed.exit_code == 2
    assert failed.stderr.strip() == f"error: {bad}:2: 'path' must be a non-empty string"
    unreachable = runner.invoke(eval_app, ["retrieval", "docs", "--qa", str(tmp_path / "c" / "qa_retrieval.jsonl"),
                                           "--url", "http://127.0.0.1:9"])
    assert unreachable.exit_code == 2
    assert unreachable.stderr.startswith("error: cannot reach http://127.0.0.1:9")
    assert len(unreachable.stderr.strip().splitlines()) == 1
