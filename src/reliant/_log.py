"""The ``reliant`` logger.

Retries, fallbacks and recoveries are logged here with structured ``extra``
fields (``provider``, ``model``, ``attempt``, ``backoff``, ``reason``,
``error``), every error text sanitized. A ``NullHandler`` is attached, as the
logging HOWTO asks of libraries, so an application that has not configured
logging does not get warnings printed by Python's last-resort handler.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("reliant")
logger.addHandler(logging.NullHandler())
