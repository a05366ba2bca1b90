"""One helper keeps library chatter out of the CLI's output, the app's log and the benchmarks' tables."""
import logging
import warnings


def test_library_logs_drop_to_errors_and_warnings_stay_unless_asked(monkeypatch):
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    from reversion_core.quiet import quiet_libraries

    monkeypatch.setattr(warnings, "filters", list(warnings.filters))  # whatever the test does to them is undone
    dlog.set_verbosity_info()
    tlog.set_verbosity_info()
    before = list(warnings.filters)
    quiet_libraries()
    assert warnings.filters == before
    assert dlog.get_verbosity() == logging.ERROR and tlog.get_verbosity() == logging.ERROR
    assert not dlog.is_progress_bar_enabled() and not tlog.is_progress_bar_enabled()
    quiet_libraries(hide_warnings=True)
    assert warnings.filters[0][0] == "ignore" and warnings.filters[0][2] is Warning
