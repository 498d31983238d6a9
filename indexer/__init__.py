"""lampstand.indexer: named search indexes over folders of notes, docs and code.

    library     the named indexes in one folder: what each indexes, where its store lives
    sources     which files under the indexed roots are read, and why the others are skipped
    chunking    a file's text cut into chunks the embedder reads well (Markdown sections,
                paragraphs, syntax-tree definitions, PDF pages)
    pipeline    bringing an index up to date: scan, diff, chunk, embed, store (incremental,
                resumable after a crash)
    store       chunks and vectors on disk (FAISS or Qdrant) with their lexical term index
    search      dense, lexical or hybrid ranking, then reranking; spans group the matches
    grounding   the prompt that quotes retrieved chunks as data, and the citations in a reply
    watch       which indexed files changed on disk, in debounced batches
    evaluation  how well an index finds and answers, measured on question files

The indexer embeds and reranks through the callables it is given: the served models, reached
through the model pool (in the server, or in this process for the CLI's `--local` runs). So it
never imports a model engine and never touches HTTP; the server's `serving/indexes.py` is
what puts it behind `/v1/indexes` and `/v1/rag/query`.
"""

__all__: list[str] = []
