"""One client for an OpenAI-compatible teacher (`seedbed serve`, vLLM, llama.cpp's server, a hosted API): what
`seedbed data synth` and distillation's sequence mode both ask.

    teacher = TeacherClient("http://127.0.0.1:8000/v1", requests_per_s=2)
    teacher.chat([{"role": "user", "content": "Name three colours."}], max_tokens=64)

Requests are rate-limited (at most `requests_per_s` started per second, across threads), bounded in time, and
retried with exponential backoff on timeouts, connection errors, 429 and 5xx; any other answer is an error that
names the URL and shows what the server said. The API key, if the server wants one, is read from
SEEDBED_TEACHER_API_KEY (or OPENAI_API_KEY), never from a recipe (recipes are saved next to what they make).
"""

from __future__ import annotations

import os
import threading
import time

from seedbed.errors import RecipeError

RETRYABLE = {408, 429, 500, 502, 503, 504}


class RateLimiter:
    """At most `per_second` starts a second: each caller waits for its slot (thread-safe); 0 or less: no limit."""

    def __init__(self, per_second: float, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1 / per_second if per_second > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = self.clock()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


class TeacherClient:
    def __init__(self, url: str, model: str | None = None, *, requests_per_s: float = 0, timeout_s: float = 600,
                 retries: int = 2):
        import httpx

        base = url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        key = os.environ.get("SEEDBED_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if key and not key_may_travel(self.base):
            raise RecipeError(f"teacher_url: {self.base} is plain HTTP to another machine, and an API key is set "
                              "(SEEDBED_TEACHER_API_KEY or OPENAI_API_KEY): it would cross the network readable. "
                              "Use https://, a server on this machine, or unset the key")
        self.http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {key}"} if key else {})
        self.limiter = RateLimiter(requests_per_s)
        self.retries = retries
        self.requests = 0
        self.model = model or self.only_model()

    def only_model(self) -> str:
        served = [m["id"] for m in self.request("GET", "/models")["data"]]
        if len(served) != 1:
            raise RecipeError(f"teacher_name: {self.base} serves {served}; say which one is the teacher")
        return served[0]

    def chat(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             seed: int | None = None) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p}
        if seed is not None:
            body["seed"] = seed
        return self.request("POST", "/chat/completions", body)["choices"][0]["message"]["content"] or ""

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            self.limiter.wait()
            self.requests += 1
            try:
                response = self.http.request(method, self.base + path, json=body)
            except httpx.HTTPError as e:  # timeouts, refused connections
                if attempt == self.retries:
                    raise RecipeError(f"teacher_url: {self.base} did not answer: {e}") from None
            else:
                if response.status_code == 200:
                    return response.json()
                if response.status_code not in RETRYABLE or attempt == self.retries:
                    raise RecipeError(f"teacher_url: {self.base} answered {response.status_code}: {response.text[:300]}")
            time.sleep(min(30.0, 0.5 * 2**attempt))  # exponential backoff before the next try
        raise AssertionError("unreachable")


def key_may_travel(url: str) -> bool:
    """Whether an API key may be sent to `url`: over HTTPS, or plain HTTP to this machine only.

    >>> key_may_travel("https://api.openai.com/v1"), key_may_travel("http://127.0.0.1:8000/v1")
    (True, True)
    >>> key_may_travel("http://teacher.example.com/v1")
    False
    """
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

