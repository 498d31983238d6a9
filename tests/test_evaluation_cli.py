"""`lampstand eval` against a real server: a stdlib corpus indexed with `lampstand index add`,
then scored with `lampstand eval retrieval` and `lampstand eval answers`, all through the CLI.

The main server has an embedder and a chat model but no reranker, so hybrid+rerank is reported
as skipped; a second one serves a cross-encoder (built from the bundled MiniLM, untrained, so
its order means nothing) to show the fourth column.

The questions are docstring summaries that stand verbatim in the indexed text. On these 29
questions (CPython 3.11) every mode found every target within 5 hits, with MRR
0.90 dense, 0.97 lexical and 0.93 hybrid; the floors below leave room for another
interpreter's slice and still catch a broken pipeline (wrong paths or line ranges score 0).
The answer test only checks that answers are scored: the bundled 135M chat model rarely cites.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import MINILM, SMOLLM, RunningServer, start_server, stop_server
from cross_encoder import build_cross_encoder
from lampstand.indexer.evaluation import CorpusInfo, build_stdlib_corpus

INDEX = "stdlib"
MODULES = ("textwrap", "fnmatch", "shlex", "colorsys", "heapq", "bisect", "glob")
LAMPSTAND = [sys.executable, "-m", "lampstand.clients"]

# mode -> (recall@10, MRR) floors
RETRIEVAL_FLOORS = {"dense": (0.8, 0.6), "lexical": (0.9, 0.8), "hybrid": (0.8, 0.7)}
ANSWERED = 2  # questions sent to the chat model (each takes seconds on two cores)


def config(tmp: Path, reranker: Path | None = None) -> str:
    rerank = f'''
[[models]]
id = "reranker"
plugin = "sentence_transformers"
path = "{reranker}"
''' if reranker else ""
    return f"""
[indexes]
dir = "{tmp / 'indexes'}"
source_roots = ["{tmp}"]
rerank_candidates = 10

[[models]]
id = "minilm"
plugin = "sentence_transformers"
path = "{MINILM}"

