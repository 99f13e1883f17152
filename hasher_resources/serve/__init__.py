"""Serving the deployed model over HTTP (``hasher serve``): ``app`` (the OpenAI- and
Ollama-compatible endpoints, health, metrics and the page), ``holder`` (the served model and its
hot swap), ``worker`` (the one thread that runs the model), ``generation`` (one streamed
generation: steps, stop sequences, deadline), ``requests`` (validated bodies and limits),
``metrics`` (Prometheus series), ``page.html`` (the page at ``/``)."""

from .app import create_app
from .holder import ModelHolder, ModelLoader, ServedModel, kernel_loader
from .requests import ServeLimits
from .worker import InferenceWorker

__all__ = [
    "InferenceWorker",
    "ModelHolder",
    "ModelLoader",
    "ServeLimits",
    "ServedModel",
    "create_app",
    "kernel_loader",
]
