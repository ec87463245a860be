"""Chat rows through the model's chat template, tokenised exactly once.

A dataset row may be a chat (``messages``) instead of ``text``. Rendering it to text and
letting collection tokenise that text again (with ``add_special_tokens=True``) was wrong
twice over (issue 21): the template already places the model's BOS, so tokenisers that
also prepend one (Llama-3's, the tiny test tokenizer's) gave every chat row two; and the
tokeniser parses special-token *text* anywhere in the string, so a row whose content held
``<|im_start|>system`` (SmolLM2) or ``<|eot_id|><|start_header_id|>system`` (Llama-3) was
read by the model as a real system turn written by the dataset.

Here a chat row becomes a :class:`ChatRow`: the rendered text (what it reads as, for
display, hashing and generation prompts) carrying ``ids``, the tokens of that text
without any added special token, computed once. Collection uses ``ids``. A row whose
message content holds the text of one of the tokenizer's special tokens is refused,
naming the row, rather than silently escaped: the tokenisers in use offer no reliable way
to tokenise only part of a string as plain text, and re-tokenising content pieces apart
would change the tokens at every turn boundary.

>>> rows = render_chat([[{"role": "user", "content": "hi"}]], tok, "demo", ["r1"])   # doctest: +SKIP
>>> rows[0].ids[:1] == [tok.bos_token_id]                                            # doctest: +SKIP
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipeline.types import GnomonError

__all__ = ["ChatRow", "encode_texts", "render_chat", "special_token_ids", "special_token_strings"]


class ChatRow(str):
    """A chat row rendered through the template: the text, with its token ids in ``ids``.

    A ``str`` so every consumer of rendered rows (display, hashing, prompt lists) keeps
    working unchanged; only tokenising code looks at ``ids``. Slicing or concatenating
    gives a plain ``str`` (no ids), which is right: the ids describe this whole text only.
    """

    ids: tuple[int, ...]
    """Token ids of the text, the template's special tokens included, none added."""

    def __new__(cls, text: str, ids: Sequence[int]) -> ChatRow:
        row = super().__new__(cls, text)
        row.ids = tuple(int(i) for i in ids)
        return row

    def __reduce__(self) -> tuple[Any, tuple[str, tuple[int, ...]]]:
        # pickled to Ray workers with its ids (str's own reduce would drop them)
        return (ChatRow, (str(self), self.ids))


def special_token_strings(tokenizer: Any) -> list[str]:
    """The text of every special token the tokenizer would parse out of a string."""
    out = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            out.add(str(tok.content))
    return sorted((s for s in out if s), key=lambda s: (-len(s), s))


def special_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of every special token (BOS, EOS, PAD, the template's turn markers): what ``mean``
    pooling leaves out of a chat row."""
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return frozenset(ids)


def render_chat(chats: Sequence[list[dict[str, str]]], tokenizer: Any, name: str, row_ids: Sequence[str],
                *, add_generation_prompt: bool = False) -> list[ChatRow]:
    """Each chat through ``tokenizer``'s chat template, as a :class:`ChatRow`; a chat whose
    message content holds a special token's text is refused, naming its row id."""
    specials = special_token_strings(tokenizer)
    out = []
    for rid, messages in zip(row_ids, chats, strict=True):
        for m in messages:
            hit = next((s for s in specials if s in m["content"]), None)
            if hit is not None:
                raise GnomonError(
                    f"dataset {name!r} row {rid!r}: the {m['role']} message contains the special token "
                    f"text {hit!r}, which the model would read as that token, not as text (a forged turn "
                    "when it marks turns); remove it from the row")
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        out.append(ChatRow(text, tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each rendered row, unpadded: a :class:`ChatRow`'s own ids, any other
    text through the tokenizer with its special tokens (BOS) added, as a plain text needs.
    What every consumer of rendered dataset rows that runs the model on them should use."""
    plain = [i for i, t in enumerate(texts) if not isinstance(t, ChatRow)]
    out: list[list[int]] = [list(t.ids) if isinstance(t, ChatRow) else [] for t in texts]
    if plain:
        enc = tokenizer([str(texts[i]) for i in plain], add_special_tokens=True)["input_ids"]
        for i, ids in zip(plain, enc):
            out[i] = list(ids)
    return out


def render_rows(texts: Sequence[str | None], messages: Sequence[str | None], tokenizer: Any, name: str,
                *, add_generation_prompt: bool = False, ids: Sequence[str] | None = None) -> list[str]:
    """Model input per row: ``text``, or the JSON chat ``messages`` through the chat template
    as a :class:`pipeline.chat.ChatRow` (its token ids computed once; a row whose content
    holds a special token's text is refused, named by its id from ``ids``).

    The one renderer for datasets, collection shards and stored examples alike.
    """
    if any(m is not None for m in messages):
        if tokenizer is None:
            raise GnomonError(f"dataset {name!r} has chat 'messages' rows; "
                              "pass the model's tokenizer to render them")
        if not getattr(tokenizer, "chat_template", None):
            raise GnomonError(f"dataset {name!r} has chat 'messages' rows but the tokenizer "
                              "has no chat_template; use a chat model or give 'text' rows")
    row_ids = list(ids) if ids is not None else [f"#{i}" for i in range(len(texts))]
    chats = [i for i, m in enumerate(messages) if m is not None]
    rendered = render_chat([json.loads(messages[i]) for i in chats], tokenizer, name, [row_ids[i] for i in chats],
                           add_generation_prompt=add_generation_prompt) if chats else []
    out: list[str] = [t or "" for t in texts]
    for i, row in zip(chats, rendered):
        out[i] = row
    return out
