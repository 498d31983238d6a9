"""`lampstand eval`: score an index's retrieval and answers on question files, build a test corpus.

Thin, like the rest of the CLI: commands parse options, call `lampstand.indexer.evaluation`
with callables from `EvalClient`, and print a table (modes side by side) or `--json`.
Errors print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lampstand.indexer.evaluation import (
    BASELINE_MODE,
    DEFAULT_MODULES,
    AnswerReport,
    CorpusInfo,
    HeldoutCorpus,
    RetrievalReport,
    WindowBM25,
    build_heldout_corpus,
    build_stdlib_corpus,
    evaluate_answers,
    evaluate_retrieval,
    group_queries,
    load_answer_qa,
    load_retrieval_qa,
)
from lampstand.indexer.evaluation.runner import MODES, NDCG_K
from lampstand.indexer.sources import SourceOptions
from lampstand.plugins.errors import LampstandError

from .evaluate import EvalClient
from .options import DEFAULT_URL, JsonOption, KeyOption, UrlOption, fail

__all__ = ["eval_app"]

eval_app = typer.Typer(help="Measure an index's retrieval and answers on question files.",
                       no_args_is_help=True, add_completion=False)

NameArgument = Annotated[str, typer.Argument(help="index name")]
QaOption = Annotated[Path, typer.Option("--qa", help="question file (JSON Lines)")]


@contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr (only on a terminal), advanced once per question asked."""
    with Progress(transient=True, disable=not sys.stderr.isatty(), console=Console(stderr=True)) as bar:
        task = bar.add_task("evaluating", total=total)

        def advance(name: str) -> None:
            bar.update(task, advance=1, description=name)

        yield advance


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _retrieval_table(name: str, report: RetrievalReport) -> Table:
    table = Table("metric", *(mode.name for mode in report.modes),
                  title=f"{name}: {report.questions} questions, {report.depth} hits each")
    cutoffs = sorted(report.modes[0].recall) if report.modes else []
    for cut in cutoffs:
        table.add_row(f"recall@{cut}", *(_pct(mode.recall[cut]) for mode in report.modes))
    table.add_row("MRR", *(_pct(mode.mrr) for mode in report.modes))
    table.add_row(f"nDCG@{NDCG_K}", *(_pct(mode.ndcg) for mode in report.modes))
    table.add_row("ms/query", *(f"{mode.mean_latency_ms:.0f}" for mode in report.modes))
    return table


def _print_retrieval(name: str, report: RetrievalReport) -> None:
    out = Console()
    out.print(_retrieval_table(name, report))
    for mode, reason in report.skipped.items():
        out.print(f"{mode}: skipped ({reason})")


def _retrieval_json(name: str, report: RetrievalReport) -> dict[str, Any]:
    return {"index": name, **asdict(report)}


