"""Training data, encoding and manifests, on SmolLM2's real tokenizer and chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SMOLLM
from lampstand.plugins.errors import InvalidRequest
from lampstand.training.data import (
    MAX_REPORTED_ERRORS,
    DataError,
    Example,
    Message,
    load_training_file,
)

DATA = Path(__file__).parent / "data"


def _write(tmp_path: Path, lines: list[Any]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def _chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


GOOD = _chat(("user", "hi"), ("assistant", "hello"))

BAD_FILES = [
    pytest.param([GOOD, "{not json"], ["line 2: not valid JSON"], id="bad-json"),
    pytest.param([{"text": "x"}], ["line 1: expected an object with 'messages'"], id="unknown-shape"),
    pytest.param([[1, 2]], ["line 1: expected an object"], id="not-an-object"),
    pytest.param([{"messages": []}], ["line 1: 'messages' must be a non-empty list"], id="empty-messages"),
    pytest.param([_chat(("user", "hi"))], ["line 1: no assistant message"], id="no-assistant"),
    pytest.param([{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}],
                 ["line 1: messages[0] has no 'content'"], id="missing-content"),
    pytest.param([{"messages": [{"role": "robot", "content": "x"}]}], ["line 1: messages[0].role"], id="bad-role"),
    pytest.param([{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}],
                 ["line 1: messages[0].content must be a string"], id="content-type"),
    pytest.param([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}],
                 ["line 1: every assistant message has weight 0"], id="all-weight-0"),
    pytest.param([{"messages": [{"role": "user", "content": "q", "weight": 0}, {"role": "assistant", "content": "a"}]}],
                 ["line 1: messages[0].weight must be 0 or 1"], id="weight-on-user"),
    pytest.param([{"prompt": "q"}], ["line 1: 'completion' must be a non-empty string"], id="no-completion"),
    pytest.param([{"prompt": 3, "completion": "a"}], ["line 1: 'prompt' must be a string"], id="prompt-type"),
    pytest.param([GOOD, {"prompt": "q", "completion": "a"}, GOOD], ["line 2: a prompt_completion row in a chat file"],
                 id="mixed-formats"),
    pytest.param([GOOD, "", "{bad", _chat(("user", "x")), GOOD, "[]"],
                 ["3 bad lines", "line 3: not valid JSON", "line 4: no assistant message", "line 6: expected"],
                 id="several-at-once"),
    pytest.param([], ["no training rows (the file is empty)"], id="empty-file"),
]


@pytest.mark.parametrize(("lines", "expected"), BAD_FILES)
def test_bad_training_files_name_every_bad_line(tmp_path: Path, lines: list[Any], expected: list[str]) -> None:
    with pytest.raises(DataError) as caught:
        load_training_file(_write(tmp_path, lines))
    assert isinstance(caught.value, InvalidRequest) and caught.value.status_code == 400
    for part in expected:
        assert part in caught.value.message


def test_error_list_is_capped(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_training_file(_write(tmp_path, ["{"] * 50))
    message = caught.value.message
    assert "50 bad lines" in message and f"line {MAX_REPORTED_ERRORS}:" in message
    assert f"line {MAX_REPORTED_ERRORS + 1}:" not in message and f"and {50 - MAX_REPORTED_ERRORS} more" in message


def test_a_hopeless_file_is_not_read_to_its_end(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_training_file(_write(tmp_path, ["x"] * 5000 + ["[" * 50_000 + "]" * 50_000]))
    message = caught.value.message
    assert message.startswith("train.jsonl: 1000+ bad lines: line 1: not valid JSON")
    assert message.endswith("and 980 more (stopped reading at line 1001)")


def test_both_formats_load(tmp_path: Path) -> None:
    chat = load_training_file(DATA / "fact_train.jsonl")
    assert chat.format == "chat" and len(chat.examples) == 20 and len(chat.sha256) == 64
    pairs = load_training_file(_write(tmp_path, [{"prompt": "2+2=", "completion": "4"}]))
    assert pairs.format == "prompt_completion"
    assert pairs.examples[0].messages == (Message("user", "2+2="), Message("assistant", "4"))


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from lampstand.training.base_model import BaseSource, load_tokenizer

    return load_tokenizer(BaseSource("smollm2", SMOLLM, "smollm2-135m-instruct"))


def _trained_runs(tokenizer: Any, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded text of each run of consecutive labelled tokens."""
    runs: list[list[int]] = []
    for position, label in enumerate(labels):
        if label == -100:
            continue
        assert label == ids[position]
        if runs and labels[position - 1] != -100:
            runs[-1].append(label)
        else:
            runs.append([label])
    return [tokenizer.decode(run) for run in runs]


