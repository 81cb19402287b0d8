"""Publishes from a process of its own, as a script or task worker would:
it builds the app, starts no listener, and prints each id on a line.

Usage: python publisher.py CHANNEL COUNT [PAUSE_SECONDS]
(the backend comes from FLASK_EVENTSTREAM_BACKEND).
"""

from __future__ import annotations

import sys
import time

from serverapp import app
from serverapp import events

channel, count = sys.argv[1], int(sys.argv[2])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
with app.app_context():
    for n in range(count):
        print(events.publish(channel, f"e{n}").id, flush=True)
        if pause:
            time.sleep(pause)
