"""Hugging Face Space entry point: `python app.py` (or the Space runtime) serves the UI."""

from spaces.ui import build_demo

demo = build_demo()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=1).launch()
