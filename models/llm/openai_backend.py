"""Any OpenAI-compatible chat-completions endpoint: vLLM, TGI, Ollama, llama.cpp, hosted.

One HTTP session with keep-alive per backend. Status 429 and 5xx, timeouts and refused
connections are transient (retried by the guard); other 4xx are not. The reply text is
parsed strictly (``models.reply``). The API key goes only into the Authorization header.
"""

from __future__ import annotations

import asyncio

import aiohttp

from models.llm.base import Backend, BackendError, DimensionRequest, TransientError
from models.reply import DimensionReply, parse_reply


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = 30.0,
                 max_tokens: int = 48):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_tokens = max_tokens
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))
        return self._session

    async def score(self, request: DimensionRequest) -> DimensionReply:
        body = {"model": self.model_name, "messages": request.messages,
                "temperature": 0, "max_tokens": self._max_tokens}
        try:
            async with self._client().post(self.url, json=body) as response:
                if response.status == 429 or response.status >= 500:
                    raise TransientError(f"HTTP {response.status}")
                if response.status >= 400:
                    raise BackendError(f"HTTP {response.status}: {(await response.text())[:200]}")
                payload = await response.json(content_type=None)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a body that is not JSON
            raise TransientError(f"response is not JSON: {exc}") from exc
        try:
            text = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise TransientError("response has no choices[0].message.content") from exc
        return parse_reply(text)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
