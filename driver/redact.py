"""Keep credentials out of everything the pipeline writes: the manifest, the failure log, the error line.

Credentials come from the environment (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, ...) and never from the
config (its schema has no key or secret field, so `storage.secret=...` is an unknown key, exit 2), but a
URL can carry them (`https://user:secret@host/`) and an exception message can quote anything. So what is
written passes through here: values of secret-looking environment variables (8 characters or more, so
"testing" or "1" never blank out ordinary words) and the user-info part of URLs become `***`, and
config keys that name a secret have their values replaced.
"""
from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
#: Environment variable names whose values are secrets.
SECRET_ENV = re.compile(r"(?:^|_)(?:SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?|PRIVATE|ACCESS_KEY|API_KEY|KEY)(?:_|$)",
                        re.I)
#: Config / mapping keys whose values are secrets (`key` / `secret` are s3fs's option names).
SECRET_KEY = re.compile(r"^(?:\w*_)?(?:secret|secret_access_key|access_key_id|password|passwd|credentials?|"
                        r"private_key|api_key|session_token|token)$|^key$", re.I)
#: `scheme://user[:password]@` in a URL.
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)[^/\s@'\"]+@")
MIN_SECRET_CHARS = 8


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """Values of the secret-looking variables in `env` (default: this process's environment), longest first."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if SECRET_ENV.search(k) and len(v) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    """`text` with secret values and URL user-info masked."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, MASK)
    return URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def scrub(value: Any, secrets: list[str] | None = None) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string scrubbed and secret-named keys masked."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY.search(k) and v not in (None, "")
                    else scrub(v, secrets)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return scrub_text(value, secrets) if isinstance(value, str) else value
