"""The bounded GGUF scanner: hostile files are refused cleanly, real files read like `gguf` reads them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from crafted_gguf import HOSTILE_VARIANTS, write_crafted_ggufs
from lampstand.plugins.errors import InvalidModelFile
from lampstand.plugins.llama_cpp.gguf_check import GgufArray, scan_gguf
from lampstand.plugins.llama_cpp.gguf_info import read_gguf_info
from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path

SMOLLM = bundled_path(BUNDLED_MODELS[0])

# variant -> a fragment of the reason it is refused, so each fails for its own reason
EXPECTED_REASONS = {
    "zero_bytes": "the file is empty",
    "magic_only": "truncated: the version",
    "bad_magic": "not the GGUF magic",
    "bad_version": "version 4 is not supported",
    "huge_tensor_count": "tensor count 18446744073709551615 is impossible",
    "huge_kv_count": "metadata count 18446744073709551615 is impossible",
    "truncated_header": "'tokenizer.ggml.tokens' claims 100 items, impossible",
    "huge_string_length": "'general.architecture' claims 18446744073709551615 bytes",
    "huge_array_length": "'tokenizer.ggml.tokens' claims 4611686018427387904 items",
    "unknown_value_type": "unknown value type 57005",
    "too_many_dims": "claims 5 dimensions",
    "unknown_tensor_type": "unknown ggml type 57005",
    "misaligned_tensor_offset": "not a multiple of the alignment 32",
    "overlapping_tensors": "overlaps tensor",
    "offset_past_eof": "past the end of the file",
    "truncated_tensor_data": "'output.weight' ends at byte",
}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_crafted_ggufs(tmp_path_factory.mktemp("crafted"))


def test_every_variant_has_an_expected_reason() -> None:
    assert set(EXPECTED_REASONS) == set(HOSTILE_VARIANTS)


def test_crafted_files_are_small(crafted: dict[str, Path]) -> None:
    assert all(path.stat().st_size < 16 * 1024 for path in crafted.values())


def test_valid_crafted_file_passes(crafted: dict[str, Path]) -> None:
    header = scan_gguf(crafted["valid"])
    assert header.version == 3
    assert [t.type_name for t in header.tensors] == ["F32", "F32", "F16", "Q8_0"]
    assert header.metadata["general.languages"] == GgufArray(gguf.GGUFValueType.STRING, 1, ("en",))
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, GgufArray) and tokens.length == 100 and tokens.values is None


@pytest.mark.parametrize("variant", sorted(EXPECTED_REASONS))
def test_hostile_file_is_refused(crafted: dict[str, Path], variant: str) -> None:
    path = crafted[variant]
    with pytest.raises(InvalidModelFile) as caught:
        scan_gguf(path)
    message = caught.value.message
    assert message.startswith(f"{path.name} is not a valid GGUF file: ")
    assert EXPECTED_REASONS[variant] in message
    assert str(path.parent) not in message and os.sep + path.name not in message
    assert caught.value.status_code == 400


def test_read_gguf_info_refuses_hostile_file(crafted: dict[str, Path]) -> None:
    with pytest.raises(InvalidModelFile, match="^huge_kv_count.gguf is not a valid GGUF file"):
        read_gguf_info(crafted["huge_kv_count"])


def _refused_promptly(path: Path) -> str:
    """The message `scan_gguf` refuses `path` with; fails, instead of hanging, if it blocks."""
    outcome: list[BaseException | None] = []

    def scan() -> None:
        try:
            scan_gguf(path)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread below
            outcome.append(exc)

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert outcome, f"scan_gguf blocked on {path}"
    assert isinstance(outcome[0], InvalidModelFile), outcome[0]
    return outcome[0].message


def _fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "model.gguf")
    return tmp_path / "model.gguf"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "model.gguf").mkdir()
    return tmp_path / "model.gguf"


def _device(tmp_path: Path) -> Path:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero on this platform")
    return Path("/dev/zero")


@pytest.mark.parametrize(
    ("make", "kind"), [(_fifo, "a FIFO"), (_directory, "a directory"), (_device, "a character device")]
)
def test_non_regular_file_is_refused(tmp_path: Path, make: Callable[[Path], Path], kind: str) -> None:
    path = make(tmp_path)
    message = _refused_promptly(path)
    assert message == f"{path.name} is not a valid GGUF file: it is {kind}, not a regular file"


def test_missing_file_is_refused_without_its_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile) as caught:
        scan_gguf(tmp_path / "absent.gguf")
    assert caught.value.message == "absent.gguf cannot be read: No such file or directory"


@pytest.fixture(scope="module")
def smollm_reader() -> gguf.GGUFReader:
    assert SMOLLM is not None, "the bundled SmolLM2 package is not installed"
    return gguf.GGUFReader(SMOLLM)


def test_bundled_model_tensor_table_matches_gguf(smollm_reader: gguf.GGUFReader) -> None:
    assert SMOLLM is not None
    header = scan_gguf(SMOLLM)
    assert header.file_bytes == SMOLLM.stat().st_size
    assert header.data_offset == smollm_reader.data_offset
    assert [(t.name, t.shape, t.ggml_type, header.data_offset + t.offset, t.nbytes) for t in header.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset), int(t.n_bytes))
        for t in smollm_reader.tensors
    ]


def test_bundled_model_info_matches_gguf(smollm_reader: gguf.GGUFReader) -> None:
    assert SMOLLM is not None
    fields = smollm_reader.fields

    def value(key: str) -> object:
        return fields[key].contents()

    arch = str(value("general.architecture"))
    expected = dict(
        file_bytes=SMOLLM.stat().st_size,
        architecture=arch,
        n_layer=value(f"{arch}.block_count"),
        n_embd=value(f"{arch}.embedding_length"),
        n_head=value(f"{arch}.attention.head_count"),
        n_head_kv=value(f"{arch}.attention.head_count_kv"),
        n_ctx_train=value(f"{arch}.context_length"),
        n_vocab=len(fields["tokenizer.ggml.tokens"].data),
        pooling_type=value(f"{arch}.pooling_type") if f"{arch}.pooling_type" in fields else None,
    )
    info = read_gguf_info(SMOLLM)
    assert {name: getattr(info, name) for name in expected} == expected
    assert info.n_vocab == 49152 and info.architecture == "llama"
    assert info.kv_cache_bytes(2048) == 2 * 2048 * info.n_layer * (info.n_embd * info.n_head_kv // info.n_head) * 2
