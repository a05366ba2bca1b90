"""The app's server side, beside ``ui/`` (the page) and ``app.py`` (the entry point): the per-visitor state and
session (``studio``), what one click asks for (``forms``), trainings that belong to the server (``training_jobs``), the
GPU work as ZeroGPU functions (``gpu_runner``), where the app runs (``hosting``), public mode's workspaces and
quotas (``workspaces``), whose relations a request sees (``shelves``) and the report card's view (``card_view``).

It uses the engine, ``reversion_core``, which never imports it. Nothing here imports gradio.
"""
