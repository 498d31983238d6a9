"""Our requests in vLLM's terms and vLLM's outputs in ours: sampling settings, structured
outputs (JSON schema, JSON mode, forced tool calls) and stream chunks with logprobs.

vLLM is imported inside the functions that build its objects, never at module import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from lampstand.plugins.errors import InvalidRequest, UnsupportedParameter
from lampstand.plugins.tool_calls import forced_call_schema, is_forced_tool_call
from lampstand.plugins.types import (
    ChatRequest,
    FinishReason,
    GenerationChunk,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
    Usage,
)

__all__ = ["structured_output", "vllm_sampling", "chunks_from_outputs"]

ANY_OBJECT: dict[str, Any] = {"type": "object"}
FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "stop"}


def structured_output(request: ChatRequest) -> dict[str, Any] | None:
    """The JSON schema a chat answer must follow (forced call, json_schema, json_object), or None."""
    if is_forced_tool_call(request):
        return forced_call_schema(request.tools, request.tool_choice)
    fmt = request.response_format
    if fmt.kind == "json_object":
        return ANY_OBJECT
    if fmt.kind == "json_schema":
        return fmt.schema or ANY_OBJECT
    return None


def vllm_sampling(sampling: SamplingParams, schema: dict[str, Any] | None) -> Any:
    """vLLM's `SamplingParams` for one sequence, streaming deltas."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams as Params, StructuredOutputsParams

    if sampling.repeat_penalty is not None and sampling.repeat_penalty <= 0:
        raise InvalidRequest("repeat_penalty must be positive", param="repeat_penalty")
    try:
        return Params(
            n=1, max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            seed=sampling.seed, stop=list(sampling.stop) or None,
            presence_penalty=sampling.presence_penalty, frequency_penalty=sampling.frequency_penalty,
            repetition_penalty=sampling.repeat_penalty or 1.0,
            top_k=sampling.top_k or 0, min_p=sampling.min_p or 0.0,
            logit_bias=dict(sampling.logit_bias) or None,
            logprobs=sampling.top_logprobs if sampling.logprobs else None,
            structured_outputs=StructuredOutputsParams(json=json.dumps(schema)) if schema is not None else None,
            output_kind=RequestOutputKind.DELTA,
        )
    except ValueError as exc:  # vLLM checks ranges and combinations itself
        raise UnsupportedParameter(f"vLLM refused these sampling settings: {exc}") from exc


def _token_bytes(text: str | None) -> tuple[int, ...]:
    return tuple((text or "").encode("utf-8"))


def _logprobs(token_ids: Sequence[int], positions: Sequence[dict[int, Any]] | None, top_n: int) -> tuple[
        TokenLogprob, ...]:
    if not positions:
        return ()
    found = []
    for token, alternatives in zip(token_ids, positions):
        chosen = alternatives[token]
        ranked = sorted(alternatives.items(), key=lambda item: item[1].rank or 0)[:top_n]
        found.append(TokenLogprob(
            token=chosen.decoded_token or "", logprob=float(chosen.logprob), bytes=_token_bytes(chosen.decoded_token),
            top_logprobs=tuple(TopLogprob(token=lp.decoded_token or "", logprob=float(lp.logprob),
                                          bytes=_token_bytes(lp.decoded_token)) for _, lp in ranked)))
    return tuple(found)


def chunks_from_outputs(outputs: Iterator[Any], n_prompt: int, top_n: int) -> Iterator[GenerationChunk]:
    """Our chunks from vLLM's `RequestOutput` deltas of one sequence; the last has finish and usage."""
    generated = 0
    for output in outputs:
        (seq,) = output.outputs
        generated += len(seq.token_ids)
        logprobs = _logprobs(seq.token_ids, seq.logprobs, top_n)
        if seq.finish_reason is None:
            if seq.text or logprobs:
                yield GenerationChunk(text=seq.text, logprobs=logprobs)
            continue
        cached = output.num_cached_tokens if isinstance(output.num_cached_tokens, int) else None
        yield GenerationChunk(text=seq.text, logprobs=logprobs, finish_reason=FINISH.get(seq.finish_reason, "stop"),
                              usage=Usage(prompt_tokens=n_prompt, completion_tokens=generated, cached_tokens=cached))
        return
