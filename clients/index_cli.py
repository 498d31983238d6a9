"""`lampstand index ...` and `lampstand ask`: build, update, watch, search and query indexes.

Every command talks to a running server by default; `--local` runs the same index service in
this process with its own models (no server needed; the paths named are allowed as roots).
Long runs show a progress bar (files, chunks, embeddings/s) on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lampstand.plugins.errors import LampstandError

from .indexes import IndexClient, run_locally
from .options import DEFAULT_URL, ConfigOption, JsonOption, KeyOption, UrlOption, fail, load_cli_settings, print_listing

__all__ = ["index_app", "ask_command"]

index_app = typer.Typer(help="Search indexes over your notes and code.", no_args_is_help=True, add_completion=False)
LocalOption = Annotated[bool, typer.Option("--local", help="run in this process instead of asking a server")]
NameArgument = Annotated[str, typer.Argument(help="index name")]
err = Console(stderr=True)


class _Bar:
    """A rich progress bar fed with index cards."""

    def __init__(self, name: str, quiet: bool) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                 console=err, transient=True, disable=quiet)
        self.task = self.progress.add_task(name, total=None, detail="scanning")

    def __call__(self, card: dict[str, Any]) -> None:
        job = card.get("job") or {}
        if not job:
            return
        detail = (f"{job['chunks_added']} chunks, {job['embeddings_per_second']:.0f} emb/s, "
                  f"{job['files_unchanged']} unchanged")
        self.progress.update(self.task, completed=job["files_done"], total=job["files_total"] or None,
                             description=f"{card['id']} {job['phase']}", detail=detail)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _report(card: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(card, indent=2))
        return
    job = card.get("job") or {}
    if job.get("status") == "failed":
        fail(f"indexing {card['id']} failed: {job.get('error')}")
    skipped = sum(n for reasons in job.get("skipped", {}).values() for n in reasons.values())
    typer.echo(f"{card['id']}: {card['files']} files, {card['chunks']} chunks "
               f"({job.get('files_done', 0)} files indexed, {job.get('files_unchanged', 0)} unchanged, "
               f"{job.get('files_deleted', 0)} removed, {skipped} skipped; "
               f"{job.get('embeddings_per_second', 0):.0f} embeddings/s, {job.get('seconds', 0):.1f} s)")


def _run_job(name: str, start: Callable[[IndexClient], dict[str, Any]],
             local_action: Callable[[Any], Any] | None, url: str, api_key: str | None,
             config: Path | None, local_roots: list[Path], as_json: bool) -> None:
    """Start a job (on the server or here) and follow it to the end with a progress bar."""
    try:
        with _Bar(name, as_json or not sys.stderr.isatty()) as bar:
            if local_action is not None:
                settings = load_cli_settings(config)
                settings.indexes.source_roots.extend(local_roots)
                card = run_locally(settings, local_action, bar, name)
            else:
                client = IndexClient(url, api_key)
                start(client)
                card = client.follow(name, bar)
    except LampstandError as exc:
        fail(exc)
    _report(card, as_json)


@index_app.command("add")
def add(
    name: NameArgument,
    paths: Annotated[list[Path], typer.Argument(help="folders or files to index", exists=True)],
    include: Annotated[Optional[list[str]], typer.Option("--include", help="only files matching (gitignore glob)")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="skip files matching (gitignore glob)")] = None,
    store: Annotated[Optional[str], typer.Option(help="faiss (default) or qdrant")] = None,
    local: LocalOption = False, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None,
    config: ConfigOption = None, as_json: JsonOption = False,
) -> None:
    """Create an index over PATHs and build it."""
    from lampstand.server import protocol as p

    roots = [path.resolve() for path in paths]
    body = p.IndexCreateRequest(name=name, paths=[str(r) for r in roots], include=include or [],
                                exclude=exclude or [], store=store, wait=True)
    _run_job(name, lambda client: client.create(name, roots, body.include, body.exclude, store),
             (lambda service: service.create(body)) if local else None, url, api_key, config, roots, as_json)


@index_app.command("update")
def update(
    name: NameArgument,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="embed everything again (after changing the embedder)")] = False,
    local: LocalOption = False, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None,
    config: ConfigOption = None, as_json: JsonOption = False,
) -> None:
    """Re-index what changed since the last run; deleted files leave the index."""
    from lampstand.server import protocol as p

    body = p.IndexUpdateRequest(rebuild=rebuild, wait=True)
    roots = _local_roots(name, config) if local else []
    _run_job(name, lambda client: client.update(name, rebuild),
             (lambda service: service.update(name, body)) if local else None, url, api_key, config, roots, as_json)


def _local_roots(name: str, config: Path | None) -> list[Path]:
    from lampstand.indexer.library import IndexLibrary

    try:
        return [Path(root) for root in IndexLibrary(load_cli_settings(config).indexes.dir).get(name).roots]
    except LampstandError as exc:
        fail(exc)


@index_app.command("watch")
def watch(
    name: NameArgument,
    debounce_ms: Annotated[int, typer.Option(help="quiet time that ends a burst of changes")] = 500,
    url: UrlOption = DEFAULT_URL, api_key: KeyOption = None,
) -> None:
    """Keep the index up to date as its files change (Ctrl-C stops)."""
    from lampstand.indexer.pipeline import index_path
    from lampstand.indexer.sources import SourceOptions
    from lampstand.indexer.watch import ChangeBatch, watch_sources

    client = IndexClient(url, api_key)
    try:
        card = client.get(name)
        client.update(name)
        _report(client.follow(name, lambda card: None), False)
    except LampstandError as exc:
        fail(exc)
    options = SourceOptions(include=tuple(card["include"]), exclude=tuple(card["exclude"]))
    err.print(f"watching {', '.join(card['paths'])} (Ctrl-C stops)")

    def changed(batch: ChangeBatch) -> None:
        roots = card["paths"]
        paths = None if batch.rescan else (
            [index_path(roots, str(batch.root), rel) for rel in (*batch.changed, *batch.deleted)]
            + [index_path(roots, str(batch.root), rel) + "/" for rel in batch.deleted_folders])
        try:
            client.update(name, paths=paths)
            _report(client.follow(name, lambda card: None), False)
        except LampstandError as exc:
            err.print(f"update failed: {exc.message}")

    try:
        watch_sources([Path(p) for p in card["paths"]], options, changed, debounce_ms=debounce_ms)
    except KeyboardInterrupt:
        pass


def _index_row(card: dict[str, Any]) -> list[str]:
    return [card["id"], card["status"], str(card["files"]), str(card["chunks"]), card.get("embedding_model") or "-",
            card["store"], "\n".join(card["paths"])]


@index_app.command("list")
def list_indexes(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Every index: status, files, chunks, roots."""
    print_listing(IndexClient(url, api_key).list, as_json,
                  ("name", "status", "files", "chunks", "embedding model", "store", "paths"), _index_row)