[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 2048
n_threads = 2
""" + rerank


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluation")


@pytest.fixture(scope="module")
def corpus(workdir: Path) -> CorpusInfo:
    return build_stdlib_corpus(workdir / "corpus", modules=MODULES, docs=False, max_questions=40, max_answers=4)


@pytest.fixture(scope="module")
def eval_server(workdir: Path) -> Iterator[RunningServer]:
    running = start_server(workdir, config(workdir))
    yield running
    stop_server(running)


def lampstand(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAMPSTAND, *args, "--url", server.url], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def indexed(eval_server: RunningServer, corpus: CorpusInfo) -> RunningServer:
    added = lampstand(eval_server, "index", "add", INDEX, str(corpus.root), "--json")
    assert added.returncode == 0, added.stderr
    card = json.loads(added.stdout)
    assert card["files"] == len(corpus.files)
    return eval_server


def run_json(server: RunningServer, *args: str) -> dict[str, Any]:
    done = lampstand(server, "eval", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_eval_retrieval_side_by_side(indexed: RunningServer, corpus: CorpusInfo) -> None:
    report = run_json(indexed, "retrieval", INDEX, "--qa", str(corpus.retrieval_qa), "--k", "10")
    modes = {mode["name"]: mode for mode in report["modes"]}
    assert list(modes) == ["bm25-windows", "dense", "lexical", "hybrid"]
    assert modes["bm25-windows"]["recall"]["10"] >= 0.8, "the naive baseline finds verbatim questions too"
    assert set(report["skipped"]) == {"hybrid+rerank"}
    assert report["questions"] == corpus.questions
    for name, (recall_floor, mrr_floor) in RETRIEVAL_FLOORS.items():
        assert modes[name]["recall"]["10"] >= recall_floor, modes[name]
        assert modes[name]["mrr"] >= mrr_floor, modes[name]
        assert modes[name]["recall"]["1"] <= modes[name]["recall"]["5"] <= modes[name]["recall"]["10"]
        assert 0 < modes[name]["ndcg"] <= 1


def test_eval_retrieval_table(indexed: RunningServer, corpus: CorpusInfo) -> None:
    done = lampstand(indexed, "eval", "retrieval", INDEX, "--qa", str(corpus.retrieval_qa_hard), "--k", "5")
    assert done.returncode == 0, done.stderr
    for word in ("recall@1", "recall@5", "MRR", "nDCG@10", "bm25-windows", "dense", "lexical", "hybrid",
                 "hybrid+rerank: skipped"):
        assert word in done.stdout


def test_eval_answers(indexed: RunningServer, corpus: CorpusInfo, workdir: Path) -> None:
    questions = workdir / "answers.jsonl"
    questions.write_text("".join(corpus.answers_qa.read_text().splitlines(keepends=True)[:ANSWERED]))
    report = run_json(indexed, "answers", INDEX, "--qa", str(questions), "--top-k", "2", "--max-tokens", "24")
    assert report["questions"] == report["judged"] == ANSWERED
    assert 0 <= report["rouge_l"] <= 1 and 0 <= report["bleu"] <= 100
    assert report["source_hit_rate"] is not None and 0 <= report["citation_hit_rate"] <= report["source_hit_rate"]
    assert all(outcome["answer"] for outcome in report["outcomes"])


def test_eval_heldout_then_retrieval(indexed: RunningServer, workdir: Path) -> None:
    """`eval heldout` over a folder of code and notes, indexed and scored beside the baseline."""
    source = workdir / "heldout-source"
    (source / "notes").mkdir(parents=True)
    for module in ("textwrap", "shlex"):
        (source / f"{module}.py").write_text((Path(sys.modules["shutil"].__file__).parent / f"{module}.py").read_text())
    (source / "notes" / "lamp.md").write_text(
        "# Lamps\n\nA brass lamp gives a warm light on the reading table at night. It needs oil.\n\n"
        "## Wicks\n\nCotton wicks are trimmed flat before every lighting to stop smoke. Keep spares.\n")
    done = subprocess.run([*LAMPSTAND, "eval", "heldout", str(source), str(workdir / "heldout"),
                           "--max-questions", "5", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    assert (built["notes_questions"], built["code_questions"]) == (2, 5)
    added = lampstand(indexed, "index", "add", "heldout", built["root"], "--json")
    assert added.returncode == 0, added.stderr
    report = run_json(indexed, "retrieval", "heldout", "--qa", built["code_qa"], "--k", "10")
    assert [mode["name"] for mode in report["modes"]] == ["bm25-windows", "dense", "lexical", "hybrid"]
    assert report["questions"] == 5 and all(0 <= mode["mrr"] <= 1 for mode in report["modes"])


def test_eval_errors_are_one_line(indexed: RunningServer, corpus: CorpusInfo) -> None:
    missing = lampstand(indexed, "eval", "retrieval", "no-such-index", "--qa", str(corpus.retrieval_qa))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: 404") and len(missing.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def rerank_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("evaluation-rerank")
    build_stdlib_corpus(tmp / "corpus", modules=("fnmatch", "glob"), docs=False)
    running = start_server(tmp, config(tmp, build_cross_encoder(tmp / "reranker", seed=0)))
    added = lampstand(running, "index", "add", INDEX, str(tmp / "corpus"))
    assert added.returncode == 0, added.stderr
    yield running
    stop_server(running)


def test_eval_retrieval_with_a_reranker(rerank_server: RunningServer) -> None:
    qa = Path(rerank_server.log).parent / "corpus" / "qa_retrieval.jsonl"
    report = run_json(rerank_server, "retrieval", INDEX, "--qa", str(qa), "--k", "5")
    assert [mode["name"] for mode in report["modes"]] == ["bm25-windows", "dense", "lexical", "hybrid", "hybrid+rerank"]
    assert report["skipped"] == {}
    assert all(0 <= mode["recall"]["5"] <= 1 for mode in report["modes"])
