"""The app's page, one module per tab (``train_tab``, ``generate_tab``, ``benchmark_tab``) and the wiring they share
(``wiring``); ``app.py`` puts them together. UI only: every handler calls into ``server.studio``."""
