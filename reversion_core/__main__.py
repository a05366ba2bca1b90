"""``python -m reversion_core`` (also ``accelerate launch -m reversion_core train ...``)."""
import sys

from .cli import main

sys.exit(main())
