"""``python -m backend bulk``: pre-annotate a whole Label Studio project on a Ray cluster.

* :mod:`backend.bulk.records` — what a task's run ends as, and the run's report.
* :mod:`backend.bulk.worker` — one engine, many tasks: fetch a task and its frames, choose
  its prompts, propagate with the server's session code, write the prediction (no Ray here).
* :mod:`backend.bulk.runner` — the Ray side: one worker actor per engine, the dispatch loop
  with retries, dead workers replaced, Ctrl-C, progress.
* :mod:`backend.bulk.cli` — the command line.

A front end: it imports :mod:`backend.ls` and below, and nothing imports it.
"""