def test_labels_cover_exactly_the_trained_assistant_turns(tokenizer: Any) -> None:
    from lampstand.training.encode import encode_example

    example = Example(1, (Message("system", "Be brief."), Message("user", "Capital of France?"),
                          Message("assistant", "Paris."), Message("user", "And of Italy?"),
                          Message("assistant", "Rome, I think.", weight=0), Message("user", "Spain?"),
                          Message("assistant", "Madrid\nis the capital.")))
    row = encode_example(tokenizer, example)
    assert _trained_runs(tokenizer, row.input_ids, row.labels) == ["Paris.<|im_end|>",
                                                                   "Madrid\nis the capital.<|im_end|>"]
    text = tokenizer.decode(row.input_ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "Rome, I think." in text


def test_prompt_completion_rows_use_the_chat_template(tokenizer: Any) -> None:
    from lampstand.training.encode import encode_example

    row = encode_example(tokenizer, Example(1, (Message("user", "2+2="), Message("assistant", "4"))))
    assert _trained_runs(tokenizer, row.input_ids, row.labels) == ["4<|im_end|>"]
    assert "<|im_start|>user\n2+2=<|im_end|>" in tokenizer.decode(row.input_ids)  # the default system turn first


def test_truncation_is_counted_and_rows_with_nothing_left_are_reported(tokenizer: Any, tmp_path: Path) -> None:
    from lampstand.training.encode import encode_dataset, encode_example

    long_answer = " ".join(["word"] * 200)
    data = load_training_file(_write(tmp_path, [_chat(("user", "short"), ("assistant", "ok")),
                                                _chat(("user", "tell"), ("assistant", long_answer)),
                                                _chat(("user", " ".join(["q"] * 300)), ("assistant", "never seen"))]))
    sequences, report = encode_dataset(tokenizer, data, max_seq_len=64)
    assert report.rows == 3 and report.truncated_rows == 2 and report.empty_lines == [3]
    assert report.sequences == len(sequences) == 2 and all(len(s.input_ids) <= 64 for s in sequences)
    full_lengths = [len(encode_example(tokenizer, example).input_ids) for example in data.examples]
    assert report.dropped_tokens == sum(n - 64 for n in full_lengths if n > 64)
    assert "2 rows cut" in report.summary() and "lines 3" in report.summary()
    with pytest.raises(InvalidRequest, match="no row has assistant tokens"):
        encode_dataset(tokenizer, data, max_seq_len=16)


def test_packing_keeps_every_row_and_restarts_positions(tokenizer: Any) -> None:
    from lampstand.training.encode import encode_dataset

    data = load_training_file(DATA / "fact_train.jsonl")
    plain, plain_report = encode_dataset(tokenizer, data, max_seq_len=256)
    packed, report = encode_dataset(tokenizer, data, max_seq_len=256, packing=True)
    assert report.packed and len(packed) < len(plain) and all(len(s.input_ids) <= 256 for s in packed)
    assert report.tokens == plain_report.tokens and report.label_tokens == plain_report.label_tokens
    first = packed[0]
    starts = [i for i, p in enumerate(first.position_ids) if p == 0]
    assert len(starts) > 1 and starts == [sum(len(r.input_ids) for r in plain[:k]) for k in range(len(starts))]


def test_manifest_round_trip_and_malformed(tmp_path: Path) -> None:
    from lampstand.training.manifest import (
        AdapterManifest,
        BaseInfo,
        DataInfo,
        file_sha256,
        read_manifest,
        write_manifest,
    )

    assert read_manifest(tmp_path) is None
    manifest = AdapterManifest(name="a", created=1, base=BaseInfo(None, "x.gguf", "/x.gguf", "0" * 64, "llama"),
                               data=DataInfo("1" * 64, None, 3, 0), hyperparameters={"rank": 4},
                               metrics={"train_loss": 1.5, "eval_loss": None, "eval_perplexity": None})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert json.loads((tmp_path / "manifest.json").read_text())["format"] == "lampstand-adapter/1"
    assert file_sha256(tmp_path / "manifest.json") == __import__("hashlib").sha256(
        (tmp_path / "manifest.json").read_bytes()).hexdigest()
    (tmp_path / "manifest.json").write_text('{"format": "lampstand-adapter/1", "name": "a"}')
    with pytest.raises(InvalidRequest, match="malformed adapter manifest"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(("out", "name", "under_dir"), [("mine", "mine", True), ("sub/dir/v2.1", "v2.1", False)])
def test_output_names(tmp_path: Path, out: str, name: str, under_dir: bool) -> None:
    from lampstand.training.config import resolve_output

    got_name, folder = resolve_output(out, tmp_path / "adapters")
    assert got_name == name and (folder.parent == tmp_path / "adapters") == under_dir


@pytest.mark.parametrize("out", [".hidden", "bad name", "a*b"])
def test_bad_output_names(tmp_path: Path, out: str) -> None:
    from lampstand.training.config import resolve_output

    with pytest.raises(InvalidRequest, match="must use only"):
        resolve_output(out, tmp_path)


def test_config_round_trips_to_cli_args() -> None:
    from lampstand.training.config import TrainConfig

    config = TrainConfig(base="smollm2", data=Path("t.jsonl"), out="x", rank=8, packing=True,
                         target_modules=["q_proj", "v_proj"], eval_data=Path("e.jsonl"))
    assert config.cli_args() == ["train", "--base", "smollm2", "--data", "t.jsonl", "--out", "x",
                                 "--eval", "e.jsonl", "--rank", "8", "--target-modules", "q_proj,v_proj",
                                 "--packing"]


def test_the_train_command_takes_its_options_and_defaults_from_the_config() -> None:
    """Every `TrainConfig` field is one `lampstand train` option with the config's default."""
    from dataclasses import MISSING, fields

    from lampstand.clients.cli import app
    from lampstand.training.config import TrainConfig
    from typer.main import get_command

    params = {p.opts[0]: p for p in get_command(app).commands["train"].params}  # type: ignore[attr-defined]
    by_field = {"eval_data": "--eval", "base_cache": "--no-base-cache", "config_path": "--config"}
    for spec in fields(TrainConfig):
        param = params[by_field.get(spec.name, "--" + spec.name.replace("_", "-"))]
        if spec.name in ("base", "data", "out"):
            assert param.required and spec.default is MISSING
        elif spec.name == "base_cache":
            assert spec.default is True and param.default is False and param.envvar == "LAMPSTAND_NO_BASE_CACHE"
        elif spec.name != "config_path":
            assert param.default == spec.default and param.help, spec.name
