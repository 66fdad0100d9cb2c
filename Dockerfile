FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY models models
COPY training training
# the gpu extra (peft): the compose trainer fine-tunes a real teacher with LoRA adapters
RUN pip install --no-cache-dir ".[gpu]"
EXPOSE 6066
CMD ["pairstream", "worker"]
