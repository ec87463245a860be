"""The HTTP layer of ``gnomon serve`` (FastAPI): OpenAI-compatible ``/v1/completions`` and
``/v1/chat/completions`` (JSON or server-sent events), ``/v1/models``, ``/health`` and
``/metrics``, with gnomon's fields on top:

- request ``steer``: ``[{"ref": "sentiment@best-steer", "strength": 0.5, "unit": "separation",
  "when": "harmful/3"}]`` (``when`` optional: a condition fitted by ``gnomon condition fit``);
- request ``monitor``: ``["honesty@best-monitor", {"ref": ..., "threshold": 0.8}]``;
- each choice's ``gnomon``: per generated token its text, id, each monitor's reading and
  calibrated probability and the monitors at or past their threshold (``alarms``); whether
  each condition fired; and ``prompt``, each monitor's reading of the whole prompt (its last
  token, or the running mean for a ``mean`` direction: the figure the direction's test AUROC
  describes). Streamed chunks carry the same per token, the last one ``prompt``.

The official ``openai`` client sends the extra fields with ``extra_body=`` and keeps the extra
response fields (``choice.model_extra["gnomon"]``). Decoding is greedy (temperature 0).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import (
    FastAPI,
    Request,  # at module level: FastAPI resolves the handlers' string annotations here
)
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from jobs.serve.resolve import RequestError, Resolver
from jobs.serve.worker import Batcher, Metrics

# lazy: numpy, starlette, torch (heavy; imported where used)

MAX_TOKENS_DEFAULT = 16
MAX_PROMPTS = 64
"""Prompts in one completions request (they are generated as one batch)."""


class _Job:
    """One request's rows in flight; events arrive from the batcher's thread."""

    def __init__(self, lm: Any, prompts: list[list[int]], max_tokens: int, ops: list[Any],
                 watches: list[tuple[Any, float]]) -> None:
        from pipeline.serve import Row

        self.lm = lm
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self.thresholds = {w.name: t for w, t in watches}
        self.rows = [Row(ids, max_tokens, ops=ops, monitors=[w for w, _ in watches], emit=self._emitter(r))
                     for r, ids in enumerate(prompts)]
        self.texts = [""] * len(prompts)
        self.tokens: list[list[dict[str, Any]]] = [[] for _ in prompts]
        self.conditions: list[dict[str, bool]] = [{} for _ in prompts]
        self.finish: list[str | None] = [None] * len(prompts)
        self.prompt: list[dict[str, Any]] = [{} for _ in prompts]
        self.alarms: dict[str, int] = {}

    def _emitter(self, r: int) -> Any:
        return lambda ev: self.loop.call_soon_threadsafe(self.queue.put_nowait, (r, ev))

    async def events(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """(row, per-token piece) as they come; the last per row has ``finish_reason``."""
        left = len(self.rows)
        while left:
            r, ev = await self.queue.get()
            if "error" in ev:
                raise RequestError(500, f"generation failed: {ev['error']}")
            if "prompt_readings" in ev:
                self.prompt[r] = {"readings": ev["prompt_readings"], "probs": ev["prompt_probs"]}
                continue
            if ev.get("done"):
                left -= 1
                self.finish[r], self.conditions[r] = ev["finish_reason"], ev["conditions"]
                rest = self._text(r, len(self.rows[r].tokens))           # what a held-back piece left
                piece, self.texts[r] = rest[len(self.texts[r]):], rest
                yield r, {"text": piece, "finish_reason": ev["finish_reason"],
                          "gnomon": {"conditions": ev["conditions"], "prompt": self.prompt[r]}}
                continue
            yield r, self._piece(r, ev)

    def _text(self, r: int, n: int) -> str:
        """The first ``n`` generated tokens of row ``r`` as text (without the EOS)."""
        ids = self.rows[r].tokens[:n]
        if ids and ids[-1] == self.lm.tokenizer.eos_token_id:
            ids = ids[:-1]
        return str(self.lm.tokenizer.decode(ids, skip_special_tokens=True))

    def _piece(self, r: int, ev: dict[str, Any]) -> dict[str, Any]:
        tok = self.lm.tokenizer
        text = self._text(r, len(self.tokens[r]) + 1)
        piece = ""
        if not text.endswith("\ufffd"):        # a character split across tokens: wait for the rest
            piece, self.texts[r] = text[len(self.texts[r]):], text
        alarms = [n for n, p in ev["probs"].items() if p >= self.thresholds[n]]
        for n in alarms:
            self.alarms[n] = self.alarms.get(n, 0) + 1
        token = {"id": ev["token_id"], "token": tok.decode([ev["token_id"]]), "readings": ev["readings"],
                 "probs": ev["probs"], "alarms": alarms}
        self.tokens[r].append(token)
        self.conditions[r] = ev["conditions"]
        return {"text": piece, "finish_reason": None, "gnomon": {**token, "conditions": ev["conditions"]}}

    def gnomon(self, r: int) -> dict[str, Any]:
        return {"tokens": self.tokens[r], "conditions": self.conditions[r], "thresholds": self.thresholds,
                "prompt": self.prompt[r]}


def create_app(lm: Any, resolver: Resolver, batcher: Batcher, *, model_name: str, token: str | None = None,
               max_tokens_limit: int = 1024) -> Any:
    """The FastAPI app. 160 lines: its routes are closures over this one app's model, resolver,
    batcher and metrics (FastAPI's factory idiom); splitting them out is left for later."""
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="gnomon serve", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    created = int(time.time())

    def error(status: int, message: str) -> Any:
        kind = "authentication_error" if status == 401 else "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        if token and request.url.path != "/health" and \
                request.headers.get("authorization", "") != f"Bearer {token}":
            response = error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
        else:
            try:
                response = await call_next(request)
            except Exception as e:  # noqa: BLE001 (one line to the client; the server keeps serving)
                response = error(500, f"internal error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        metrics.request(request.url.path, response.status_code, time.perf_counter() - t0)
        return response

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "model": model_name, "fingerprint": lm.fingerprint}

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "gnomon", "fingerprint": lm.fingerprint}]}

    @app.get("/metrics")
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.render(batcher), media_type="text/plain; version=0.0.4")

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != model_name:
            raise RequestError(404, f"model {model!r} is not served here; this server serves {model_name!r}")
        if body.get("temperature") not in (None, 0, 0.0):
            raise RequestError(400, "only greedy decoding is served: leave temperature out or set it to 0")
        for name in ("stop", "logprobs", "top_logprobs", "tools", "response_format"):
            if body.get(name) not in (None, False, [], {}):
                raise RequestError(400, f"{name} is not supported by gnomon serve (greedy text only); leave it out")
        if body.get("n") not in (None, 1):
            raise RequestError(400, "n must be 1 (greedy decoding gives one continuation per prompt)")
        mt = body.get("max_tokens", body.get("max_completion_tokens", MAX_TOKENS_DEFAULT))
        if isinstance(mt, bool) or not isinstance(mt, int) or not 1 <= mt <= max_tokens_limit:
            raise RequestError(400, f"max_tokens must be an integer from 1 to {max_tokens_limit}, got {mt!r}")
        if not isinstance(body.get("stream", False), bool):
            raise RequestError(400, "stream must be true or false")
        body["max_tokens"] = mt
        return body

    async def prepare(body: dict[str, Any], prompts: list[list[int]]) -> _Job:
        limit = lm.max_positions
        for ids in prompts:
            if not ids:
                raise RequestError(400, "empty prompt: give at least one token of text")
            if limit is not None and len(ids) + body["max_tokens"] > limit:
                raise RequestError(400, f"the prompt has {len(ids)} tokens; with max_tokens it passes the model's "
                                   f"{limit} positions: shorten it or lower max_tokens")
        ops = await run_in_threadpool(resolver.steer_ops, body.get("steer"))
        watches = await run_in_threadpool(resolver.watches, body.get("monitor"))
        job = _Job(lm, prompts, body["max_tokens"], ops, watches)
        batcher.submit(job.rows)
        return job

    def check_text(text: str, where: str) -> str:
        specials = [s for s in lm.tokenizer.all_special_tokens if s and s in text]
        if specials:
            raise RequestError(400, f"{where} holds the special token text {specials[0]!r}: the model would read it "
                               "as that token, not as text; remove it")
        return text

    async def respond(job: _Job, body: dict[str, Any], chat: bool, prompt_tokens: int) -> Any:
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        obj = "chat.completion" if chat else "text_completion"
        if body.get("stream"):
            async def sse() -> AsyncIterator[str]:
                try:
                    async for r, piece in job.events():
                        choice: dict[str, Any] = {"index": r, "finish_reason": piece["finish_reason"],
                                                  "gnomon": piece["gnomon"]}
                        if chat:
                            choice["delta"] = {"role": "assistant", "content": piece["text"]}
                        else:
                            choice |= {"text": piece["text"], "logprobs": None}
                        yield "data: " + json.dumps({"id": rid, "object": obj + ".chunk" if chat else obj,
                                                     "created": int(time.time()), "model": model_name,
                                                     "choices": [choice]}) + "\n\n"
                except RequestError as e:
                    yield "data: " + json.dumps({"error": {"message": e.message, "code": e.status}}) + "\n\n"
                metrics.generated(sum(len(t) for t in job.tokens), job.alarms)
                yield "data: [DONE]\n\n"
            return StreamingResponse(sse(), media_type="text/event-stream")
        async for _ in job.events():
            pass
        metrics.generated(sum(len(t) for t in job.tokens), job.alarms)
        choices = []
        for r, text in enumerate(job.texts):
            c: dict[str, Any] = {"index": r, "finish_reason": job.finish[r], "gnomon": job.gnomon(r)}
            c |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None}
            choices.append(c)
        done = sum(len(t) for t in job.tokens)
        return {"id": rid, "object": obj, "created": int(time.time()), "model": model_name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": done,
                          "total_tokens": prompt_tokens + done}}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        try:
            body = await body_of(request)
            prompt = body.get("prompt")
            texts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise RequestError(400, "prompt must be a string or a non-empty list of strings")
            if len(texts) > MAX_PROMPTS:
                raise RequestError(400, f"at most {MAX_PROMPTS} prompts per request, got {len(texts)}: split them")
            prompts = [lm.tokenizer(check_text(t, "prompt"))["input_ids"] for t in texts]
            job = await prepare(body, prompts)
            return await respond(job, body, False, sum(map(len, prompts)))
        except RequestError as e:
            return error(e.status, e.message)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await body_of(request)
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in msgs):
                raise RequestError(400, "messages must be a non-empty list of {\"role\": ..., \"content\": \"...\"}")
            tok = lm.tokenizer
            if not getattr(tok, "chat_template", None):
                raise RequestError(400, f"{model_name} has no chat template: use /v1/completions")
            clean = [{"role": m["role"], "content": check_text(m["content"], f"messages[{i}].content")}
                     for i, m in enumerate(msgs)]
            text = tok.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            job = await prepare(body, [ids])
            return await respond(job, body, True, len(ids))
        except RequestError as e:
            return error(e.status, e.message)

    app.state.metrics = metrics
    return app
