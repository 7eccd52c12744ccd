"""``python -m modelport.serving serve REF ...``: what a model image runs (modelport.serving.command)."""

from modelport.serving.command import main

main()
