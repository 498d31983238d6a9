"""Retrieval quality on held-out questions: every search mode beside naive BM25 over windows.

For each corpus (Markdown notes and Python code nobody here wrote) the held-out builder behind
`lampstand eval heldout` copies it with each asked sentence or docstring removed; the copy is
indexed through a real server (`POST /v1/indexes`), and each mode is scored by the same runner as
`lampstand eval retrieval`, beside BM25 (bm25s, English stop words) over 40-line windows of the
same files, built in this process.

Two splits, so that what is tuned is not what is reported:
- `dev` (what search settings were chosen on): Markdown that ships with npm and Node.js, outside
  the report's API docs (npm's own docs, undici's docs inside npm, Node.js's contributor guides),
  in one folder, and a slice of Python's standard library;
- `report` (the default, never tuned on): Node.js's API docs (Markdown, as the nodejs package
  installs them) and the sources of a Python library installed here (`--code-package`, default rich).

Run: python bench/retrieval_quality.py [--split report|dev] [--max-questions 300] [--seed 0]
                                       [--notes DIR] [--code DIR] [--code-package NAME]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_process import MINILM, print_load, running_server  # noqa: E402

from lampstand.clients.evaluate import EvalClient  # noqa: E402
from lampstand.indexer.evaluation import (  # noqa: E402
    BASELINE_MODE,
    WindowBM25,
    build_heldout_corpus,
    evaluate_retrieval,
    group_queries,
    load_retrieval_qa,
)
from lampstand.indexer.evaluation.runner import MODES, RetrievalReport  # noqa: E402
from lampstand.indexer.evaluation.stdlib_corpus import stdlib_dir  # noqa: E402

NODE_DOCS = Path("/usr/share/doc/nodejs/api")
NPM_DOCS = Path("/usr/lib/node_modules/npm/docs/content")
DEV_NOTES = {"npm": NPM_DOCS, "undici": Path("/usr/lib/node_modules/npm/node_modules/undici/docs"),
             "contributing": Path("/usr/share/doc/nodejs/contributing")}
DEV_MODULES = ("argparse", "configparser", "csv", "dataclasses", "difflib", "enum", "json", "shutil",
               "tempfile", "textwrap", "traceback", "zipfile")


def config(tmp: Path) -> str:
    return f"""
[server]
max_embedding_inputs = 4096

[indexes]
dir = "{tmp}/indexes"
source_roots = ["{tmp}"]
max_top_k = 100

[[models]]
id = "all-minilm-l6-v2"
plugin = "sentence_transformers"
path = "{MINILM}"
"""


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"no package {name} is installed here")
    return Path(next(iter(spec.submodule_search_locations)))


def stdlib_slice(target: Path) -> Path:
    for module in DEV_MODULES:
        source = stdlib_dir() / f"{module}.py"
        if source.exists():
            shutil.copyfile(source, target / source.name)
        elif (stdlib_dir() / module).is_dir():
            shutil.copytree(stdlib_dir() / module, target / module, ignore=shutil.ignore_patterns("__pycache__", "test*"))
    return target


def dev_notes(target: Path) -> Path:
    """The dev split's Markdown folders side by side in one folder (those installed here)."""
    for name, source in DEV_NOTES.items():
        if source.is_dir():
            shutil.copytree(source, target / name)
    return target


def corpora(args: argparse.Namespace, tmp: Path) -> dict[str, Path]:
    if args.split == "dev":
        return {"notes": args.notes or dev_notes(Path(tempfile.mkdtemp(dir=tmp))),
                "code": args.code or stdlib_slice(Path(tempfile.mkdtemp(dir=tmp)))}
    return {"notes": args.notes or NODE_DOCS, "code": args.code or package_dir(args.code_package)}


def index(client: httpx.Client, name: str, root: Path) -> dict:
    started = time.perf_counter()
    response = client.post("/v1/indexes", json={"name": name, "paths": [str(root)], "wait": True}, timeout=None)
    response.raise_for_status()
    card = response.json()
    seconds = time.perf_counter() - started
    print(f"{name}: {card['files']} files, {card['chunks']} chunks indexed in {seconds:.0f} s "
          f"({card['chunks'] / seconds:.1f} chunks/s)")
    return card


def print_report(name: str, report: RetrievalReport) -> None:
    names = [mode.name for mode in report.modes]
    print(f"\n{name}: {report.questions} held-out questions")
    print(f"{'metric':<10}" + "".join(f"{n:>15}" for n in names))
    for cut in sorted(report.modes[0].recall):
        print(f"{'recall@' + str(cut):<10}" + "".join(f"{m.recall[cut]:>15.3f}" for m in report.modes))
    print(f"{'MRR':<10}" + "".join(f"{m.mrr:>15.3f}" for m in report.modes))
    print(f"{'nDCG@10':<10}" + "".join(f"{m.ndcg:>15.3f}" for m in report.modes))
    print(f"{'ms/query':<10}" + "".join(f"{m.mean_latency_ms:>15.0f}" for m in report.modes))
    for mode, reason in report.skipped.items():
        print(f"{mode}: skipped ({reason})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("report", "dev"), default="report")
    parser.add_argument("--notes", type=Path)
    parser.add_argument("--code", type=Path)
    parser.add_argument("--code-package", default="rich")
    parser.add_argument("--max-questions", type=int, default=300,
                        help="questions per corpus; samples of 100 swing by several points")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_load("before")
    with tempfile.TemporaryDirectory(prefix="lampstand-retrieval-") as tmp_name:
        tmp = Path(tmp_name)
        sources = corpora(args, tmp)
        with running_server(config(tmp)) as url, httpx.Client(base_url=url) as client, EvalClient(url, None) as ev:
            for kind, source in sources.items():
                built = build_heldout_corpus(source, tmp / kind, max_questions=args.max_questions, seed=args.seed)
                print(f"\n{kind}: {source} -> {built.files} files")
                index(client, kind, built.root)
                queries = group_queries(load_retrieval_qa(built.notes_qa if kind == "notes" else built.code_qa))
                modes = tuple(mode for mode in MODES if not mode.rerank)
                report = evaluate_retrieval(queries, ev.search(kind), modes=modes)
                baseline = evaluate_retrieval(queries, WindowBM25([built.root]).search, modes=(BASELINE_MODE,))
                report.modes.insert(0, baseline.modes[0])
                print_report(kind, report)
    print_load("after")


if __name__ == "__main__":
    main()