@index_app.command("rm")
def remove(name: NameArgument, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Delete an index (its store and definition; never the indexed files)."""
    try:
        IndexClient(url, api_key).remove(name)
    except LampstandError as exc:
        fail(exc)
    typer.echo(f"{name}: removed")


@index_app.command("search")
def search(
    name: NameArgument,
    query: Annotated[str, typer.Argument(help="what to look for")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="results")] = 5,
    mode: Annotated[str, typer.Option(help="dense, lexical or hybrid")] = "hybrid",
    rerank: Annotated[bool, typer.Option("--rerank", help="rescore with the cross-encoder")] = False,
    path_glob: Annotated[Optional[str], typer.Option("--path", help="only paths matching this glob")] = None,
    language: Annotated[Optional[str], typer.Option(help="only this language (python, markdown, ...)")] = None,
    url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Ranked chunks with their paths and lines."""
    body = {"query": query, "top_k": top_k, "mode": mode, "rerank": rerank,
            "filters": {"path_glob": path_glob, "language": language}}
    try:
        found = IndexClient(url, api_key).search(name, body)
    except LampstandError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    out = Console()
    for hit in found["data"]:
        where = " > ".join(hit["context"])
        out.print(f"[bold]{hit['rank']}. {hit['path']}:{hit['start_line']}-{hit['end_line']}[/bold] "
                  f"{where} (score {hit['score']:.4f})", highlight=False)
        out.print(hit["text"].strip()[:400], markup=False, highlight=False)
        out.print()


def ask_command(
    index: Annotated[str, typer.Argument(help="index name")],
    question: Annotated[str, typer.Argument(help="what to ask")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="chat model (default: the configured one)")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", help="sources to quote")] = None,
    rerank: Annotated[bool, typer.Option("--rerank", help="rescore sources with the cross-encoder")] = False,
    url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Answer a question from an index, citing its sources."""
    body = {"index": index, "query": question, "model": model, "top_k": top_k, "rerank": rerank}
    sources: list[dict[str, Any]] = []
    text: list[str] = []
    citations: list[int] = []
    try:
        for event in IndexClient(url, api_key).ask(body):
            sources = event.get("sources") or sources
            citations = event.get("citations") or citations
            text.append(event.get("delta", ""))
            if not as_json:
                sys.stdout.write(event.get("delta", ""))
                sys.stdout.flush()
    except LampstandError as exc:
        fail(exc)
    if as_json:
        print(json.dumps({"answer": "".join(text), "sources": sources, "citations": citations}, indent=2))
        return
    sys.stdout.write("\n\n")
    for source in sources:
        mark = "*" if source["id"] in citations else " "
        print(f"{mark}[{source['id']}] {source['path']}:{source['start_line']}-{source['end_line']}")
