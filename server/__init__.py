"""The app's server side, beside ``ui/`` (the page) and ``app.py`` (the entry point Spaces runs):

- ``studio``: the per-visitor state and what each tab asks of it (the one object the handlers call);
- ``forms``: what one click asks for (the Train click, the training, generation and scoring requests) and the Train
  tab's bounds;
- ``training_jobs``: trainings that belong to the server, each a thread turning the runner's events into updates,
  one slot running them one after another;
- ``training_view``: the loss plot's tables, and what a run keeps for continuing;
- ``gpu_runner``: the GPU work as ZeroGPU functions, with durations and the cap;
- ``hosting``: where the app runs (ZeroGPU, a CUDA GPU, the CPU; Spaces and public mode), on the engine's runtime rule;
- ``workspaces``: public mode's data folder, one workspace per visitor, the quotas;
- ``shelves``: whose relations a request sees and may write, and which fit the base model;
- ``card_view`` and ``benchmark_view``: what the report-card panel and the Benchmark tab show.

It uses the engine, ``reversion_core``, which never imports it. Nothing here imports gradio.
"""
