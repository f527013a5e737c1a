"""``python -m engine.local --model FILE [serve flags]``: serve a GGUF file until stopped."""

import sys

from engine.local.command import main

sys.exit(main())
