"""`lampstand adapters list|load|unload|convert`: LoRA adapters on disk and in a running server."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from lampstand.plugins.errors import LampstandError

from .admin import AdminClient
from .options import DEFAULT_URL, ConfigOption, JsonOption, KeyOption, UrlOption, fail, load_cli_settings

__all__ = ["adapters_app"]

adapters_app = typer.Typer(help="LoRA adapters: list, load into the running server, unload, convert to GGUF.",
                           no_args_is_help=True)
NameArgument = Annotated[str, typer.Argument(help="the model name requests use for the adapter")]


def _local_adapters(folder: Path) -> dict[str, dict[str, Any]]:
    """Adapter folders under the adapters dir, by folder name, with what their manifests say."""
    from lampstand.training.manifest import holds_peft, read_manifest

    found: dict[str, dict[str, Any]] = {}
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not entry.is_dir():
            continue
        try:
            manifest = read_manifest(entry)
        except LampstandError:
            manifest = None
        gguf = any(entry.glob("*.gguf"))
        if manifest is None and not gguf and not holds_peft(entry):
            continue
        found[entry.name] = {"name": entry.name, "path": str(entry), "gguf": gguf,
                             "base": manifest.base.id or manifest.base.source if manifest else None,
                             "eval_loss": manifest.metrics.get("eval_loss") if manifest else None}
    return found


@adapters_app.command("list")
def list_adapters(
    config: ConfigOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Adapters in the adapters dir and those the server has loaded (when it is running)."""
    settings = load_cli_settings(config)
    rows = _local_adapters(settings.adapters.dir)
    loaded: list[dict[str, Any]] = []
    try:
        loaded = [m for m in AdminClient(url, api_key, timeout=10).models()
                  if m.get("parent") and not m["id"].startswith("rag:")]
    except LampstandError:
        pass  # no server: list what is on disk
    if as_json:
        typer.echo(json.dumps({"local": list(rows.values()), "loaded": loaded}, indent=2))
        return
    table = Table("name", "base", "gguf", "eval loss", "loaded as")
    served = {Path(m.get("root") or "").name: m["id"] for m in loaded}
    for row in rows.values():
        loss = row["eval_loss"]
        table.add_row(row["name"], row["base"] or "", "yes" if row["gguf"] else "no",
                      f"{loss:.3f}" if isinstance(loss, float) else "", served.get(row["name"], ""))
    for model in loaded:
        if model["id"] not in served.values():
            table.add_row("", model["parent"], "yes", "", model["id"])
    Console().print(table)


@adapters_app.command("load")
def load(
    name: NameArgument,
    path: Annotated[Optional[str], typer.Argument(help="folder or .gguf inside the adapters dir (default: NAME)")] = None,
    base: Annotated[Optional[str], typer.Option(help="the served model it runs on (default: from its manifest)")] = None,
    scale: Annotated[float, typer.Option(help="scale when a request gives no lora_scale")] = 1.0,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Load an adapter into the running server (its config needs `hot_load = true` for adapters)."""
    try:
        card = AdminClient(url, api_key).load_adapter(name, path or name, base, scale)
    except LampstandError as exc:
        fail(exc)
    typer.echo(f"loaded {card['id']} on {card['parent']} in {card.get('load_seconds') or 0:.3f} s")


@adapters_app.command("unload")
def unload(name: NameArgument, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Stop serving an adapter once the requests using it finish."""
    try:
        card = AdminClient(url, api_key).unload_adapter(name)
    except LampstandError as exc:
        fail(exc)
    typer.echo(f"unloaded {card['id']}")


@adapters_app.command("convert")
def convert(
    folder: Annotated[Path, typer.Argument(help="a PEFT adapter folder (adapter_config.json + safetensors)")],
    base: Annotated[Optional[str], typer.Option(help="the GGUF base: a served model id or a .gguf file "
                                                     "(default: the base its manifest names)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="the GGUF LoRA to write (default: FOLDER/adapter.gguf)")] = None,
    config: ConfigOption = None,
) -> None:
    """Write a PEFT LoRA adapter as a GGUF LoRA that llama.cpp-served models load."""
    from lampstand.training.manifest import GGUF_FILE

    try:
        _convert(folder, base, out or folder / GGUF_FILE, config)
    except (LampstandError, ValueError, OSError) as exc:
        fail(exc if isinstance(exc, LampstandError) else str(exc))


def _convert(folder: Path, base: str | None, out: Path, config: Path | None) -> None:
    from lampstand.training.base_model import resolve_base
    from lampstand.training.gguf_lora import export_gguf_lora
    from lampstand.training.manifest import file_sha256, read_manifest, write_manifest

    manifest = read_manifest(folder)
    if base is None and manifest is None:
        fail(f"{folder} has no manifest.json naming its base; pass --base")
    source = resolve_base(base or (manifest.base.path if manifest else ""), load_cli_settings(config))
    if source.gguf is None:
        fail(f"--base {source.source}: a GGUF LoRA needs a .gguf base (this one is a Hugging Face folder)")
    digest = file_sha256(source.gguf)
    export_gguf_lora(folder, source.gguf, out, base_sha256=digest)
    if manifest is not None and out.parent.resolve() == folder.resolve():
        write_manifest(folder, replace(manifest, files=replace(manifest.files, gguf=out.name)))
    typer.echo(f"wrote {out} for {source.gguf.name}")
