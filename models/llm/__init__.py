"""LLM backends behind one interface, and the reliability guard around them."""

from models.llm.base import Backend, BackendError, DimensionRequest, TransientError


def make_backend(name: str, *, url: str = "", model: str = "", api_key: str = "",
                 timeout_s: float = 30.0) -> Backend:
    """The backend the settings name: ``openai``, ``hf`` or ``heuristic``."""
    if name == "openai":
        from models.llm.openai_backend import OpenAIBackend

        if not url:
            raise BackendError("the openai backend needs a base URL (PAIRSTREAM_LLM_URL)")
        return OpenAIBackend(url, model or "default", api_key, timeout_s)
    if name == "hf":
        from models.llm.hf_backend import HFBackend

        if not model:
            raise BackendError("the hf backend needs a local model path (PAIRSTREAM_LLM_MODEL)")
        return HFBackend(model)
    if name == "heuristic":
        from models.llm.heuristic import HeuristicBackend

        return HeuristicBackend()
    raise BackendError(f"unknown backend {name!r}: heuristic | openai | hf")


__all__ = ["Backend", "BackendError", "DimensionRequest", "TransientError", "make_backend"]