@eval_app.command()
def retrieval(
    name: NameArgument,
    qa: QaOption,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="recall@1, @5 and @k; at least 10 hits asked")] = 10,
    with_baseline: Annotated[bool, typer.Option("--baseline/--no-baseline",
                                                help="also score BM25 over 40-line windows of the same files")] = True,
    baseline_root: Annotated[Optional[list[Path]], typer.Option(
        "--baseline-root", help="where the indexed files are, when not at the index's paths (a remote server)")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recall@k, MRR and nDCG@10 of dense, lexical, hybrid and hybrid+rerank search, beside the BM25 baseline."""
    try:
        queries = group_queries(load_retrieval_qa(qa))
        with EvalClient(url, api_key) as client, _progress(len(queries) * (len(MODES) + 1)) as advance:
            baseline = _baseline(client.index(name), baseline_root) if with_baseline else None
            report = evaluate_retrieval(queries, client.search(name), k=k, progress=advance)
            if baseline is not None:
                scored = evaluate_retrieval(queries, baseline.search, k=k, modes=(BASELINE_MODE,), progress=advance)
                report.modes.insert(0, scored.modes[0])
    except LampstandError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(_retrieval_json(name, report), indent=2))
    else:
        _print_retrieval(name, report)


def _baseline(card: dict[str, Any], roots: list[Path] | None) -> WindowBM25:
    """The naive baseline over the files the index holds (its paths and globs, or `roots`)."""
    options = SourceOptions(include=tuple(card.get("include") or ()), exclude=tuple(card.get("exclude") or ()))
    return WindowBM25(roots or [Path(path) for path in card["paths"]], options)


def _answers_table(name: str, report: AnswerReport) -> Table:
    table = Table("metric", "value", title=f"{name}: {report.questions} questions")
    table.add_row("ROUGE-L F1", _pct(report.rouge_l))
    table.add_row("BLEU (0-100)", f"{report.bleu:.1f}")
    table.add_row(f"cites the expected source ({report.judged} judged)", _pct(report.citation_hit_rate))
    table.add_row("expected source among the sources", _pct(report.source_hit_rate))
    return table


@eval_app.command()
def answers(
    name: NameArgument,
    qa: QaOption,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="chat model (default: the server's)")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100, help="sources per question")] = 5,
    mode: Annotated[str, typer.Option(help="dense, lexical or hybrid")] = "hybrid",
    rerank: Annotated[bool, typer.Option("--rerank", help="rerank the sources")] = False,
    max_tokens: Annotated[Optional[int], typer.Option(help="cap on generated tokens")] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed for repeatable answers")] = 0,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """ROUGE-L and BLEU of rag answers against reference answers, and how often they cite the right source."""
    try:
        rows = load_answer_qa(qa)
        with EvalClient(url, api_key) as client, _progress(len(rows)) as advance:
            ask = client.answers(name, model=model, top_k=top_k, mode=mode, rerank=rerank,
                                 max_tokens=max_tokens, temperature=temperature, seed=seed)
            report = evaluate_answers(rows, ask, progress=advance)
    except LampstandError as exc:
        fail(exc)
    if as_json:
        print(json.dumps({"index": name, **asdict(report)}, indent=2))
    else:
        Console().print(_answers_table(name, report))


def _corpus_lines(info: CorpusInfo) -> list[str]:
    lines = [(f"{len(info.files)} files ({len(info.modules)} modules of Python {info.python_version}, "
              f"{info.doc_topics} documentation topics) in {info.root}"),
             f"{info.questions} retrieval questions: {info.retrieval_qa} (reworded: {info.retrieval_qa_hard.name})",
             f"{info.answer_questions} answer questions: {info.answers_qa}",
             f"index it with: lampstand index add NAME {info.root}"]
    if info.missing:
        lines.insert(1, f"not in this interpreter's stdlib: {', '.join(info.missing)}")
    return lines


@eval_app.command()
def corpus(
    target: Annotated[Path, typer.Argument(help="new or empty folder to write")],
    max_questions: Annotated[int, typer.Option("--max-questions", min=1, help="retrieval questions")] = 200,
    max_answers: Annotated[int, typer.Option("--max-answers", min=1, help="answer questions")] = 50,
    modules: Annotated[Optional[list[str]], typer.Option("--module", help="stdlib module to copy (repeatable)")] = None,
    docs: Annotated[bool, typer.Option("--docs/--no-docs", help="also write the reference topics as Markdown")] = True,
    seed: Annotated[int, typer.Option(help="seed for sampling questions")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Copy a slice of Python's standard library into TARGET, with question files derived from its docstrings."""
    _report_corpus(lambda: build_stdlib_corpus(target, modules=modules or DEFAULT_MODULES, docs=docs,
                                               max_questions=max_questions, max_answers=max_answers, seed=seed),
                   _corpus_lines, as_json)


def _report_corpus(build: Callable[[], Any], describe: Callable[[Any], list[str]], as_json: bool) -> None:
    """Build a question corpus and print what was written (one error line and exit 2 on failure)."""
    try:
        built = build()
    except LampstandError as exc:
        fail(exc)
    except OSError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(asdict(built), indent=2, default=str))
    else:
        for line in describe(built):
            typer.echo(line)


def _heldout_lines(corpus: HeldoutCorpus) -> list[str]:
    lines = [f"{corpus.files} files in {corpus.root}",
             f"{corpus.notes_questions} notes questions: {corpus.notes_qa}",
             f"{corpus.code_questions} code questions: {corpus.code_qa}",
             f"index it with: lampstand index add NAME {corpus.root}"]
    if corpus.skipped:
        lines.insert(1, f"skipped (unreadable or too large): {len(corpus.skipped)}")
    return lines


@eval_app.command()
def heldout(
    source: Annotated[Path, typer.Argument(help="folder of Markdown notes and/or Python code")],
    target: Annotated[Path, typer.Argument(help="new or empty folder to write")],
    max_questions: Annotated[int, typer.Option("--max-questions", min=1, help="questions per kind")] = 100,
    seed: Annotated[int, typer.Option(help="seed for sampling questions")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Copy SOURCE into TARGET/corpus with each asked sentence or docstring removed, and write the questions."""
    _report_corpus(lambda: build_heldout_corpus(source, target, max_questions=max_questions, seed=seed),
                   _heldout_lines, as_json)
