"""Serving models over HTTP with the OpenAI contract: the app, its engines (PyTorch, INC, OpenVINO, GGUF, vLLM),
limits, hot reload from a registry folder, and chat in the terminal."""
