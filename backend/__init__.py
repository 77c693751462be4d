"""Track Anything for Label Studio: click → per-frame masks engine.

The package is organised by job: ``config`` (settings from the environment),
``media`` (frame sources), ``prompts`` (Label Studio context → clicks),
``segmenter`` (clicks → mask on one frame), ``tracker`` (mask → every frame),
``pipeline`` (keyframes, propagation, refinement), ``rle``/``results``
(masks → Label Studio brush results), ``server`` (HTTP), ``eval`` (DAVIS
metrics), ``cli`` (``python -m backend``).
"""

__version__ = "0.1.0"
