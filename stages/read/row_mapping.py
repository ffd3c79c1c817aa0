"""Field mapping: one source record (a dict) -> the pipeline's prompt-row fields, never raising.

`RowMapping` is built once per shard from `input.*`: which field holds the id (`id_field`; ints and
strings alike, kept as a string), the prompt (`prompt_field`), chat messages (`messages_field`) or a
`prompt_template` with `{field}` placeholders (a missing or null field is that row's error, naming it),
and the optional per-row overrides (`max_new_tokens`, `temperature`, `top_p`, `top_k`, `steps`,
`tau_low_logit`).
`consumed` lists the fields it reads, so the read stage can pass every other field through.
"""
from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from typing import Any

#: Optional per-row override fields of the source -> the row column carrying the value.
OVERRIDE_FIELDS = {"max_new_tokens": "max_new_tokens", "temperature": "row_temperature", "steps": "row_steps",
                   "tau_low_logit": "row_tau_low_logit", "top_p": "row_top_p", "top_k": "row_top_k"}


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text(name: str, value: Any) -> tuple[Any, str]:
    """Binary values (Parquet BYTE_ARRAY columns some writers leave without a UTF-8 annotation) as text,
    or the problem when they are not UTF-8; any other value unchanged."""
    if not isinstance(value, bytes):
        return value, ""
    try:
        return value.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"{name} is binary, not UTF-8 text (invalid byte at {e.start + 1})"


def positive_int(name: str, value: Any) -> tuple[int, str]:
    """(value or -1 when absent, problem). Integral floats (16.0, what pandas writes for an int column with
    gaps) are accepted and NaN counts as absent."""
    if _absent(value):
        return -1, ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return -1, f"{name} must be a positive integer, got {value!r}"
    return value, ""


def finite_float(name: str, value: Any, low: float | None = None) -> tuple[float | None, str]:
    """(value or None when absent, problem): a finite number, >= `low` when given."""
    if _absent(value):
        return None, ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"{name} must be a finite number, got {value!r}"
    if low is not None and value < low:
        return None, f"{name} must be >= {low}, got {value!r}"
    return float(value), ""


def template_fields(template: str) -> list[str]:
    """The `{field}` names a prompt template reads (format-spec and conversion parts ignored)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


@dataclass
class RowMapping:
    id_field: str = "id"
    prompt_field: str = "prompt"
    messages_field: str = "messages"
    prompt_template: str = ""

    @classmethod
    def from_config(cls, inp) -> "RowMapping":
        return cls(inp.id_field, inp.prompt_field, inp.messages_field, inp.prompt_template)

    @property
    def consumed(self) -> set[str]:
        """Source fields this mapping reads (not passed through unless `input.keep_fields` names them)."""
        used = {self.id_field, *OVERRIDE_FIELDS}
        if self.prompt_template:
            return used | set(template_fields(self.prompt_template))
        return used | {self.prompt_field, self.messages_field}

    def absent(self, columns) -> list[str]:
        """Fields this mapping needs that `columns` lack: the id field, every template field, or (no template)
        the prompt and messages fields when both are missing. Rows of such a source are all errors."""
        have = set(columns)
        missing = [f for f in [self.id_field, *template_fields(self.prompt_template)] if f not in have]
        if not self.prompt_template and self.prompt_field not in have and self.messages_field not in have:
            missing += [self.prompt_field, self.messages_field]
        return missing

    def map(self, rec: dict) -> dict:
        """{id, prompt, messages, max_new_tokens, row_temperature, row_steps, row_tau_low_logit, row_top_p,
        row_top_k, error}."""
        out = {"id": "", "prompt": None, "messages": None, "error": ""}
        problems = []
        rid, bad = _text(self.id_field, rec.get(self.id_field))
        out["id"] = "" if _absent(rid) else str(rid)
        if bad:
            problems.append(bad)
        elif out["id"] == "":
            problems.append(f"missing id (field {self.id_field!r})" if self.id_field != "id" else "missing id")
        if self.prompt_template:
            missing = [f for f in template_fields(self.prompt_template) if _absent(rec.get(f))]
            if missing:
                problems.append(f"prompt_template: missing field {', '.join(map(repr, missing))}")
            else:
                try:
                    out["prompt"] = self.prompt_template.format_map(rec)
                except (ValueError, KeyError, IndexError, AttributeError) as e:
                    problems.append(f"prompt_template: {type(e).__name__}: {e}")
        else:
            problems += self._prompt(rec, out)
        out["max_new_tokens"], p1 = positive_int("max_new_tokens", rec.get("max_new_tokens"))
        out["row_steps"], p2 = positive_int("steps", rec.get("steps"))
        out["row_temperature"], p3 = finite_float("temperature", rec.get("temperature"), low=0.0)
        out["row_tau_low_logit"], p4 = finite_float("tau_low_logit", rec.get("tau_low_logit"))
        out["row_top_p"], p5 = finite_float("top_p", rec.get("top_p"))
        if out["row_top_p"] is not None and not 0.0 < out["row_top_p"] <= 1.0:
            out["row_top_p"], p5 = None, f"top_p must be in (0, 1], got {rec.get('top_p')!r}"
        out["row_top_k"], p6 = -1, ""
        if not _absent(rec.get("top_k")):   # 0 = off, like decode.top_k
            k = rec.get("top_k")
            k = int(k) if isinstance(k, float) and k.is_integer() else k
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                p6 = f"top_k must be a non-negative integer, got {rec.get('top_k')!r}"
            else:
                out["row_top_k"] = k
        out["error"] = "; ".join(problems + [p for p in (p1, p2, p3, p4, p5, p6) if p])
        return out

    def _prompt(self, rec: dict, out: dict) -> list[str]:
        prompt, bad = _text(self.prompt_field, rec.get(self.prompt_field))
        messages = rec.get(self.messages_field)
        if bad:
            return [bad]
        if prompt is not None and not isinstance(prompt, str):
            return [f"{self.prompt_field} must be a string, got {type(prompt).__name__}"]
        out["prompt"] = prompt
        if messages is not None:
            out["messages"] = json.dumps(messages)
        elif prompt is None:
            return [f"missing prompt (need {self.prompt_field!r} or {self.messages_field!r})"]
        return []
